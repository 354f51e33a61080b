#!/usr/bin/env bash
# Installs what nemo_emmett needs into the current Python environment. Idempotent.
#   bash scripts/setup.sh          the core install and the dev tools (`make setup`, `make demo`)
#   bash scripts/setup.sh --test   that, plus the test-only extras: SimulEval (`make test`, CI)
set -euo pipefail
PYTHON=${PYTHON:-python}
case "${1:-}" in
  "" | --test) ;;
  *) echo "scripts/setup.sh: unknown option '$1' (expected none or --test)" >&2; exit 2 ;;
esac

# espeak-ng synthesises the demo corpus speech.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "espeak-ng is missing: install it (Debian/Ubuntu: sudo apt-get install -y espeak-ng) and re-run." >&2
    exit 1
  fi
fi

# Keep an installed torch (a container's CUDA build, say); otherwise take the CPU 2.13.0 build,
# so that the nemo-toolkit install below never pulls a multi-GB CUDA wheel.
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q "torch==2.13.0"
fi
"$PYTHON" -m pip install -q -e ".[dev]"

if [ "${1:-}" = "--test" ]; then
  # The `simul` extra without SimulEval's own pins (tqdm==4.64.1, bitarray==2.6.0, pytest-flake8,
  # yt-dlp, pydub): they would downgrade what the stack uses and add a pytest plugin. SimulEval's
  # other imports (pandas, pyyaml, requests, sacrebleu, soundfile, tqdm) come with the core install.
  "$PYTHON" -m pip install -q --no-deps "simuleval==1.1.4"
  "$PYTHON" -m pip install -q textgrid tornado
fi
