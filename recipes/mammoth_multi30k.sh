#!/usr/bin/env bash
# MAMMOTH on Multi30k: MT in all 12 directions among en, de, fr, cs, with three sharing setups trained
# for the same wall time on CPU, then every task scored with its own components alone
# (benchmarks/component_loading.py: BLEU/chrF per direction, parameters and memory per task).
# Run from the repository root:
#   bash recipes/mammoth_multi30k.sh [SHAR_ROOT] [MAX_TIME] [extra Hydra overrides...]
# Defaults: shar/, 00:00:08:00 (dd:hh:mm:ss) per setup. Results: outputs/mammoth_multi30k/<setup>.json
set -euo pipefail
SHAR=${1:-shar}
MAX_TIME=${2:-00:00:08:00}
shift $(( $# < 2 ? $# : 2 ))
META=recipes/mammoth_multi30k.meta.yaml
OUT=outputs/mammoth_multi30k
mkdir -p "$OUT"

# Sharing setups: overrides of the meta-config (examples/config_config.py KEY=VALUE).
specific=("sharing.encoder=[{layers: 1, pattern: SRC_LANGUAGE}, {layers: 1, pattern: SRC_LANGUAGE}]"
          "sharing.decoder=[{layers: 1, pattern: TGT_LANGUAGE}, {layers: 1, pattern: TGT_LANGUAGE}]")
partial=()   # the meta-config as written: encoder [SRC_LANGUAGE, FULL], decoder [FULL, TGT_LANGUAGE]
shared=("sharing.encoder=[{layers: 1, pattern: FULL}, {layers: 1, pattern: FULL}]"
        "sharing.decoder=[{layers: 1, pattern: FULL}, {layers: 1, pattern: FULL}]")

for setup in specific partial shared; do
  declare -n overrides=$setup
  python examples/config_config.py "$META" "shar_root=$SHAR" "name=mammoth_multi30k_$setup" "${overrides[@]}" \
    --out "$OUT/$setup.yaml" --prepare-script "$OUT/prepare.sh"
done
bash "$OUT/prepare.sh"   # the same data for every setup (skipped when prepared)

for setup in specific partial shared; do
  python examples/train.py --config-path "$PWD/$OUT" --config-name "$setup" \
    trainer.max_time="$MAX_TIME" trainer.max_steps=1000000 trainer.val_check_interval=1000000 \
    data.tokenizer.vocab_size=4000 "$@"
  ckpt=$(ls -t nemo_experiments/mammoth_multi30k_$setup/checkpoints/*-last.ckpt | head -1)
  python examples/export.py --checkpoint "$ckpt" --out "$OUT/$setup.emmett"
  python benchmarks/component_loading.py --model "$OUT/$setup.emmett" --shar-root "$SHAR" \
    --dataset multi30k_val > "$OUT/$setup.json"
done
python recipes/mammoth_table.py "$OUT" specific partial shared | tee "$OUT/tables.md"
