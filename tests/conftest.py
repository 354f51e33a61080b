"""Shared builders: small Shar sources written into tmp_path."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording

from nemo_emmett.data.examples import make_audio_example, make_text_example
from nemo_emmett.data.prepare.tokenizer import train_sentencepiece
from nemo_emmett.data.shar import ExampleSharWriter

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_text_source(path: Path, name: str, n: int, *, shard_size: int = 50, seed: int = 0,
                      src: str = "en", tgt: str = "de", max_words: int = 20) -> Path:
    rng = random.Random(seed)
    with ExampleSharWriter(path, kind="text", shard_size=shard_size) as w:
        for i in range(n):
            w.write(make_text_example(
                example_id=f"{name}-{i}",
                source_text=" ".join(f"s{rng.randint(0, 9)}" for _ in range(rng.randint(1, max_words))),
                target_text=" ".join(f"t{rng.randint(0, 9)}" for _ in range(rng.randint(1, max_words))),
                source_lang=src, target_lang=tgt, dataset=name,
            ))
    return path


def write_audio_source(path: Path, name: str, n: int, *, shard_size: int = 10, seed: int = 0,
                       task: str = "st", sampling_rate: int = 16000) -> Path:
    rng = np.random.default_rng(seed)
    wav_dir = path.parent / f"{path.name}_wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    with ExampleSharWriter(path, kind="audio", shard_size=shard_size) as w:
        for i in range(n):
            wav = wav_dir / f"{name}-{i}.wav"
            sf.write(wav, 0.1 * rng.standard_normal(int(sampling_rate * rng.uniform(0.3, 2.0))).astype("float32"),
                     sampling_rate)
            words = " ".join(f"w{k}" for k in range(int(rng.integers(1, 12))))
            w.write(make_audio_example(
                recording=Recording.from_file(wav, recording_id=f"{name}-{i}"), transcript=words,
                source_lang="en", target_text=words if task == "asr" else words.upper(),
                target_lang="en" if task == "asr" else "de", task=task, dataset=name,
            ))
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one thread is many times faster than several contending on a busy CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def http_folder():
    """``url, requested = http_folder(folder)``: ``folder`` served over http by a local thread (no network),
    as object storage would serve shards; ``requested`` collects the paths asked for, in order."""
    import functools
    import http.server
    import threading

    servers = []

    def serve(folder: Path) -> tuple[str, list[str]]:
        requested: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                requested.append(self.path)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(Handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", requested

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def text_sources(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": write_text_source(tmp_path / "a", "a", 300, seed=1),
        "b": write_text_source(tmp_path / "b", "b", 120, seed=2, tgt="fr"),
    }


class WordLengthIds:
    """A stand-in tokenizer for data tests: one id per word (its length), EOS 1, prompt [2]."""

    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [len(w) + 2 for w in text.split()]

    def source_ids(self, text: str, source_lang: str | None = None) -> list[int]:
        return self.encode(text)

    def target_ids(self, text: str, target_lang: str | None = None) -> list[int]:
        return [*self.encode(text), 1]

    def prompt_ids(self, *, task: str, source_lang: str, target_lang: str) -> list[int]:
        return [2]


# ---- a tiny SentencePiece model and tiny model configs (model, MGCM, MAMMOTH, OOMptimizer tests) ----
LINES = [f"{a} {b} {c}" for a in ("one", "two", "three", "vier", "fünf") for b in ("hundred", "hundert", "cent")
         for c in ("and nine", "neun", "neuf", "sixty")]

TINY_BACKBONE = {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1,
                 "num_decoder_layers": 1}
TINY_PERCEPTION = {"d_model": 32, "n_layers": 1, "n_heads": 4, "subsampling_conv_channels": 16, "adapter_layers": 1}


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("spm")
    return str(train_sentencepiece(LINES * 3, vocab_size=60, key={"test": "tiny"}, out_dir=out,
                                   user_defined_symbols=["<de>", "<en>", "<fr>"]))


@pytest.fixture
def tiny_cfg(spm_path) -> dict:
    return {"tokenizer": {"spm_path": spm_path}, "backbone": {"config": dict(TINY_BACKBONE)},
            "perception": dict(TINY_PERCEPTION), "optim": {"optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-2},
                                                           "lr_scheduler": None}}


def synced_module_view(model):
    """What ``mgcm.step.synced_backward`` needs of the LightningModule, over a bare modular ``model``."""
    from types import SimpleNamespace

    return SimpleNamespace(manual_backward=lambda x, **kw: x.backward(**kw), component_of=model.component_of,
                           named_parameters=model.named_parameters, components_reached=model.components_reached)
