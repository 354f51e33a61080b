"""Plain DDP (``trainer.strategy=ddp``) for SALM-T5 and BESTOW-GPT, with MGCM's manual step too, and a
modular (MAMMOTH) encoder-decoder whose ranks run different components: 2 gloo
processes launched by torchrun (one launch for every case), batches mixed so that one rank holds
text while the other holds audio, and a step where every rank holds text (the speech path unused
everywhere). Both ranks must end with the same weights, equal to a single-process run on the same
global batch: the mean of the ranks' token-averaged losses (what DDP's gradient averaging computes),
which is the loss of the concatenated batch when the ranks hold as many target tokens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import get_class

from tests.models.ddp_worker import SCHEDULE, case_configs, collate_examples, rank_batch, rank_examples

REPO = Path(__file__).resolve().parents[2]
CASES = ("salm_t5", "bestow_gpt", "salm_t5_mgcm", "modular")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_torchrun(spm: str, out: Path, timeout_s: float = 240.0) -> None:
    """The launch a user types (``torchrun --nproc_per_node 2``), killed as a group on a hang."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "models" / "ddp_worker.py"), spm, str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun still running after {timeout_s:.0f} s (a collective hangs):\n{log[-4000:]}")
    assert proc.returncode == 0, log[-6000:]


@pytest.fixture(scope="module")
def ddp_results(spm_path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ddp")
    run_torchrun(spm_path, out)
    return out, {(c, r): torch.load(out / f"{c}-rank{r}.pt") for c in CASES for r in (0, 1)}


def reference_run(case: str, cls_name: str, cfg: dict, init: dict, *, clip: float | None) -> tuple[dict, list[float]]:
    """One process: at each step the mean of the two ranks' batch losses (MGCM: the mean of each rank's
    projected gradient), gradient clipping by norm, AdamW; a parameter no batch of the step used keeps
    no gradient."""
    model = get_class(cls_name)(cfg)
    model.load_state_dict(init)
    model.train()
    opt = model.configure_optimizers()["optimizer"]
    params = [p for p in model.parameters() if p.requires_grad]
    losses = []
    for step in range(len(SCHEDULE)):
        opt.zero_grad(set_to_none=True)
        batches = [rank_batch(step, r, model.text, case) for r in (0, 1)]
        if model.mgcm is None:
            loss = torch.stack([model.task_losses(b)[0] for b in batches]).mean()
            loss.backward()
        else:  # each rank projects its own task gradients; DDP then averages them
            grads: list[dict] = []
            totals = []
            names = dict(model.named_parameters())
            plain_backward = SimpleNamespace(manual_backward=lambda loss, **kw: loss.backward(**kw))  # no Trainer
            groups = [[names[n] for n in members] for members in model.mgcm.groups.values()]
            for b in batches:
                opt.zero_grad(set_to_none=True)
                bl = model.batch_loss(b)
                model.mgcm.backward(plain_backward, bl.task_shares(), bl.total(), groups)
                totals.append(bl.total().detach())
                grads.append({id(p): p.grad for p in params if p.grad is not None})
            for p in params:
                got = [g[id(p)] for g in grads if id(p) in g]
                p.grad = torch.stack(got).sum(0) / 2 if got else None
            loss = torch.stack(totals).mean()
        losses.append(float(loss))
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    return model.state_dict(), losses


@pytest.mark.parametrize("case", CASES)
def test_plain_ddp_trains_like_one_process_on_the_global_batch(ddp_results, spm_path, case):
    out, results = ddp_results
    r0, r1 = results[(case, 0)], results[(case, 1)]
    assert r0["strategy"] == "DDPStrategy" and r0["find_unused_parameters"] is True  # ddp -> detection on
    for key, value in r0["state"].items():  # replicas identical
        assert torch.equal(value, r1["state"][key]), f"{case}: {key} differs between the ranks"
    cls_name, cfg = case_configs(spm_path)[case]
    init = torch.load(out / f"{case}-init.pt")
    expected, losses = reference_run(case, cls_name, cfg, init, clip=None if "mgcm" in cfg else 1.0)
    # DDP's loss: each rank logs its own; their mean is the global batch's
    ddp_losses = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
    assert ddp_losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
    for key, value in expected.items():
        if ".running_" in key or key.endswith(".num_batches_tracked"):
            continue  # BatchNorm statistics: DDP broadcasts rank 0's at every forward (checked equal above)
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-4, atol=1e-5, msg=f"{case}: {key}")
    trained = "backbone.components.decoder.1.fr." if case == "modular" else "perception."  # used at step 0 only
    assert any(k.startswith(trained) and not torch.equal(init[k], expected[k]) for k in init)


def test_equal_target_tokens_make_the_mean_of_rank_losses_the_concatenated_batch_loss(spm_path):
    """Why the reference averages the ranks' losses: with as many target tokens per rank (the all-text
    step), that mean is the token-averaged loss of the whole global batch in one process."""
    cls_name, cfg = case_configs(spm_path)["salm_t5"]
    torch.manual_seed(0)
    model = get_class(cls_name)(cfg).train()
    step = SCHEDULE.index(("text", "text"))
    parts = [rank_examples(step, r) for r in (0, 1)]
    per_rank = [model.task_losses(collate_examples(m, exs, model.text))[0] for m, exs in parts]
    whole = model.task_losses(collate_examples("text", parts[0][1] + parts[1][1], model.text))[0]
    assert not torch.allclose(per_rank[0], per_rank[1])  # the ranks' batches differ
    torch.testing.assert_close(whole, torch.stack(per_rank).mean(), rtol=1e-5, atol=1e-6)


def test_the_recipe_turns_plain_ddp_into_ddp_with_unused_parameter_detection():
    from nemo_emmett.training import ddp_strategy, trainer_kwargs

    assert ddp_strategy("ddp") == "ddp_find_unused_parameters_true"
    assert ddp_strategy("ddp_spawn") == "ddp_spawn_find_unused_parameters_true"
    for kept in ("auto", "component_sync", "ddp_find_unused_parameters_false", None):
        assert ddp_strategy(kept) == kept
    assert trainer_kwargs({"strategy": "ddp", "devices": 2})["strategy"] == "ddp_find_unused_parameters_true"


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "nemo_emmett" / "conf").glob("*.yaml")))
def test_the_launch_overrides_need_no_plus(name):
    """The README's torchrun and srun lines override trainer.strategy, devices and num_nodes as given."""
    from nemo_emmett.config_store import compose_config
    from nemo_emmett.training import trainer_kwargs

    cfg = compose_config(name, ["trainer.strategy=ddp", "trainer.devices=8", "trainer.num_nodes=2"],
                         config_dir=REPO / "nemo_emmett" / "conf")
    kwargs = trainer_kwargs(cfg.trainer)
    assert (kwargs["strategy"], kwargs["devices"], kwargs["num_nodes"]) == ("ddp_find_unused_parameters_true", 8, 2)
