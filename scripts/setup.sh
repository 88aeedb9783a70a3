#!/usr/bin/env bash
# Idempotent install of otpr into .venv on a fresh machine (Debian, Python 3.10+).
#  - the CPU torch wheel first (torch==2.13.0), so no requirement can pull CUDA packages;
#  - then otpr with the pins of constraints.txt (mujoco 3.3.0, numpy < 2, ...).
# Use another torch build (e.g. CUDA) by installing it into .venv before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${OTPR_EXTRAS:-dev}"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libOSMesa.so; then
  (apt-get update -qq && apt-get install -y -qq libosmesa6 >/dev/null) || echo "setup: could not install libosmesa6 (only needed for rendering)"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=".venv/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
fi
$PIP install -q -c constraints.txt -e ".[${EXTRAS}]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import otpr, torch, mujoco, metaworld; print('otpr ready: torch', torch.__version__, '| mujoco', mujoco.__version__)"
