"""`python scripts/x.py` puts scripts/ first on sys.path; scripts/evaluate.py must not shadow the evaluate library."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_running_a_script_leaves_the_evaluate_library_importable(script):
    # Run the script the way `python scripts/<script>` does (its folder first on sys.path), then import evaluate.
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        f"sys.argv = [{str(ROOT / 'scripts' / script)!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "import evaluate\n"
        "print(evaluate.__file__)\n"
        "assert hasattr(evaluate, 'load'), evaluate.__file__\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scripts" not in Path(result.stdout.strip().splitlines()[-1]).parts
