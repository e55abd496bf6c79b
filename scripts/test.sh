#!/usr/bin/env bash
# The test suite, from a fresh clone: create .venv if needed, install graphcnn with its test
# extra, run pytest. Never needs the network beyond the package index for the install.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
exec python -m pytest -q "$@" tests
