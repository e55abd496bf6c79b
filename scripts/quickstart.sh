#!/usr/bin/env bash
# The main job, from a fresh clone: create .venv if needed, install graphcnn, train the
# default model (digits preset) on the embedded digits, predict a few example images, and
# say how to open TensorBoard. Extra arguments go to `graphcnn train` (e.g. --set train.epochs=3).
# GRAPHCNN_EXTRA=gpu installs the GPU build of TensorFlow instead of the CPU one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh

for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
    echo "Options of graphcnn train:"
    graphcnn train --help
    exit 0
  fi
done

run="quickstart-$(date +%Y%m%d-%H%M%S)"
graphcnn train --name "$run" "$@"
echo
echo "== example prediction (images the run saved from its test split) =="
graphcnn predict "logs/$run" "logs/$run/examples"
echo
echo "TensorBoard: .venv/bin/graphcnn tensorboard logs/$run   (or .venv/bin/tensorboard --logdir logs/$run)"
