#!/usr/bin/env bash
# SALM-T5 on Multi30k: MT en->de/fr/cs from text, ST en->de/fr/cs and ASR en from English speech
# synthesised with espeak-ng. Run from the repository root:
#   bash recipes/multi30k.sh [MULTI30K_DIR] [SHAR_ROOT] [NUM_SPEECH] [extra Hydra overrides...]
# Defaults: ../shared/data/multi30k, shar/, 6000 spoken training sentences. PREPARE_ONLY=1: prepare the Shar, do not train.
set -euo pipefail
M30K=${1:-../shared/data/multi30k}
SHAR=${2:-shar}
NUM_SPEECH=${3:-6000}
shift $(( $# < 3 ? $# : 3 ))
PREP="python examples/prepare_data.py"

[ -f "$M30K/train.en.gz" ] || { echo "Multi30k not found at $M30K (train.en.gz ...)" >&2; exit 2; }
if [ ! -f "$SHAR/multi30k/sources.yaml" ]; then
  $PREP bitext --dataset multi30k --out "$SHAR" --pairs en-de,en-fr,en-cs \
    --src-template "$M30K/train.{src_lang}.gz" --tgt-template "$M30K/train.{tgt_lang}.gz"
fi
if [ ! -f "$SHAR/multi30k_val/sources.yaml" ]; then
  $PREP bitext --dataset multi30k_val --out "$SHAR" --pairs en-de,en-fr,en-cs \
    --src-template "$M30K/val.{src_lang}.gz" --tgt-template "$M30K/val.{tgt_lang}.gz"
fi
if [ ! -f "$SHAR/multi30k_speech/sources.yaml" ]; then
  $PREP speech --dataset multi30k_speech --out "$SHAR" --pairs en-de,en-fr,en-cs --max-lines "$NUM_SPEECH" \
    --src-template "$M30K/train.{src_lang}.gz" --tgt-template "$M30K/train.{tgt_lang}.gz"
fi
if [ ! -f "$SHAR/multi30k_speech_val/sources.yaml" ]; then
  $PREP speech --dataset multi30k_speech_val --out "$SHAR" --pairs en-de,en-fr,en-cs --max-lines 300 \
    --src-template "$M30K/val.{src_lang}.gz" --tgt-template "$M30K/val.{tgt_lang}.gz"
fi
[ "${PREPARE_ONLY:-0}" = 1 ] && exit 0
python examples/train.py --config-name salm_t5_multi30k shar_root="$SHAR" "$@"
