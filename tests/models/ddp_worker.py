"""One rank of the plain-DDP test (``tests/models/test_ddp_families.py``), launched by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/models/ddp_worker.py SPM OUT

For each case (SALM-T5, BESTOW-GPT, SALM-T5 with MGCM, a modular encoder-decoder) it builds the tiny model, builds the Trainer
as ``training.py`` does from ``trainer.strategy=ddp trainer.devices=2 trainer.accelerator=cpu``
(``trainer_kwargs``), and fits it on this rank's fixed batches (:data:`SCHEDULE`); saves the initial
weights (rank 0), the final weights and the per-step losses of each rank. The batches come from
:func:`rank_batch`, which the test calls too for its single-process reference."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import TINY_BACKBONE, TINY_PERCEPTION  # noqa: E402

SCHEDULE = [("text", "audio"), ("audio", "text"), ("text", "text")]
"""Modality of (rank 0, rank 1) at each step: mixed both ways, then text everywhere (no rank runs the
speech path: its parameters must keep their values and their AdamW state untouched)."""

MODULAR_SCHEDULE = [(("en", "de"), ("en", "fr")), (("de", "en"), ("en", "de")), (("en", "de"), ("en", "de"))]
"""(source, target) of (rank 0, rank 1) for the modular model: each rank runs other components, then
both run en-de (the de-en and en-fr components unused everywhere)."""

WORDS = ["one", "two", "three", "vier", "fünf", "hundred", "hundert", "cent", "neun", "neuf", "sixty"]
NO_RANDOMNESS = {"dropout": 0.0, "preprocessor": {
    "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": 16000,
    "features": 80, "dither": 0.0}}  # dither is random noise in training mode
OPTIM = {"optimizer": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
         "lr_scheduler": None}
"""With momentum and weight decay, a zero gradient moves a parameter where no gradient does not (as with
AdamW), so a step that gave the unused speech path zeros would show; unlike AdamW, SGD does not blow
float noise up to full-size steps on parameters whose exact gradient is zero (a convolution bias before
BatchNorm, attention key biases), which would make the comparison with one process meaningless."""


def case_configs(spm: str) -> dict[str, tuple[str, dict]]:
    """{case: (model class, model config)}: tiny, random-init, without any randomness in training mode."""
    perception = {**TINY_PERCEPTION, **NO_RANDOMNESS}
    t5 = {"tokenizer": {"spm_path": spm}, "backbone": {"config": {**TINY_BACKBONE, "dropout_rate": 0.0}},
          "perception": perception, "optim": OPTIM}
    gpt2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 4, "n_inner": 64, "n_positions": 64,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    bestow = {"tokenizer": {"spm_path": spm}, "backbone": {"config": gpt2}, "perception": perception,
              "cross_attention": {"num_layers": 1, "num_heads": 4, "ff_dim": 32, "dropout": 0.0},
              "freeze": [], "optim": OPTIM}  # the LLM trains too: text batches have something to train
    from tests.mammoth.test_modular import modular_cfg

    modular = {**modular_cfg(spm), "optim": OPTIM}  # text tasks only: components per language, no perception
    return {"salm_t5": ("nemo_emmett.models.salm_t5.SalmT5", t5),
            "bestow_gpt": ("nemo_emmett.models.bestow_gpt.BestowGpt", bestow),
            "salm_t5_mgcm": ("nemo_emmett.models.salm_t5.SalmT5",
                             {**t5, "mgcm": {"enabled": True, "primary_task": "st"}}),
            "modular": ("nemo_emmett.mammoth.modular.ModularTranslation", modular)}


def _wav_bytes(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV")
    return buf.getvalue()


def rank_examples(step: int, rank: int, case: str = "salm_t5") -> tuple[str, list]:
    """(modality, examples) of ``rank`` at ``step``. Text targets depend on the step only, so that ranks
    holding text at the same step hold as many target tokens (their sources differ)."""
    from nemo_emmett.data.examples import make_audio_example, make_text_example

    if case == "modular":
        (src, tgt), rng = MODULAR_SCHEDULE[step][rank], np.random.default_rng(100 * step + rank)
        return "text", [make_text_example(example_id=f"m{step}-{rank}-{i}",
                                          source_text=" ".join(rng.choice(WORDS, int(rng.integers(1, 5)))),
                                          target_text=" ".join(rng.choice(WORDS, int(rng.integers(1, 5)))),
                                          source_lang=src, target_lang=tgt, dataset="d") for i in range(3)]
    modality = SCHEDULE[step][rank]
    rng = np.random.default_rng(100 * step + rank)
    if modality == "text":
        tgt = np.random.default_rng(step)
        exs = [make_text_example(example_id=f"t{step}-{rank}-{i}",
                                 source_text=" ".join(rng.choice(WORDS, int(rng.integers(1, 5)))),
                                 target_text=" ".join(tgt.choice(WORDS, 1 + i)), source_lang="en",
                                 target_lang="de", dataset="d") for i in range(3)]
        return modality, exs
    from lhotse import Recording
    from lhotse.audio import AudioSource

    exs = []
    for i in range(2):
        samples = (0.1 * rng.standard_normal(int(16000 * rng.uniform(0.4, 1.2)))).astype("float32")
        rec = Recording(id=f"a{step}-{rank}-{i}", sources=[AudioSource(type="memory", channels=[0],
                                                                       source=_wav_bytes(samples))],
                        sampling_rate=16000, num_samples=len(samples), duration=len(samples) / 16000)
        words = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
        exs.append(make_audio_example(recording=rec, transcript=words, source_lang="en",
                                      target_text=words.upper() if i else words, target_lang="de" if i else "en",
                                      task="st" if i else "asr", dataset="d"))
    return "audio", exs


def collate_examples(modality: str, exs: list, text):
    from nemo_emmett.data.dataset import collate
    from nemo_emmett.data.sampler import Batch

    return collate(Batch(modality, 0, 10, 10, exs, [(1, 1)] * len(exs)), sampling_rate=16000, text=text)


def rank_batch(step: int, rank: int, text, case: str = "salm_t5"):
    return collate_examples(*rank_examples(step, rank, case), text)


def run_case(name: str, cls_name: str, cfg: dict, out: Path) -> None:
    import lightning.pytorch as pl
    from hydra.utils import get_class
    from torch.utils.data import DataLoader

    from nemo_emmett.config_store import TRAINER
    from nemo_emmett.training import trainer_kwargs

    class Losses(pl.Callback):
        def __init__(self):
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    # the user's command line: trainer.strategy=ddp trainer.devices=2 trainer.accelerator=cpu
    trainer_cfg = {**TRAINER, "strategy": "ddp", "devices": 2, "accelerator": "cpu", "max_steps": len(SCHEDULE),
                   "max_time": None, "limit_val_batches": 0, "enable_progress_bar": False,
                   "enable_model_summary": False, "default_root_dir": str(out / name)}
    if "mgcm" in cfg:  # prepare_trainer_config's move: MGCM clips itself (here: not at all)
        trainer_cfg["gradient_clip_val"] = None
    losses = Losses()
    trainer = pl.Trainer(**trainer_kwargs(trainer_cfg, [losses]))
    rank = trainer.global_rank
    torch.manual_seed(0)
    model = get_class(cls_name)(cfg)
    if rank == 0:
        torch.save(model.state_dict(), out / f"{name}-init.pt")
    batches = [rank_batch(s, rank, model.text, name) for s in range(len(SCHEDULE))]
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    torch.save({"state": model.state_dict(), "losses": losses.values,
                "strategy": type(trainer.strategy).__name__,
                "find_unused_parameters": trainer.strategy._ddp_kwargs.get("find_unused_parameters")},
               out / f"{name}-rank{rank}.pt")


def main() -> None:
    spm, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    for name, (cls_name, cfg) in case_configs(spm).items():
        if len(sys.argv) > 3 and name not in sys.argv[3:]:
            continue
        run_case(name, cls_name, cfg, out)


if __name__ == "__main__":
    main()
