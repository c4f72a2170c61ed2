"""``dualtune.run_sweep``: ``dualtune run`` from Python, through the same driver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import dualtune
from dualtune.core.spec import SweepSpec
from dualtune.worker import driver
from dualtune.worker.sources import spec_sweep_id
from tests.worker.conftest import small_spec


@pytest.fixture
def driven(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The driver's calls, instead of running them."""
    calls: list[dict[str, Any]] = []

    def fake_driver(spec: SweepSpec, **kw: Any) -> str:
        calls.append({"spec": spec, **kw})
        return "result"

    monkeypatch.setattr(driver, "run_sweep", fake_driver)
    return calls


def test_it_hands_the_spec_to_the_driver_with_the_clis_defaults(
    driven: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    monkeypatch.setenv("DUALTUNE_RAY_ADDRESS", "ray://head:10001")
    spec = small_spec()
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    result: object = dualtune.run_sweep(path, storage_path=str(tmp_path / "tune"))
    assert result == "result"
    (call,) = driven
    assert call["spec"] == spec
    assert call["sweep_id"] == spec_sweep_id(spec)  # as `dualtune run`: resumable
    assert call["storage_path"] == tmp_path / "tune"
    assert call["tracking_uri"] == "sqlite:///elsewhere.db"
    assert call["ray_address"] == "ray://head:10001"
    assert call["show_progress"] is True


def test_arguments_override_the_defaults(
    driven: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DUALTUNE_RAY_ADDRESS", raising=False)
    spec = small_spec()
    dualtune.run_sweep(
        spec.model_dump(mode="json"),
        sweep_id="mine",
        tracking_uri="http://mlflow:5000",
        show_progress=False,
    )
    (call,) = driven
    assert (call["sweep_id"], call["tracking_uri"]) == ("mine", "http://mlflow:5000")
    assert (call["storage_path"], call["ray_address"], call["show_progress"]) == (
        None,
        None,
        False,
    )


def test_a_bad_spec_fails_before_ray_or_torch_is_imported() -> None:
    check = (
        "import sys, dualtune\n"
        "from dualtune.core.spec import SpecError\n"
        "try:\n"
        "    dualtune.run_sweep({'name': 'bad', 'task': {'name': 'two_moons'}})\n"
        "except SpecError as exc:\n"
        "    assert 'methods: Field required' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no SpecError')\n"
        "assert 'ray' not in sys.modules and 'torch' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
