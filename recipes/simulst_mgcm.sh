#!/usr/bin/env bash
# The MGCM paper's experiment, scaled down (recipes/simulst_mgcm.py): SALM-T5 with a streaming FastConformer,
# multi-path wait-k training and fused audio + text steps, trained three ways for the same steps (plain
# multi-task, MGCM at module level, the same projection at model level), each decoded simultaneously at
# wait-k 1, 3, 5, 7 and offline: BLEU and chrF against AL/LAAL/DAL/AP per arm, the conflict statistics
# per module type. Run from the repository root:
#   bash recipes/simulst_mgcm.sh [demo|multi30k] [OUT] [STEPS] [extra Hydra overrides...]
# demo (default): the embedded demo corpus, 1200 steps per arm (CPU, about 45 minutes on 2 idle cores).
# multi30k: the Shar of recipes/multi30k.sh (SHAR_ROOT, default shar/; prepared first if missing),
#   6000 steps per arm by default (CPU hours), its 300 spoken validation sentences per direction
#   (EVAL_UTTERANCES=N: the first N).
# Results: OUT/simulst_mgcm.md (the tables of docs/fidelity.md), OUT/simulst_mgcm.json, OUT/simulst_mgcm.png;
# a finished arm is kept and skipped when run again (rm -r OUT to redo).
set -euo pipefail
CORPUS=${1:-demo}
case "$CORPUS" in
  demo)
    OUT=${2:-outputs/simulst_mgcm}
    STEPS=${3:-1200}
    shift $(( $# < 3 ? $# : 3 ))
    python recipes/simulst_mgcm.py --out "$OUT" --config-name salm_t5 --steps "$STEPS" trainer.max_time=null "$@"
    ;;
  multi30k)
    OUT=${2:-outputs/simulst_mgcm_multi30k}
    STEPS=${3:-6000}
    shift $(( $# < 3 ? $# : 3 ))
    SHAR=${SHAR_ROOT:-shar}
    if [ ! -f "$SHAR/multi30k_speech_val/sources.yaml" ]; then
      PREPARE_ONLY=1 bash recipes/multi30k.sh "${MULTI30K_DIR:-../shared/data/multi30k}" "$SHAR" 6000
    fi
    python recipes/simulst_mgcm.py --out "$OUT" --config-name salm_t5_multi30k --steps "$STEPS" \
      --eval-utterances "${EVAL_UTTERANCES:-300}" shar_root="$SHAR" trainer.max_time=null "$@"
    ;;
  *)
    echo "simulst_mgcm.sh: unknown corpus '$CORPUS'; expected demo or multi30k" >&2
    exit 2
    ;;
esac
