"""Simultaneous speech translation: read the source speech as it arrives and write the translation before it ends.

``policies.py`` (when to READ more speech, when to WRITE a target token: wait-k, fixed-chunk,
local agreement), ``masks.py`` (prefix-to-prefix training: the attention masks each target token is
trained under; pure, imported by ``models/``, so this file imports nothing), ``decoder.py`` (greedy
target tokens over a growing speech prefix), ``session.py`` (one utterance pushed chunk by chunk,
and the batch helper ``simul_translate``), ``latency.py`` (AL, LAAL, DAL, AP and their
computation-aware variants, with BLEU) and ``agent.py`` (the SimulEval agent). ``agent.py`` is the
only module that imports SimulEval (the optional extra ``simul``: ``pip install -e ".[simul]"``);
everything else here works with the core install.
"""
