"""data.batch_by: batches of one task / direction / route, the multiplexer's shares kept, resume exact."""

import copy
import itertools
from collections import Counter

import pytest

from nemo_emmett.data.batch_groups import component_groups, group_of
from nemo_emmett.data.config import DataConfig
from nemo_emmett.data.examples import direction, example_id
from nemo_emmett.data.multiplexer import Multiplexer
from nemo_emmett.data.sampler import Bucketing2DSampler
from nemo_emmett.data.shar import list_shards
from nemo_emmett.data.stream import ShardedStream
from tests.data.test_sampler import TEXT_BUCKETS, WORDS

WEIGHTS = [0.7, 0.3]


def grouped_sampler(text_sources, batch_by="direction", groups=None):
    streams = [ShardedStream(n, list_shards(p), seed=1) for n, p in text_sources.items()]
    mux = Multiplexer(streams, WEIGHTS, seed=1)
    return Bucketing2DSampler(buckets={"text": TEXT_BUCKETS}, measure=WORDS, mux=mux,
                              group_of=group_of(batch_by, groups))


def test_every_batch_holds_one_direction_and_shares_stay(text_sources):
    batches = list(itertools.islice(grouped_sampler(text_sources), 200))
    assert {len({direction(e) for e in b.examples}) for b in batches} == {1}
    assert {b.group for b in batches} == {"mt:en-de", "mt:en-fr"}
    assert all(b.group == direction(b.examples[0]) for b in batches)
    drawn = Counter(direction(e) for b in batches for e in b.examples)
    total = sum(drawn.values())
    assert abs(drawn["mt:en-de"] / total - WEIGHTS[0]) < 0.02  # the multiplexer's share, not the batches'


def test_mixed_batches_mix_directions(text_sources):
    """The control: without grouping the same stream puts both directions into one batch."""
    batches = list(itertools.islice(grouped_sampler(text_sources, "mixed"), 100))
    assert max(len({direction(e) for e in b.examples}) for b in batches) == 2
    assert {b.group for b in batches} == {""}


def test_components_groups_directions_by_route(text_sources):
    same = component_groups({"mt:en-de": ("enc", "dec"), "mt:en-fr": ("enc", "dec")})
    assert same == {"mt:en-de": "mt:en-de+mt:en-fr", "mt:en-fr": "mt:en-de+mt:en-fr"}
    batches = list(itertools.islice(grouped_sampler(text_sources, "components", same), 100))
    assert max(len({direction(e) for e in b.examples}) for b in batches) == 2  # one route: they mix
    apart = component_groups({"mt:en-de": ("enc", "dec.de"), "mt:en-fr": ("enc", "dec.fr")})
    batches = list(itertools.islice(grouped_sampler(text_sources, "components", apart), 100))
    assert {len({direction(e) for e in b.examples}) for b in batches} == {1}


def test_resume_with_groups_continues_with_the_same_batches(text_sources):
    ids = lambda it, n: [[example_id(e) for e in next(it).examples] for _ in range(n)]  # noqa: E731
    reference = ids(iter(grouped_sampler(text_sources)), 70)
    sampler = grouped_sampler(text_sources)
    it = iter(sampler)
    head = ids(it, 30)
    state = copy.deepcopy(sampler.state_dict())
    assert len(state["waiting"]) > 0
    resumed = grouped_sampler(text_sources)
    resumed.load_state_dict(state)
    assert head + ids(iter(resumed), 40) == reference


def test_bad_batch_by_and_unknown_direction_are_named(text_sources):
    with pytest.raises(ValueError, match=r"data.batch_by: unknown value 'language'.*mixed, task, direction, components"):
        DataConfig(batch_by="language")
    sampler = grouped_sampler(text_sources, "components", {"mt:en-de": "g"})
    with pytest.raises(KeyError, match=r"direction 'mt:en-fr' is not in the model's task table"):
        list(itertools.islice(sampler, 50))
