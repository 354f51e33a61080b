"""The model families: ``base.py`` (what every family shares: text, perception, the loss per task,
validation, optimizers), ``salm_t5.py`` (speech + prompt into an encoder-decoder), ``bestow_gpt.py``
(the prompt cross-attends to speech, then a decoder-only LLM), ``config.py`` (typed defaults),
``pretrained.py`` / ``archive.py`` (a model saved as a Hugging Face-style folder or as one file, and loaded back)."""
