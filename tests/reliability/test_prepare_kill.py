"""A real ``emmett-prepare`` killed with SIGKILL half-way: no process survives it, readers refuse what it
left, and a re-run completes it. Also ``parts/process.py``'s ``exit_with_parent`` on its own."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_emmett.data.marker import IncompleteSharError
from nemo_emmett.data.shar import count_examples, read_shar_dir

REPO = Path(__file__).resolve().parents[2]
LANGS = ("en", "de", "fr")
ESPEAK = shutil.which("espeak-ng") is not None


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process; None when it is gone (or a zombie: it has exited)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (int(ppid), state)


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def survivors(pids: set[int], wait: float = 5.0) -> set[int]:
    """Those of ``pids`` still alive after ``wait`` seconds; they are then killed, so none lingers."""
    deadline = time.monotonic() + wait
    while (alive := {p for p in pids if _stat(p) is not None}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return alive


def prepare(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-c", "import sys; from nemo_emmett.data.prepare.cli import main; sys.exit(main())", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60.0) -> set[int]:
    """SIGKILL ``proc`` once ``ready()`` holds; returns the processes that were below it then."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"emmett-prepare ended (rc {proc.returncode}) or timed out before the kill point: "
                            f"{proc.stderr.read().decode(errors='replace')[-2000:] if proc.poll() is not None else ''}")
            time.sleep(0.02)
        below = descendants(proc.pid)
        proc.kill()
        proc.wait(10)
        return below
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def run_to_end(args: list[str]) -> None:
    proc = prepare(args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


def test_exit_with_parent_kills_the_orphan(tmp_path):
    """A child that called exit_with_parent dies with its parent; the main process stays untouched."""
    code = ("import os, sys, time\n"
            "from nemo_emmett.parts.process import exit_with_parent\n"
            "if os.fork() == 0:\n"
            "    exit_with_parent()\n"
            f"    open({str(tmp_path / 'child')!r}, 'w').write(str(os.getpid()))\n"
            "    time.sleep(60)\n"
            "else:\n"
            "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.02)
        child = int((tmp_path / "child").read_text())
        assert _stat(child) is not None
        parent.kill()
        parent.wait(10)
        assert not survivors({child}), f"the child {child} outlived its parent"
    finally:
        parent.kill()
        parent.wait(10)


def test_sigkill_during_bitext_all_pairs(tmp_path):
    """Killed while writing the third direction: the two finished ones are complete and in place (their
    writers were closed when each was done), the third is refused, and a re-run completes it alone."""
    n = 20000
    for lang in LANGS:
        with gzip.open(tmp_path / f"train.{lang}.gz", "wt", compresslevel=1) as f:
            f.writelines(f"{lang} line {i} with a few more words\n" for i in range(n))
    out = tmp_path / "out"
    args = ["bitext", "--src-template", f"{tmp_path}/train.{{src_lang}}.gz", "--tgt-template",
            f"{tmp_path}/train.{{tgt_lang}}.gz", "--langs", ",".join(LANGS), "--all-pairs", "--dataset", "k",
            "--out", str(out), "--no-progress", "--shard-size", "4000"]
    root = out / "k"

    def writing_the_third() -> bool:  # two directions marked complete, the third half-way
        return len(list(root.glob("*.complete.json"))) == 2 and any(root.glob("*.partial-*/text.000001.jsonl.gz"))

    below = kill_when(prepare(args), writing_the_third)
    assert not survivors(below)
    done = sorted(p.name.removesuffix(".complete.json") for p in root.glob("*.complete.json"))
    assert [count_examples(root / name) for name in done] == [n, n]  # finished directions are whole
    [partial] = root.glob("*.partial-*")
    assert not (root / partial.name.split(".partial-")[0]).exists()
    with pytest.raises(IncompleteSharError, match=rf"{partial}.*completion marker.*missing.*emmett-prepare"):
        count_examples(partial)
    run_to_end(args)  # without --overwrite: skips the complete two, redoes the rest
    assert not list(root.glob("*.partial-*"))
    for src in LANGS:
        for tgt in LANGS:
            if src != tgt:
                assert count_examples(root / f"mt_{src}-{tgt}") == n


@pytest.mark.skipif(not ESPEAK, reason="espeak-ng is not installed")
def test_sigkill_during_speech_synthesis(tmp_path):
    """Killed while espeak-ng workers synthesise the second chunk (the first is already in the partial
    folders): every worker and helper process exits, the folders are refused, a re-run completes them."""
    n, chunk = 60, 20
    lines = {"en": [f"number {i}" for i in range(n)], "de": [f"Nummer {i}" for i in range(n)]}
    for lang, text in lines.items():
        (tmp_path / f"s.{lang}").write_text("".join(t + "\n" for t in text))
    out = tmp_path / "out"
    args = ["speech", "--src-template", f"{tmp_path}/s.{{src_lang}}", "--tgt-template", f"{tmp_path}/s.{{tgt_lang}}",
            "--pairs", "en-de", "--dataset", "sp", "--out", str(out), "--no-progress", "--chunk-size", str(chunk)]
    proc = prepare(args)

    def synthesising_after_a_written_chunk() -> bool:
        return any((out / "sp").glob("st_en-de.partial-*/cuts.000000.jsonl.gz")) and len(descendants(proc.pid)) >= 2

    below = kill_when(proc, synthesising_after_a_written_chunk)
    assert len(below) >= 2  # the pool's workers (and the resource tracker) were running
    assert not survivors(below), "processes of the killed emmett-prepare lived on"
    [partial] = (out / "sp").glob("st_en-de.partial-*")
    with pytest.raises(IncompleteSharError, match=str(partial)):
        list(read_shar_dir(partial, with_audio=False))
    run_to_end(args[:-2])  # one chunk: one pool of workers to start
    assert count_examples(out / "sp/st_en-de") == n and count_examples(out / "sp/asr_en-en") == n
    assert not list((out / "sp").glob("*.partial-*"))
