"""Offline data preparation: everything that writes data, run before training (``emmett-prepare``)
or at start-up (``nemo_emmett/startup.py``: the demo corpus, the tokenizer, ``data.input_cfg``'s entries).

``bitext.py`` (line-aligned text, NeMo manifests and TSV -> Shar), ``templates.py`` (path templates
over language pairs), ``speech.py`` and ``espeak.py`` (speech synthesised with espeak-ng),
``demo.py`` (the embedded demo corpus), ``tokenizer.py`` (a SentencePiece model of the training
text), ``nemo_inputs.py`` and ``nemo_readers.py`` (NeMo's ``input_cfg`` entries -> cached Shar, read by
NeMo's own readers), ``cli.py`` (``emmett-prepare``)."""
