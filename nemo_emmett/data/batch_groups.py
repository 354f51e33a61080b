"""Which examples may share a training batch (``data.batch_by``): any of one modality (``mixed``), or only
those of one task, one direction, or one group of directions that run the same components.

MAMMOTH trains each step on one task per device; a modular model given a mixed batch splits it into one
sub-batch per direction (``mammoth/routing.py`` ``task_groups``), each a separate, smaller pass through its
components. With ``batch_by: components`` every batch holds directions that run exactly the same
components, so routing runs one pass. The sampler keeps its guarantees: the multiplexer still draws
every example, so each source's share is unchanged; only the buckets an example waits in are split by
group (``data/sampler.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

from nemo_emmett.data.examples import Example, direction, task

BATCH_BY = ("mixed", "task", "direction", "components")
"""``data.batch_by`` values (:attr:`~nemo_emmett.data.config.DataConfig.batch_by`)."""

GroupOf = Callable[[Example], str]
"""An example's batch group: examples share a batch only when their groups are equal."""


def component_groups(routes: Mapping[str, Hashable]) -> dict[str, str]:
    """Directions (``mt:en-de``) grouped by their route (what they compute with: a modular task's
    components in their places): each direction mapped to its group's name, the sorted directions of the
    group joined by ``+`` (the same on every rank and run).

    >>> component_groups({"mt:en-de": ("enc", "dec.de"), "mt:fr-de": ("enc", "dec.de"), "mt:en-fr": ("enc", "dec.fr")})
    {'mt:en-de': 'mt:en-de+mt:fr-de', 'mt:fr-de': 'mt:en-de+mt:fr-de', 'mt:en-fr': 'mt:en-fr'}
    """
    by_route: dict[Hashable, list[str]] = {}
    for d, route in routes.items():
        by_route.setdefault(route, []).append(d)
    names = {d: "+".join(sorted(ds)) for ds in by_route.values() for d in ds}
    return {d: names[d] for d in routes}


def group_of(batch_by: str, groups: Mapping[str, str] | None = None) -> GroupOf | None:
    """The grouping function of ``data.batch_by``; None for ``mixed`` (one group per modality).
    ``components`` needs ``groups`` (:func:`component_groups`, from the model's task table); without it
    (a model whose every direction runs every component) it is ``mixed``. A direction missing from
    ``groups`` is an error naming it."""
    if batch_by not in BATCH_BY:
        raise ValueError(f"data.batch_by: unknown value {batch_by!r}; expected one of {', '.join(BATCH_BY)}")
    if batch_by == "mixed" or (batch_by == "components" and not groups):
        return None
    if batch_by == "task":
        return task
    if batch_by == "direction":
        return direction
    table = dict(groups or {})

    def by_components(ex: Example) -> str:
        d = direction(ex)
        if d not in table:
            raise KeyError(f"data.batch_by=components: direction {d!r} is not in the model's task table "
                           f"(it has {sorted(table)})")
        return table[d]

    return by_components
