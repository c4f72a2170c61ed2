"""A plugin that raises on import, installed next to the working ones (ARCHITECTURE §3.8): the
catalog (CLI and API) lists it with its error, a spec naming it is refused with a pointer to
the catalog, and every other task, the example plugin's included, keeps working. The broken
distribution is made at test time (a dist-info and a module on the path, no pip)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

import dualtune
from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS, plugin_errors
from dualtune.service.usecases.catalog import catalog

from .helpers import (
    BROKEN_DIST,
    BROKEN_ERROR,
    DUALTUNE,
    credit_spec,
    env_with,
    write_broken_plugin,
)

BROKEN_SOURCES = {
    "broken_task": f"{BROKEN_DIST} 0.1 (broken_plugin:TASK)",
    "broken_kind": f"{BROKEN_DIST} 0.1 (broken_plugin:KIND)",
}


def rediscover() -> None:
    TASKS.reload()
    CONSTRAINT_KINDS.reload()
    catalog.cache_clear()


@pytest.fixture
def broken_installed(tmp_path: Path) -> Iterator[Path]:
    """The broken distribution on this process's path, the registries rediscovered; both
    undone afterwards."""
    site = str(write_broken_plugin(tmp_path / "site"))
    sys.path.insert(0, site)
    rediscover()
    try:
        yield Path(site)
    finally:
        sys.path.remove(site)
        rediscover()
    assert not plugin_errors()


def test_dualtune_catalog_lists_the_broken_plugin_with_its_error(tmp_path: Path) -> None:
    site = write_broken_plugin(tmp_path / "site")
    done = subprocess.run(
        [DUALTUNE, "catalog"], capture_output=True, text=True, env=env_with(site), timeout=120
    )
    assert done.returncode == 0, done.stderr
    failed = done.stdout.split("plugins that failed to load", 1)[1]
    for name, source in BROKEN_SOURCES.items():
        assert name in failed
        assert source in failed
    assert failed.count(BROKEN_ERROR) == 2
    listed = done.stdout.split("plugins that failed to load", 1)[0]
    for name in ("german_credit", "group_fnr", "two_moons", "group_rate"):
        assert name in listed


def test_validate_refuses_a_spec_on_the_broken_task_and_accepts_the_others(
    tmp_path: Path,
) -> None:
    site = write_broken_plugin(tmp_path / "site")
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(credit_spec()))
    bad.write_text(yaml.safe_dump(credit_spec(task={"name": "broken_task"})))

    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DUALTUNE, "validate", str(path)],
            capture_output=True,
            text=True,
            env=env_with(site),
            timeout=120,
        )

    ok = validate(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 trials" in ok.stdout
    refused = validate(bad)
    assert refused.returncode == 2
    message = " ".join((refused.stdout + refused.stderr).split())
    assert "unknown task 'broken_task'" in message
    assert "failed to load: broken_task, broken_kind" in message
    assert "`dualtune catalog` says why" in message


def test_the_api_lists_the_broken_plugin_and_everything_else_still_runs(
    broken_installed: Path, api: TestClient, one_thread: None
) -> None:
    body = api.get("/api/v1/catalog").json()
    errors = {e["name"]: e for e in body["plugin_errors"]}
    assert set(errors) == set(BROKEN_SOURCES)
    for name, source in BROKEN_SOURCES.items():
        assert errors[name]["source"] == source
        assert errors[name]["error"] == f"failed to import: {BROKEN_ERROR}"
    assert errors["broken_task"]["group"] == "dualtune.tasks"
    assert errors["broken_kind"]["group"] == "dualtune.constraints"
    tasks = {t["name"] for t in body["tasks"]}
    assert {"german_credit", "two_moons", "adult"} <= tasks
    assert "broken_task" not in tasks
    assert "group_fnr" in {k["name"] for k in body["constraint_kinds"]}

    refused = api.post("/api/v1/sweeps", json={"spec": credit_spec(task={"name": "broken_task"})})
    assert refused.status_code == 422
    (error,) = refused.json()["errors"]
    assert error["field"] == "spec.task.name"
    assert "failed to load: broken_task" in error["message"]
    accepted = api.post("/api/v1/sweeps", json={"spec": credit_spec()})
    assert accepted.status_code == 201, accepted.text

    # and a plugin task still trains here, next to the broken one
    spec = credit_spec(train={"epochs": 1, "batch_size": 128})
    fl = next(t for t in dualtune.load_spec(spec).trials() if t.method == "fl")
    assert dualtune.fit(fl).final["epoch"] == 1
