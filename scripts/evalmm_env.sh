#!/usr/bin/env bash
# Builds .venv-evalmm: llm-jp-eval-mm 0.4.1 (PyPI eval-mm), the tool the published Asagi
# and VILA-jp scores were made with, so tests and benchmarks can compare our scorers with
# it. It needs Python >= 3.12.1 (pyenv's 3.12.1 here, or python3.12 on PATH); eval-mm
# does not declare pillow but imports it. Idempotent: a finished environment carries a
# stamp; anything else is rebuilt whole.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ASAGI_EVALMM_VENV:-.venv-evalmm}"
# One build at a time (the tests start it in the background; a second caller waits).
exec 9>"$VENV.lock"
flock 9
STAMP="$VENV/.built-eval-mm-0.4.1"
if [ -f "$STAMP" ]; then
    exit 0
fi
PYTHON="$(PYENV_VERSION=3.12.1 pyenv which python 2>/dev/null || command -v python3.12 || true)"
if [ -z "$PYTHON" ]; then
    echo "eval-mm 0.4.1 needs Python >= 3.12.1: install it (pyenv install 3.12.1) or put python3.12 on PATH" >&2
    exit 1
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check eval-mm==0.4.1 pillow
"$VENV/bin/python" -c "from eval_mm.metrics.rougel_scorer import RougeLScorer"
touch "$STAMP"
echo "eval-mm environment ready: $VENV/bin/python"
