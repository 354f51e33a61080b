"""Train a nemo_emmett model with Hydra, Lightning and NeMo's exp_manager.

    emmett-train --config-name salm_t5 [overrides]          # or: python examples/train.py ...
    emmett-train --config-name salm_t5 trainer.max_steps=2000 data.size_temperature=2.0
    emmett-train --config-name salm_t5 -m model.label_smoothing=0.0,0.1   # sweep

Re-running the same command resumes from the experiment's last checkpoint (weights, optimizer,
and the data stream where it stopped). Configs come from the package's ``nemo_emmett/conf/`` (shipped in
the wheel), or ``$NEMO_EMMETT_CONF``; ``--config-path`` points elsewhere.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_emmett.cli.paths import conf_path

# Absolute, so that Hydra finds it whichever file calls main() (the console script or examples/train.py);
# unchecked here, so that a missing folder is Hydra's error naming it, not an import error.
CONF = str(conf_path())

COMMON_OVERRIDES = (
    ("trainer.max_steps=2000", "train longer (the bar shows step/max_steps, ETA)"),
    ("trainer.devices=8 trainer.strategy=ddp", "several GPUs (README: Multi-GPU)"),
    ("model.mgcm.enabled=true data.fusion=zip", "MGCM, with ST, ASR and MT in every step"),
    ("oomptimizer.enabled=true", "batch sizes that fill accelerator memory"),
    ("data.size_temperature=2.0", "a flatter mix of the sources (p ~ n^(1/T))"),
    ("exp_manager.name=my_run", "another experiment folder (the same: resumes)"),
    ("monitoring.bin_plot=false", "progress, LR, data scalars, plots"),
)


def config_names(conf: Path) -> dict[str, str]:
    """The top-level configs of ``conf`` (``salm_t5``, ``bestow_gpt``, ...), sorted, each with what its
    header's first line names (``SALM-T5``): the words before its first parenthesis or colon."""
    out = {}
    for path in sorted(conf.glob("*.yaml")) if conf.is_dir() else []:
        first = path.read_text().partition("\n")[0].lstrip("# ").strip()
        out[path.stem] = re.split(r"\s*[(:]", first, maxsplit=1)[0].rstrip(",. ")
    return out


def help_text(conf: Path) -> str:
    """What ``--help`` prints: the command, the configs there are, common overrides and where the
    whole config is documented (Hydra's own help prints every key, ~160 lines without a word on them)."""
    names = config_names(conf)
    width = max(len(o) for o, _ in COMMON_OVERRIDES)
    lines = [
        "usage: emmett-train [--config-name NAME] [KEY=VALUE ...] [-m KEY=V1,V2 ...]",
        "       (python examples/train.py takes the same arguments)",
        "",
        "Train a nemo_emmett model: Hydra config -> Lightning Trainer -> data and model -> fit, with NeMo's",
        "exp_manager (TensorBoard logs and checkpoints in nemo_experiments/<name>/). Re-running the same",
        "command resumes from the last checkpoint, the data stream included. Default: --config-name salm_t5,",
        "a tiny model on the embedded demo corpus (CPU, about 10 minutes).",
        "",
        f"configs in {conf}:",
        *(f"  --config-name {n:<{max(map(len, names))}}  {what}" for n, what in names.items()),
        *([] if names else ["  (none found: set $NEMO_EMMETT_CONF or pass --config-path)"]),
        "",
        "common overrides:",
        *(f"  {o:<{width}}  {why}" for o, why in COMMON_OVERRIDES),
        "",
        "W&B beside TensorBoard (docs/monitoring.md):",
        "  exp_manager.create_wandb_logger=true 'exp_manager.wandb_logger_kwargs={project: p, name: n}'",
        "",
        "the full config:",
        "  emmett-train --config-name salm_t5 --cfg job   print the composed config (every key) and exit",
        "  emmett-train --hydra-help                      Hydra's own options (multirun, sweeps)",
        "  every key's default and meaning: nemo_emmett/config_store.py (RunConfig: trainer, exp_manager),",
        "  models/config.py, data/config.py, parts/monitoring.py; README: Configuration",
    ]
    return "\n".join(lines)


def run(cfg: Any) -> None:
    from nemo_emmett.training import train

    train(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    """Hydra reads ``sys.argv``; ``argv`` replaces its arguments. ``--help`` answers at once: NeMo, torch
    and the package are imported only for a run."""
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in args):
        print(help_text(Path(CONF)))
        raise SystemExit(0)
    sys.argv = [sys.argv[0], *args]
    from nemo.core.config import hydra_runner

    from nemo_emmett.config_store import register_configs

    register_configs()  # the typed schemas nemo_emmett/conf/*.yaml start from (their defaults: [schema: ...])
    hydra_runner(config_path=CONF, config_name="salm_t5")(run)()


if __name__ == "__main__":
    main()
