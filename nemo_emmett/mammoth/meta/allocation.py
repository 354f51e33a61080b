"""Tasks to devices for component-aware distributed training (the meta-config's ``devices``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nemo_emmett.mammoth.tasks import ModularTaskConfig


def allocate_devices(tasks: Sequence[ModularTaskConfig], weights: Mapping[str, float], num_devices: int, *,
                     slack: float = 0.1) -> list[list[str]]:
    """Task names per device: tasks that share components together where the load allows.

    Greedy, heaviest task first (ties: table order). A device may take a task while its load (sum of
    weights) stays within ``(1 + slack) * total / num_devices``; when none can, the least-loaded ones may.
    Among those, the task goes where it adds the fewest components the device does not hold yet
    (components every task uses do not count: every device holds them), ties to the lower load, then
    the lower index. A device still empty (fewer tasks than devices) gets a copy of the task with the
    most weight per copy, so every device trains and every task is on at least one device.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"devices must be an integer >= 1, got {num_devices!r}")
    comps = {t.name: set(t.components()) for t in tasks}
    everywhere = set.intersection(*comps.values()) if comps else set()
    order = sorted(range(len(tasks)), key=lambda i: -weights[tasks[i].name])
    capacity = (1 + slack) * sum(weights[t.name] for t in tasks) / num_devices
    held: list[set[str]] = [set() for _ in range(num_devices)]
    load = [0.0] * num_devices
    placed: list[list[int]] = [[] for _ in range(num_devices)]
    for i in order:
        name, w = tasks[i].name, weights[tasks[i].name]
        fits = [k for k in range(num_devices) if load[k] + w <= capacity + 1e-12]
        if not fits:
            fits = [k for k in range(num_devices) if load[k] == min(load)]
        k = min(fits, key=lambda k: (len(comps[name] - everywhere - held[k]), load[k], k))
        held[k] |= comps[name]
        load[k] += w
        placed[k].append(i)
    copies = {i: 1 for i in range(len(tasks))}
    for k in range(num_devices):
        if not placed[k] and tasks:
            i = min(copies, key=lambda i: (-weights[tasks[i].name] / copies[i], i))
            copies[i] += 1
            placed[k].append(i)
    return [[tasks[i].name for i in sorted(p)] for p in placed]
