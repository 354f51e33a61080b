"""Speech synthesis with the ``espeak-ng`` command, for the demo corpus and benchmark speech."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile as sf

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
