#!/usr/bin/env bash
# Foundation -> speech without forgetting, at Multi30k scale (CPU hours; a GPU when there is one):
# stage 1 trains SALM-T5's T5 (nemo_emmett/conf/salm_t5_multi30k.yaml's shape) on Multi30k text en<->de/fr/cs, both
# directions, and saves it as a Hugging Face folder; stage 2 loads it as model.backbone.pretrained_path and
# trains three arms for the same steps on English speech (espeak-ng) ST en->de/fr/cs + ASR en (multiplexer:
# with the MT data mixed in; speech_only; frozen_lora). Every model is scored on test_2016_flickr (MT both
# ways, ST, ASR). Prepares whatever Shar is missing first (complete folders are skipped). From the repo root:
#   bash recipes/forgetting_multi30k.sh [MULTI30K_DIR] [SHAR_ROOT] [OUT] [STAGE1_STEPS] [STAGE2_STEPS] \
#        [NUM_SPEECH] [extra Hydra overrides...]
# Defaults: ../shared/data/multi30k, shar, outputs/forgetting_multi30k, 20000, 4000, 6000 spoken sentences.
# MAX_LINES=N (environment) reads only the first N lines of every file (a quick check of the preparation).
# Results: OUT/forgetting.md (the table of docs/fidelity.md) and OUT/forgetting.json.
set -euo pipefail
M30K=${1:-../shared/data/multi30k}
SHAR=${2:-shar}
OUT=${3:-outputs/forgetting_multi30k}
STAGE1=${4:-20000}
STAGE2=${5:-4000}
NUM_SPEECH=${6:-6000}
shift $(( $# < 6 ? $# : 6 ))
PREP="python examples/prepare_data.py"
LIMIT=()
[ -n "${MAX_LINES:-}" ] && LIMIT=(--max-lines "$MAX_LINES")
BOTH=en-de,de-en,en-fr,fr-en,en-cs,cs-en

[ -f "$M30K/train.en.gz" ] || { echo "Multi30k not found at $M30K (train.en.gz ...)" >&2; exit 2; }
# bitext skips the directions already complete (recipes/multi30k.sh prepared en->xx into the same folder)
$PREP bitext --dataset multi30k --out "$SHAR" --pairs "$BOTH" "${LIMIT[@]}" --no-progress \
  --src-template "$M30K/train.{src_lang}.gz" --tgt-template "$M30K/train.{tgt_lang}.gz"
$PREP bitext --dataset multi30k_test --out "$SHAR" --pairs "$BOTH" "${LIMIT[@]}" --no-progress \
  --src-template "$M30K/test_2016_flickr.{src_lang}.gz" --tgt-template "$M30K/test_2016_flickr.{tgt_lang}.gz"
if [ ! -f "$SHAR/multi30k_speech/sources.yaml" ]; then
  $PREP speech --dataset multi30k_speech --out "$SHAR" --pairs en-de,en-fr,en-cs \
    --max-lines "${MAX_LINES:-$NUM_SPEECH}" \
    --src-template "$M30K/train.{src_lang}.gz" --tgt-template "$M30K/train.{tgt_lang}.gz"
fi
if [ ! -f "$SHAR/multi30k_speech_test/sources.yaml" ]; then
  $PREP speech --dataset multi30k_speech_test --out "$SHAR" --pairs en-de,en-fr,en-cs "${LIMIT[@]}" \
    --src-template "$M30K/test_2016_flickr.{src_lang}.gz" --tgt-template "$M30K/test_2016_flickr.{tgt_lang}.gz"
fi
[ "${PREPARE_ONLY:-0}" = 1 ] && exit 0
python recipes/forgetting.py --config-name forgetting_multi30k --out "$OUT" --stage1-steps "$STAGE1" \
  --stage2-steps "$STAGE2" shar_root="$SHAR" "$@"
