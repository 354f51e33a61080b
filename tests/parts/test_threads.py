"""CPU thread tuning: the pure choice and the callback driven step by step with a simulated clock."""

from types import SimpleNamespace

import pytest
import torch

from nemo_emmett.parts import threads as threads_mod
from nemo_emmett.parts.threads import ThreadsConfig, ThreadTuner, candidate_threads, fastest_threads


def test_candidates_are_the_count_its_half_and_one():
    assert candidate_threads(2) == [1, 2]
    assert candidate_threads(16) == [1, 8, 16]
    assert candidate_threads(1) == [1]


def test_fastest_weighs_each_kind_by_how_often_it_occurred():
    # 1 thread: audio slower, text faster; text occurs 9x as often, so 1 thread wins overall.
    samples = {1: {"audio": [2.0], "text": [0.1] * 9}, 2: {"audio": [1.5], "text": [0.2] * 9}}
    assert fastest_threads(samples) == 1
    samples[2]["audio"] = [0.5]  # now 2 threads save more on audio than they lose on text
    assert fastest_threads(samples) == 2


def test_fastest_ignores_kinds_one_candidate_never_saw():
    samples = {1: {"audio": [9.0], "text": [0.1]}, 2: {"text": [0.2]}}
    assert fastest_threads(samples) == 1
    assert fastest_threads({1: {"audio": [1.0]}, 2: {"text": [1.0]}}) is None
    assert fastest_threads({2: {"text": [1.0]}}) is None


@pytest.mark.parametrize("bad", [{"mode": "fast"}, {"threads": 0}, {"trial_steps": 1}, {"period": 10, "trial_steps": 10}])
def test_bad_config_is_named(bad):
    with pytest.raises(ValueError, match="threads"):
        ThreadsConfig(**bad)


class FakeModule:
    device = torch.device("cpu")

    def __init__(self):
        self.logged = []

    def log(self, name, value, **kwargs):
        self.logged.append((name, value))


def run_tuner(monkeypatch, seconds_per_step, steps, cfg):
    """Drives the tuner over ``steps`` steps; a step with t threads takes ``seconds_per_step[t]``."""
    clock = [0.0]
    monkeypatch.setattr(threads_mod.time, "perf_counter", lambda: clock[0])
    used = []
    tuner, module = ThreadTuner(cfg), FakeModule()
    tuner.on_fit_start(None, module)
    batch = SimpleNamespace(modality="audio")
    for i in range(steps):
        tuner.on_train_batch_start(None, module, batch, i)
        used.append(torch.get_num_threads())
        clock[0] += seconds_per_step[torch.get_num_threads()]
        tuner.on_train_batch_end(None, module, None, batch, i)
    return tuner, module, used


def test_tuner_keeps_the_faster_count_and_measures_again(monkeypatch):
    before = torch.get_num_threads()
    try:
        cfg = ThreadsConfig(threads=2, warmup_steps=2, trial_steps=4, period=10)
        tuner, module, used = run_tuner(monkeypatch, {1: 0.5, 2: 2.0}, 30, cfg)
        assert used[2:6] == [1, 2, 1, 2]  # the measurement alternates the candidates
        assert set(used[6:12]) == {1}  # then keeps the faster one until the next measurement
        assert used[12:16] == [1, 2, 1, 2]
        assert tuner.chosen == 1
        assert ("cpu_threads", 1.0) in module.logged
        # The load goes away: 2 threads become faster, and the next measurement switches back.
        tuner2, _, used2 = run_tuner(monkeypatch, {1: 2.0, 2: 0.5}, 12, cfg)
        assert tuner2.chosen == 2 and set(used2[6:12]) == {2}
    finally:
        torch.set_num_threads(before)


def test_tuner_stays_off_on_gpu_and_with_one_candidate(monkeypatch):
    module = FakeModule()
    module.device = torch.device("meta")
    tuner = ThreadTuner(ThreadsConfig(threads=2))
    tuner.on_fit_start(None, module)
    assert not tuner.active
    one = ThreadTuner(ThreadsConfig(threads=1))
    one.on_fit_start(None, FakeModule())
    assert not one.active


def test_fit_end_gives_the_process_its_threads_back(monkeypatch):
    """A fit ends with the count it started with: what runs next in the process (export, the next test)
    does not inherit the tuner's last trial count."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = ThreadsConfig(threads=2, warmup_steps=0, trial_steps=4, period=10)
        tuner, module, used = run_tuner(monkeypatch, {1: 0.5, 2: 2.0}, 3, cfg)  # ends inside a measurement
        assert used[-1] == 1 and torch.get_num_threads() == 1
        tuner.on_fit_end(None, module)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
