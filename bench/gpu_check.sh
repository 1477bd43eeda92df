#!/usr/bin/env bash
# GPU check: corpus -> store -> GRCNN bf16 training (eager and torch.compile) -> scoring,
# CPU-vs-GPU scores of the trained checkpoint, kill-and-resume; figures and PASS/FAIL.
# Usage: bench/gpu_check.sh [--device cuda|cpu] [--tiny] [--workdir DIR] [--json FILE]
# Details: bench/gpu_check.py. Python: $PYTHON, else the repository's .venv, else python3.
# The whole check is held to $GPU_CHECK_TIMEOUT seconds (default 480: 8 minutes); exit 124
# when it ran out, 1 when a check failed, 0 when all passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"; else py=python3; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$py" "$here/gpu_check.py" "$@"
