"""MGCM (arXiv 2409.15911): module-level gradient conflict mitigation for multi-task training with a
primary task (speech translation) and auxiliary ones (ASR, MT).

``projection.py`` (the arithmetic, on plain tensors) -> ``step.py`` (the training step: per-task
backward passes, projection inside the backward) -> ``sync.py`` (under ``component_sync``: the
projection of synchronised gradients)."""
