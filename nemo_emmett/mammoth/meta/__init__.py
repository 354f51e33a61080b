"""The meta-config tool (``emmett-config``): a short meta-config -> the complete MAMMOTH Hydra config
and a prepare script. ``schema.py`` (typed fields, parsing) -> ``expand.py`` (tasks, sources,
weights, curriculum) with ``clusters.py`` (language groups from distances) and ``allocation.py``
(tasks per device)."""
