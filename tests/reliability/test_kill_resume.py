"""A run killed with SIGKILL between validations resumes exactly from its step checkpoint, leaves no
process behind, and holds its experiment folder against a second run while it lives (examples/train.py
as a user runs it, exp_manager, the demo corpus: audio and text batches)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_scripts import TINY_DEMO, TINY_MODEL

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "espeak-ng"], capture_output=True).returncode != 0,
    reason="espeak-ng is not installed; the demo corpus needs it",
)


def descendants(pid: int) -> set[int]:
    """Child processes of ``pid``, and theirs (from /proc/<pid>/task/*/children)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - out)
            out |= kids
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def batches(path: Path) -> dict[int, list[str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["batch"]: r["ids"] for r in map(json.loads, lines)}


def newest_step(ckpts: Path) -> int:
    steps = [int(p.name.split("step=")[1].split(".")[0]) for p in ckpts.glob("*--step=*.ckpt")]
    return max(steps, default=0)


def wait_for(predicate, proc, timeout, what, output: Path):
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {what}: {output.read_text()[-3000:]}")
        assert time.monotonic() < end, f"no {what} in {timeout} s: {output.read_text()[-3000:]}"
        time.sleep(0.2)


def test_sigkill_between_validations_resumes_exactly_and_leaves_no_process(tmp_path):
    env = {**os.environ, "NEMO_EMMETT_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    ckpts = tmp_path / "exp" / "salm_t5" / "checkpoints"
    args = [sys.executable, str(REPO / "examples/train.py"), *TINY_DEMO, *TINY_MODEL, "trainer.val_check_interval=10",
            "checkpoint_every_n_steps=3", "data.num_workers=2", f"exp_manager.exp_dir={tmp_path / 'exp'}"]
    first_log = tmp_path / "first.jsonl"
    # the run writes to a file, not to a pipe that nobody reads while waiting (it would fill and block the run)
    with open(tmp_path / "first.out", "w") as output:
        first = subprocess.Popen([*args, "trainer.max_steps=100000", f"data.log_batch_ids={first_log}"], cwd=tmp_path,
                                 env=env, text=True, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: list(ckpts.glob("*--step=3.ckpt")), first, 240, "step checkpoint 3", tmp_path / "first.out")
            # a second run of the same experiment is refused at once, naming the folder and the holder
            second = subprocess.run([*args, "data.log_batch_ids=" + str(tmp_path / "second.jsonl")], cwd=tmp_path,
                                    env=env, text=True, capture_output=True, timeout=120)
            assert second.returncode != 0
            assert f"{ckpts} is in use by another run (pid {first.pid} on host" in second.stderr + second.stdout
            assert "exp_manager.version" in second.stderr + second.stdout
            assert not (tmp_path / "second.jsonl").exists()
            # kill two or more batches after a step checkpoint, before the next validation (every 10 steps, each
            # writing exp_manager's -last): the step checkpoint is then newer than anything exp_manager knows
            wait_for(lambda: (s := newest_step(ckpts)) > 10 and s + 2 <= len(batches(first_log)) < (s // 10 + 1) * 10,
                     first, 240, "batches after a step checkpoint", tmp_path / "first.out")
            children = descendants(first.pid)
            assert len(children) >= 2, children  # the two dataloader workers at least
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
    end = time.monotonic() + 3  # torch's own worker watchdog would take 5 s, or never fire (a full pipe)
    while any(alive(p) for p in children) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in children if alive(p)], "processes of the killed run survived"
    seen = batches(first_log)
    step = newest_step(ckpts)
    assert step > 10 and step % 10 and len(list(ckpts.glob("*--step=*.ckpt"))) == 1  # only the newest is kept

    resumed_log = tmp_path / "resumed.jsonl"
    out = subprocess.run([*args, f"trainer.max_steps={step + 4}", f"data.log_batch_ids={resumed_log}"], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Resuming from the newest checkpoint" in out.stdout + out.stderr
    resumed = batches(resumed_log)
    assert sorted(resumed) == list(range(step + 1, step + 5))  # no batch repeated, none skipped
    overlap = [n for n in resumed if n in seen]
    assert overlap, (step, sorted(seen))
    assert {n: resumed[n] for n in overlap} == {n: seen[n] for n in overlap}
    kinds = {i.split("-")[1].split("_")[0] for v in seen.values() for i in v}  # demo-<task>_<src>-<tgt>-<n>
    assert {"mt", "st"} <= kinds, kinds  # audio and text batches
