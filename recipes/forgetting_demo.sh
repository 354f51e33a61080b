#!/usr/bin/env bash
# Foundation -> speech without forgetting, on the embedded demo corpus (CPU, about 20 minutes on 2 cores):
# stage 1 trains SALM-T5's T5 on the demo's MT directions alone and saves it as a Hugging Face folder;
# stage 2 loads it as model.backbone.pretrained_path and trains three arms for the same steps
# (multiplexer: speech + MT mixed; speech_only; frozen_lora: backbone frozen, perception + LoRA).
# Every model is scored on the demo's validation sources (MT, ST, ASR). Run from the repository root:
#   bash recipes/forgetting_demo.sh [OUT] [STAGE1_STEPS] [STAGE2_STEPS] [extra Hydra overrides...]
# Defaults: outputs/forgetting_demo, 1500, 800. Results: OUT/forgetting.md (the table of docs/fidelity.md)
# and OUT/forgetting.json; a finished stage is kept and skipped when run again (rm -r OUT to redo).
set -euo pipefail
OUT=${1:-outputs/forgetting_demo}
STAGE1=${2:-1500}
STAGE2=${3:-800}
shift $(( $# < 3 ? $# : 3 ))
python recipes/forgetting.py --out "$OUT" --config-name salm_t5 --stage1-steps "$STAGE1" --stage2-steps "$STAGE2" "$@"
