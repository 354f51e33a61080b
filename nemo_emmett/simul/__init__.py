"""Simultaneous speech translation: latency metrics (``latency.py``) and the SimulEval agent (``agent.py``).

``agent.py`` is the only module that imports SimulEval (the optional extra ``simul``:
``pip install -e ".[simul]"``); everything else here works with the core install.
"""
