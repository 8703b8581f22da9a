#!/usr/bin/env bash
# GPU figures in one command, on a machine with a CUDA GPU and this repository's environment:
#   benchmarks/gpu.sh            # encode images/s (ViT-B-32, ViT-H-14-378-quickgelu; random weights,
#                                # fp16, batch 256) and rating vectors/s (1,000,000 vs a 20,000-image model)
#   benchmarks/gpu.sh --smoke    # tiny sizes, runs on the CPU too: checks the script
# It makes its own data (under $PERCEPT_BENCH_DIR, default bench-output/) and downloads nothing.
# Python: $PYTHON, else .venv/bin/python, else python3 (needs percept[encode]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch, open_clip" 2>/dev/null; then
    echo "error: $PY lacks torch or open_clip: run 'make setup' (or pip install -e '.[encode]'), or set PYTHON" >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" -m benchmarks.gpu_figures "$@"
