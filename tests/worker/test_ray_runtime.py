"""How a driver reaches Ray (``worker.ray_runtime``): the address it joins, the fallback to a
runtime of its own when the stack's head is gone, and units that reuse a worker process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune

from dualtune.worker import ray_runtime
from dualtune.worker.ray_runtime import connect_ray, job_env, ray_address, tune_config_overrides
from tests.ports import free_port


def test_the_address_is_the_argument_then_rays_job_then_dualtunes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("DUALTUNE_RAY_ADDRESS", raising=False)
    assert ray_address(None) is None
    monkeypatch.setenv("DUALTUNE_RAY_ADDRESS", "127.0.0.1:1")
    assert ray_address(None) == "127.0.0.1:1"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a driver running as a Ray job
    assert ray_address(None) == "10.0.0.1:6379"
    assert ray_address("ray://head:10001") == "ray://head:10001"


def test_workers_of_a_joined_runtime_get_the_drivers_env_but_not_rays_or_the_token() -> None:
    env = job_env(
        {"PATH": "/bin", "FROM_SPEC": "1", "RAY_AUTH_MODE": "token", "DUALTUNE_WORKER_TOKEN": "t"}
    )
    assert env == {"PATH": "/bin", "FROM_SPEC": "1"}


def test_a_remote_address_that_does_not_answer_is_an_error_not_a_local_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_runtime, "CONNECT_PROBE_S", 0.3)
    if ray.is_initialized():
        pytest.skip("a Ray runtime of another test is up in this process")
    with pytest.raises(ConnectionError, match=r"203\.0\.113\.1:6379"):
        connect_ray("203.0.113.1:6379")  # TEST-NET-3: nobody answers
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def fallback_runtime() -> Iterator[str]:
    """What a driver does when the stack's head it was told of is gone: a runtime of its own
    (one CPU, from DUALTUNE_NUM_CPUS)."""
    gone = f"127.0.0.1:{free_port()}"
    saved = os.environ.get("DUALTUNE_NUM_CPUS")
    os.environ["DUALTUNE_NUM_CPUS"] = "1"
    try:
        connect_ray(gone)
    finally:
        if saved is None:
            os.environ.pop("DUALTUNE_NUM_CPUS")
        else:
            os.environ["DUALTUNE_NUM_CPUS"] = saved
    yield gone
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_a_head_that_is_gone_leaves_the_driver_a_runtime_of_its_own(
    fallback_runtime: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert ray.is_initialized()
    assert ray.cluster_resources().get("CPU") == 1.0
    with caplog.at_level(logging.INFO, logger="dualtune.worker.ray_runtime"):
        connect_ray(fallback_runtime)  # initialised already: used as it is
    assert caplog.text == ""


def _unit(config: dict[str, Any]) -> None:
    tune.report({"pid": os.getpid()})


def _pids(storage: Path, **tune_config: Any) -> list[int]:
    grid = tune.Tuner(
        _unit,
        param_space={"unit": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    ).fit()
    return [int(grid[i].metrics["pid"]) for i in range(len(grid))]


@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_units_after_the_first_reuse_its_worker_process(
    fallback_runtime: str, tmp_path: Path
) -> None:
    del fallback_runtime
    assert len(set(_pids(tmp_path, **tune_config_overrides()))) == 1  # one CPU, one process
    assert len(set(_pids(tmp_path))) == 3  # Tune's default: a process per unit
