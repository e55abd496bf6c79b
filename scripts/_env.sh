# Sourced by the scripts: make .venv (once) and install graphcnn into it (again when
# setup.cfg changes), then put .venv/bin first on PATH.
python=${PYTHON:-python3}
extra=${GRAPHCNN_EXTRA:-cpu}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.graphcnn-installed
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)-$extra"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extra,test]"
    echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
