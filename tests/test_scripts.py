"""Every script answers --help at once: without importing TensorFlow (seconds, and its log
banner before the usage)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# import tensorflow / keras raises ImportError in the child: --help must not need them
NO_TENSORFLOW = """
import runpy, sys
sys.modules["tensorflow"] = sys.modules["keras"] = None
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])
script = sys.argv[1]
sys.argv = [script, "--help"]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py") if not p.name.startswith("_")))
def test_script_help_needs_no_tensorflow(script):
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(SCRIPTS / script)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower() or "python scripts/" in done.stdout, done.stdout[:500]
