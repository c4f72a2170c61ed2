"""A worker crash point exits the process where it is named, once per unit: the retried
process goes on past it. The driver's worker variables reach a unit's process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dualtune.worker.crash_points import AFTER_LOG, CRASH_ENV, CRASH_STATUS, crash_point
from dualtune.worker.unit_settings import WorkerEnvironment

SCRIPT = """
import sys
from pathlib import Path
from dualtune.worker.crash_points import crash_point
for epoch in (1, 2, 3, 4):
    crash_point("after_log", epoch, Path(sys.argv[1]))
    print(epoch, flush=True)
"""


def _unit(unit_dir: Path, crash_at: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CRASH_ENV: crash_at}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(unit_dir)], env=env, capture_output=True, text=True
    )


def test_a_unit_crashes_once_at_the_named_epoch_and_its_retry_goes_on(tmp_path: Path) -> None:
    first = _unit(tmp_path / "unit", f"{AFTER_LOG}:3")
    assert (first.returncode, first.stdout.split()) == (CRASH_STATUS, ["1", "2"])
    retry = _unit(tmp_path / "unit", f"{AFTER_LOG}:3")
    assert (retry.returncode, retry.stdout.split()) == (0, ["1", "2", "3", "4"])
    other = _unit(tmp_path / "another-unit", f"{AFTER_LOG}:3")
    assert other.returncode == CRASH_STATUS  # each unit crashes once


def test_unset_or_another_point_does_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    crash_point(AFTER_LOG, 3, tmp_path)
    monkeypatch.setenv(CRASH_ENV, "before_anything:3")
    crash_point(AFTER_LOG, 3, tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_drivers_worker_variables_are_applied_in_the_units_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CRASH_ENV, f"{AFTER_LOG}:2")
    carried = WorkerEnvironment.of_this_process()
    monkeypatch.delenv(CRASH_ENV)
    carried.apply()
    assert os.environ[CRASH_ENV] == f"{AFTER_LOG}:2"
    WorkerEnvironment().apply()  # a later sweep's unit in the same process, without it
    assert CRASH_ENV not in os.environ
