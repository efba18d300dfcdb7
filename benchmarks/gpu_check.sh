#!/usr/bin/env bash
# The one prepared GPU check (what it runs: benchmarks/gpu_check.py). At most 8 minutes on
# one H100 or H200 with no network, on that machine's own torch and transformers:
#   bash benchmarks/gpu_check.sh --out "$OUT/gpu_check.json"
# On the CPU, as CI runs it (tests/test_gpu_check.py), every part at tiny scale:
#   bash benchmarks/gpu_check.sh --dry --out /tmp/gpu_check.json
# What the check imports beyond torch and transformers is NEEDED below; a machine that
# lacks some installs them from benchmarks/wheels/ (git-ignored, carried to the device
# with the tree: at most 64 MiB). Fill it beforehand, for the device's Python version:
#   bash benchmarks/gpu_check.sh --fetch-wheels 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
NEEDED="pydantic:pydantic pyarrow:pyarrow fsspec:fsspec duckdb:duckdb yaml:pyyaml PIL:pillow numpy:numpy psutil:psutil"  # import:pip

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  version=${2:-$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
  # The machine's torch and transformers bring numpy, pyyaml and pillow: fetched only if asked by name.
  packages=${WHEELS:-pydantic pyarrow fsspec duckdb psutil}
  "$PYTHON" -m pip download --only-binary=:all: --platform manylinux2014_x86_64 --python-version "$version" --dest benchmarks/wheels $packages
  du -sh benchmarks/wheels
  exit 0
fi

missing=$("$PYTHON" - "$NEEDED" <<'PY'
import importlib.util, sys
print(" ".join(pip for module, pip in (pair.split(":") for pair in sys.argv[1].split()) if importlib.util.find_spec(module) is None))
PY
)
if [[ -n "$missing" ]]; then
  echo "installing from benchmarks/wheels: $missing"
  "$PYTHON" -m pip install --no-index --find-links benchmarks/wheels $missing
fi
exec timeout 480 "$PYTHON" -m benchmarks.gpu_check "$@"
