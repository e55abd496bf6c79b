#!/usr/bin/env bash
# The test suite, from a fresh clone: create .venv if needed, install graphcnn with its test
# extra, lint with ruff, run pytest. Never needs the network beyond the package index for the
# install. Arguments go to pytest; the quick loop while working: bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ruff check graphcnn scripts tests
exec python -m pytest -q "$@" tests
