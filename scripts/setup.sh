#!/usr/bin/env bash
# Create .venv and install the toolkit with its test dependencies; install the Debian TTS
# engines the demo corpora need (espeak-ng, flite) when this user can. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v flite >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing espeak-ng and flite (Debian packages) for the demo corpora"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite >/dev/null \
      || echo "setup: WARNING: apt-get could not install espeak-ng/flite; the demo corpus cannot be built (real corpora still work)"
  else
    echo "setup: WARNING: espeak-ng/flite missing and not installable here (needs root and apt-get)."
    echo "       Install them (e.g. 'sudo apt-get install espeak-ng flite') to build the demo corpus;"
    echo "       real corpora work without them (-o task.corpus=speech_commands -o task.root=PATH)."
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
echo "setup: installing the toolkit into .venv (torch and torchaudio included; first time takes a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
.venv/bin/python -c "import torch, torchaudio; print(f'setup: torch {torch.__version__}, torchaudio {torchaudio.__version__}')"
