"""Helpers used by several packages; nothing here imports from above: ``loss.py``, ``metrics.py``
(BLEU/chrF/WER, gathered over ranks), ``decoding.py`` (greedy and beam search), ``optim.py``,
``freeze.py``, ``lora.py``, ``sequence.py``, ``text_processor.py`` (tokenizer and prompts),
``cache.py`` (the cache folder), ``process.py`` (children that exit with their parent), ``threads.py``
(CPU threads measured on the run's own steps), ``monitoring.py`` (what a run shows: its config, the LR
monitor), ``progress_bar.py`` (bars with totals), ``figures.py`` (PNG in the log folder and the loggers)."""
