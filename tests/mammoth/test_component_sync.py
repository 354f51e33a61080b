"""Placement, holders and process-group order: the single-process parts of component sync."""

import pytest

from nemo_emmett.mammoth.sync import (
    component_holders,
    holder_sets,
    holders_from_components,
    tasks_per_rank,
)

TASKS = {"mt_en-de": ["embed.full", "encoder.0.en", "decoder.0.de"],
         "mt_en-fr": ["embed.full", "encoder.0.en", "decoder.0.fr"],
         "mt_de-en": ["embed.full", "encoder.0.de", "decoder.0.en"]}


def test_round_robin_and_explicit_placement():
    assert tasks_per_rank(list(TASKS), 2) == [["mt_en-de", "mt_de-en"], ["mt_en-fr"]]
    assert tasks_per_rank(list(TASKS), 1) == [list(TASKS)]
    devices = [["mt_en-de"], ["mt_en-fr", "mt_de-en"], ["mt_en-de"]]  # a task may sit on several ranks
    assert tasks_per_rank(list(TASKS), 3, devices) == devices


@pytest.mark.parametrize("world, devices, message", [
    (4, None, "leaves a rank without a task"),
    (3, [["mt_en-de"], ["mt_en-fr", "mt_de-en"]], "lists 2 device"),
    (2, [["mt_en-de"], []], r"devices\[1\] is empty"),
    (2, [["mt_en-de"], ["mt_xx-yy", "mt_en-fr", "mt_de-en"]], r"unknown task\(s\) \['mt_xx-yy'\]"),
    (2, [["mt_en-de"], ["mt_en-fr"]], r"no rank on task\(s\) \['mt_de-en'\]"),
    (2, [["mt_en-de", "mt_en-de"], ["mt_en-fr", "mt_de-en"]], "lists a task twice"),
])
def test_placement_errors_name_the_problem(world, devices, message):
    with pytest.raises(ValueError, match=message):
        tasks_per_rank(list(TASKS), world, devices)


def test_holders_and_groups_in_one_order():
    placement = [["mt_en-de"], ["mt_en-fr"], ["mt_de-en"]]
    holders = component_holders(placement, TASKS)
    assert holders == {"decoder.0.de": [0], "decoder.0.en": [2], "decoder.0.fr": [1], "embed.full": [0, 1, 2],
                       "encoder.0.de": [2], "encoder.0.en": [0, 1]}
    assert list(holders) == sorted(holders)  # the used vector's order: the same on every rank
    assert holder_sets(holders) == [(0, 1), (0, 1, 2)]  # one group per distinct holder set, sorted
    per_rank = [[c for c, r in holders.items() if k in r] for k in range(3)]
    assert holders_from_components(per_rank) == holders


def test_the_strategy_is_a_gradient_sync_and_never_syncs_a_manual_step_again(monkeypatch):
    """Under manual optimization (MGCM) the module synchronises through ``gradient_sync()``; the
    strategy's ``optimizer_step`` syncs only automatic steps, so nothing is averaged twice."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy

    from nemo_emmett.mammoth.strategy import ComponentSyncStrategy
    from nemo_emmett.parts.gradient_sync import GradientSyncProvider, gradient_sync_for

    strategy = ComponentSyncStrategy()
    assert not hasattr(strategy, "skip_next_sync")
    assert isinstance(strategy, GradientSyncProvider) and gradient_sync_for(strategy) is strategy
    assert strategy.sync_each_task  # MGCM projects synchronised per-task gradients
    monkeypatch.setattr(DDPStrategy, "optimizer_step", lambda self, opt, closure, model=None, **kw: closure())
    syncs = []
    monkeypatch.setattr(strategy, "sync", lambda params=None: syncs.append(params))
    trainer = SimpleNamespace(gradient_clip_val=None, gradient_clip_algorithm=None)
    for automatic in (False, True, False):
        strategy._lightning_module = SimpleNamespace(automatic_optimization=automatic, trainer=trainer)
        assert strategy.optimizer_step(None, lambda: "closure ran") == "closure ran"
    assert syncs == [None]  # the automatic step only
