"""`make test` runs the Ray tests on one xdist worker (group "ray"): two local Ray runtimes on
two cores starve each other. pytest 9.2 broke pytest-xdist 3.8's grouping without a word
(Node.nodeid no longer reads the ``_nodeid`` that loadgroup rewrites) and the suite took
twice as long, with timeouts; this checks that the grouping still holds with the installed
versions."""

import re
import subprocess
import sys
from pathlib import Path

GROUPED = """
import pytest
pytestmark = [pytest.mark.xdist_group("ray")]

@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    pass
"""


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"test_{name}.py").write_text(GROUPED)
    (tmp_path / "test_free.py").write_text("def test_free():\n    pass\n")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v"),
            *("-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = set(re.findall(r"\[(gw\d)\] .* PASSED .*test_grouped", done.stdout))
    ran = len(re.findall(r"PASSED .*test_grouped", done.stdout))
    assert ran == 8, done.stdout
    assert len(workers) == 1, f"the group ran on {sorted(workers)}:\n{done.stdout}"
