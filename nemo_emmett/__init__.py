"""nemo_emmett: efficient multimodal, multilingual translation training on NeMo (EMMeTT, MGCM, MAMMOTH)."""

__version__ = "0.2.0"
