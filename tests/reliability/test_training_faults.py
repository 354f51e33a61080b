"""Training-time faults: helper processes outlive a killed trainer, two runs share one experiment
folder, checkpoints between validations, damaged shards read by a dataloader worker."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nemo_emmett.data.shar import CorruptShardError, list_shards, read_shard
from nemo_emmett.data.stream import ShardedStream
from nemo_emmett.parts.process import exit_with_parent
from nemo_emmett.parts.run_lock import FolderLockedError, lock_folder
from nemo_emmett.parts.step_checkpoint import newest_checkpoint
from tests.conftest import write_audio_source, write_text_source

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- 1. dataloader workers die with the trainer ------------------------------------------------------
WORKERS = """
import os, sys, time, torch
from torch.utils.data import DataLoader, IterableDataset
from nemo_emmett.data.datamodule import WorkerInit

class Pids(IterableDataset):  # big pickled items: prefetched ones fill the pipe, as real batches do
    def __iter__(self):
        while True:
            yield os.getpid(), b"x" * 2**20

it = iter(DataLoader(Pids(), batch_size=None, num_workers=2, worker_init_fn=WorkerInit()))
print(sorted({int(next(it)[0]) for _ in range(6)}), flush=True)
time.sleep(600)
"""


def test_dataloader_workers_exit_when_the_trainer_is_sigkilled():
    proc = subprocess.Popen([sys.executable, "-c", WORKERS], env=ENV, text=True, stdout=subprocess.PIPE)
    try:
        workers = eval(proc.stdout.readline())
        assert len(workers) == 2 and all(alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    end = time.monotonic() + 3  # torch's own watchdog takes 5 s, and never fires in a worker blocked on a full pipe
    while any(alive(p) for p in workers) and time.monotonic() < end:
        time.sleep(0.05)
    assert not [p for p in workers if alive(p)], "dataloader workers outlived the killed trainer"


def test_exit_with_parent_exits_at_once_when_the_parent_already_died():
    pid = os.fork()
    if pid == 0:  # child: pretend it was forked by a parent that is gone
        try:
            exit_with_parent(parent_pid=os.getppid() + 100000)
        finally:
            os._exit(0)  # reached only if exit_with_parent did not exit
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL  # it sent itself the death signal


# ---- 2. one run per experiment folder --------------------------------------------------------------
HOLD = "import sys, time; from nemo_emmett.parts.run_lock import lock_folder; lock_folder(sys.argv[1]); print('held', flush=True); time.sleep(600)"


def test_second_run_in_the_same_folder_is_refused_until_the_first_is_killed(tmp_path):
    folder = tmp_path / "exp" / "checkpoints"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=ENV, text=True, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"{folder} is in use by another run \(pid {holder.pid} on host "
                                                    r".*\)\. Wait for it"):
            lock_folder(folder, hint="Wait for it")
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel releases the flock
        holder.wait(timeout=10)
    finally:
        holder.kill()
    assert lock_folder(folder) == folder.resolve() / "run.lock"  # resume works
    assert f"pid {os.getpid()} on host" in (folder / "run.lock").read_text()


# ---- 3. checkpoints between validations ----------------------------------------------------------
def test_checkpoint_every_n_steps_is_a_typed_documented_option():
    from nemo_emmett.config_store import compose_config

    cfg = compose_config("salm_t5", ["checkpoint_every_n_steps=50"], config_dir=REPO / "nemo_emmett" / "conf")
    assert cfg.checkpoint_every_n_steps == 50
    assert compose_config("salm_t5", config_dir=REPO / "nemo_emmett" / "conf").checkpoint_every_n_steps is None
    with pytest.raises(Exception, match="checkpoint_every_n_steps"):
        compose_config("salm_t5", ["checkpoint_every_n_steps=often"], config_dir=REPO / "nemo_emmett" / "conf")


def test_resume_picks_the_newest_finished_checkpoint(tmp_path):
    last = tmp_path / "salm_t5--val_loss=1.2000-epoch=0-last.ckpt"
    step = tmp_path / "salm_t5--step=14.ckpt"
    last.write_bytes(b"x")
    step.write_bytes(b"x")
    os.utime(last, ns=(1, 1))
    assert newest_checkpoint(tmp_path) == step
    from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

    NeMoModelCheckpoint.format_checkpoint_unfinished_marker_path(step).write_bytes(b"")  # a save in progress
    assert newest_checkpoint(tmp_path) == last
    assert newest_checkpoint(tmp_path / "none") is None


# ---- 5. damaged shards name themselves -------------------------------------------------------------
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def read_all(folder: Path, name: str) -> None:
    stream = ShardedStream(name, list_shards(folder), seed=0, shuffle=False, infinite=False)
    list(stream)


def test_truncated_cuts_jsonl_gz_names_the_shard_and_the_source(tmp_path):
    folder = write_audio_source(tmp_path / "st", "st", 12, shard_size=6)
    truncate(folder / "cuts.000000.jsonl.gz")
    with pytest.raises(CorruptShardError, match=rf"source 'st_en-de', Shar folder '{folder}': cannot read shard "
                                                rf"{folder}/cuts.000000.jsonl.gz.*EOFError.*re-run the preparation"):
        read_all(folder, "st_en-de")


def test_truncated_recording_tar_names_the_shard(tmp_path):
    folder = write_audio_source(tmp_path / "st", "st", 12, shard_size=6)
    truncate(folder / "recording.000001.tar", 0.6)
    with pytest.raises(CorruptShardError, match=rf"{folder}/recording.000001.tar.*re-run the preparation"):
        read_all(folder, "st_en-de")


def test_text_shard_that_is_not_gzip_names_the_shard(tmp_path):
    folder = write_text_source(tmp_path / "mt", "mt", 20, shard_size=10)
    (folder / "text.000001.jsonl.gz").write_text('{"id": "not gzipped"}\n')
    shards = list_shards(folder)
    assert len(list(read_shard(shards[0], source="mt_en-de"))) == 10
    with pytest.raises(CorruptShardError, match=rf"source 'mt_en-de'.*{folder}/text.000001.jsonl.gz.*BadGzipFile"):
        list(read_shard(shards[1], source="mt_en-de"))


def test_truncated_text_shard_in_a_dataloader_worker_reaches_the_trainer_with_its_path(tmp_path):
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    folder = write_text_source(tmp_path / "mt", "mt", 400, shard_size=200)
    path = folder / "text.000000.jsonl.gz"
    truncate(path)

    class Read(IterableDataset):
        def __iter__(self):
            for _ in read_shard(list_shards(folder)[0], source="mt_en-de"):
                yield torch.zeros(1)

    with pytest.raises(CorruptShardError, match=rf"{path}.*EOFError.*re-run the preparation"):
        list(DataLoader(Read(), batch_size=None, num_workers=1))
