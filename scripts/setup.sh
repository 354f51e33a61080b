#!/usr/bin/env bash
# Installs what nemo_emmett needs into the current Python environment. Idempotent.
set -euo pipefail
PYTHON=${PYTHON:-python}

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
