"""Console scripts (``emmett-train``, ``emmett-translate``, ... in ``pyproject.toml``); ``examples/*.py``
are thin wrappers around them for NeMo-style ``python examples/train.py`` use."""
