"""A MAMMOTH component as one record: what its name says, where its parameters live, who holds it.

A component name is ``<kind>.<position>.<sharing_id>`` for layer stacks (``encoder.0.en``) and
``<kind>.<sharing_id>`` for the single-slot kinds (``embed.de``, ``perception.full``,
``encoder_adapter.en``, ``decoder_adapter.de``, ``backbone.full``); ``mammoth/sharing.py`` says
where the sharing id comes from. :meth:`Component.parse` is the one place a name is taken apart.
A modular model builds its records once, from the task table (``ModularTasks.components``), with
the prefix of their parameters; placement over ranks fills the holders (``mammoth/sync.py``).
Everything else (routing, MGCM's ``component`` granularity, per-component files, gradient sync)
reads the records instead of re-parsing names or recomputing prefixes, as MAMMOTH's
``DistributedComponent`` does."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

STACK_KINDS = ("encoder", "decoder")
SINGLE_KINDS = ("embed", "perception", "encoder_adapter", "decoder_adapter", "backbone")
_NAME = re.compile(r"(?P<kind>encoder|decoder)\.(?P<pos>\d+)\.(?P<id>[A-Za-z0-9_-]+)"
                   r"|(?P<single>embed|perception|encoder_adapter|decoder_adapter|backbone)\.(?P<sid>[A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Component:
    """One named component of a modular model (frozen: placement makes a new record with ``replace``)."""

    name: str
    """``encoder.0.en``, ``embed.full``: the key in task tables, exports (``components/<name>.pt``) and logs."""
    kind: str
    """One of :data:`STACK_KINDS` or :data:`SINGLE_KINDS`."""
    position: int | None
    """The layer-stack position (``encoder.<position>.<id>``); None for the single-slot kinds."""
    sharing_id: str
    """What tasks share it by: ``full``, a language or a language group."""
    prefix: str = ""
    """The parameter-name prefix of its parameters in the model, ending with a dot
    (``backbone.components.encoder.0.en.``); '' for a record that no model placed yet."""
    holders: tuple[int, ...] = ()
    """The sorted ranks holding it; empty until placement (``mammoth/sync.py``)."""

    def __post_init__(self) -> None:
        if self.prefix and not self.prefix.endswith("."):  # else ``backbone`` would own ``backbone2.w``
            raise ValueError(f"component {self.name!r}: prefix {self.prefix!r} must end with '.'")

    @classmethod
    def parse(cls, name: str, *, prefix: str = "") -> Component:
        """``"encoder.0.en"`` -> kind ``encoder``, position 0, sharing id ``en``; ``"embed.full"`` ->
        ``embed``, None, ``full``. Anything else is an error naming the accepted forms."""
        m = _NAME.fullmatch(name) if isinstance(name, str) else None
        if m is None:
            raise ValueError(f"component name {name!r} is not of the form encoder.<position>.<id>, "
                             f"decoder.<position>.<id> or <kind>.<id> with kind one of {SINGLE_KINDS}")
        if m["single"]:
            return cls(name, m["single"], None, m["sid"], prefix)
        return cls(name, m["kind"], int(m["pos"]), m["id"], prefix)

    @property
    def module_path(self) -> str:
        """The dotted path of the module holding every parameter of the component (``get_submodule``)."""
        return self.prefix.removesuffix(".")

    def owns(self, parameter: str) -> bool:
        """Whether ``parameter`` (a name of ``named_parameters`` or a state-dict key) is under the prefix."""
        return bool(self.prefix) and parameter.startswith(self.prefix)


def component_name(kind: str, position: int | None, sharing_id: str) -> str:
    """The inverse of :meth:`Component.parse`: ``("encoder", 0, "en")`` -> ``encoder.0.en``."""
    return f"{kind}.{sharing_id}" if position is None else f"{kind}.{position}.{sharing_id}"


def components_from_names(names: Iterable[str], prefix: Callable[[Component], str]) -> dict[str, Component]:
    """Name -> record for ``names`` (repeats dropped, first-use order kept: the order modules are built
    and state dicts list them), each with the ``prefix`` its model family gives it."""
    out: dict[str, Component] = {}
    for name in names:
        if name not in out:
            parsed = Component.parse(name)
            out[name] = replace(parsed, prefix=prefix(parsed))
    return out


def longest_prefix_first(components: Iterable[Component]) -> list[Component]:
    """The records with nested prefixes before their parents, so that the first owner found is the
    innermost (stable for equal lengths). Every owner lookup goes through this one order."""
    return sorted(components, key=lambda c: -len(c.prefix))


def owner(parameter: str, ordered: Iterable[Component]) -> Component | None:
    """The component of ``parameter`` among ``ordered`` (from :func:`longest_prefix_first`); None: no one's."""
    return next((c for c in ordered if c.owns(parameter)), None)
