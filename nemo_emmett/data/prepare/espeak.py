"""Speech synthesis with the ``espeak-ng`` command, for the demo corpus and benchmark speech."""

from __future__ import annotations

import io
import multiprocessing
import shutil
import subprocess
import sys
from collections.abc import Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial

import numpy as np
import soundfile as sf
from tqdm import tqdm

from nemo_emmett.parts.process import exit_with_parent

INSTALL_HINT = (
    "espeak-ng is not installed; it synthesises the demo speech. Install it with "
    "`apt-get install -y espeak-ng` (Debian/Ubuntu, as root) or `brew install espeak-ng` (macOS), "
    "or run `make setup`."
)


def require_espeak() -> str:
    """Path of the espeak-ng binary, or a RuntimeError that says how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError(INSTALL_HINT)
    return path


def synthesize(text: str, *, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50,
               sampling_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` and return mono float32 audio at ``sampling_rate``: (num_samples,)."""
    if not text.strip():
        raise ValueError("cannot synthesise empty text")
    cmd = [require_espeak(), "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed on {text!r} (voice {voice}): {proc.stderr.decode(errors='replace')}")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if sr != sampling_rate:
        import soxr

        audio = soxr.resample(audio, sr, sampling_rate).astype(np.float32)
    return audio


@dataclass(frozen=True)
class SpeechJob:
    """One utterance to synthesise; ``key`` identifies it in the result."""

    key: Hashable
    text: str
    voice: str = "en-us"
    speed_wpm: int = 160
    pitch: int = 50


def synthesize_flac(job: SpeechJob, sampling_rate: int = 16000) -> tuple[Hashable, bytes]:
    """One job -> 16-bit FLAC bytes (small to pass between processes, lossless in Shar)."""
    audio = synthesize(job.text, voice=job.voice, speed_wpm=job.speed_wpm, pitch=job.pitch,
                       sampling_rate=sampling_rate)
    buf = io.BytesIO()
    # Resampling can overshoot 1.0; libsndfile would wrap it around rather than clip.
    sf.write(buf, np.clip(audio, -1.0, 1.0), sampling_rate, format="FLAC", subtype="PCM_16")
    return job.key, buf.getvalue()


def synthesize_many(jobs: list[SpeechJob], *, sampling_rate: int = 16000, num_workers: int = 2,
                    desc: str = "espeak-ng") -> dict[Hashable, bytes]:
    """Synthesise every job with a process pool and a progress bar; FLAC bytes by key."""
    require_espeak()
    # Workers are spawned (a fresh interpreter), never forked from this process: a fork of a process
    # whose threads (torch, the profiler) hold locks can die or hang, and a plain Pool then waits
    # forever; the executor raises instead when a worker dies. Not a forkserver either: every
    # forkserver child holds the server's "alive" pipe open, so after a SIGKILL of this process the
    # server and its workers all wait on each other for ever (re-parented to PID 1). Spawned workers
    # are this process's children, and ``exit_with_parent`` has the kernel kill them when it dies;
    # the resource tracker then sees its pipe close and exits too.
    ctx = multiprocessing.get_context("spawn")
    out: dict[Hashable, bytes] = {}
    fn = partial(synthesize_flac, sampling_rate=sampling_rate)
    with (
        ProcessPoolExecutor(max(1, num_workers), mp_context=ctx, initializer=exit_with_parent) as pool,
        tqdm(total=len(jobs), desc=desc, unit="utt", file=sys.stderr) as bar,
    ):
        try:
            for key, data in pool.map(fn, jobs, chunksize=8):
                out[key] = data
                bar.update()
        except BrokenProcessPool as e:
            raise RuntimeError(f"an espeak-ng synthesis worker died after {len(out)} of {len(jobs)} utterances "
                               f"(out of memory?): {e}") from e
    return out
