"""Bad input is a 4xx, always (issue 14): each hostile input of the issue, on SQLite and on
Postgres, is refused before the database sees it, with an error naming the field. A bad
event inside a batch is refused alone (200, in ``rejected``); the others are applied."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dualtune.service.auth import new_worker_token
from dualtune.service.db.repository import Repository
from tests.service.api.helpers import auth, small_spec, submit


@dataclass(frozen=True)
class Driver:
    """A submitted sweep (5 trials) with a launch recorded, as the reconciler leaves it for
    its driver, and that driver's token."""

    sweep_id: str
    token: str
    trial_ids: list[str]


@pytest.fixture
def driver(client: TestClient, tenant_token: str, repo: Repository) -> Driver:
    sweep_id = submit(client, tenant_token)["id"]
    token = new_worker_token()
    assert [s.id for s in repo.claim("hostile-test", lease_s=3600)] == [sweep_id]
    repo.begin_launch(sweep_id, "hostile-test", token, launch=1, submission_id="hostile-1")
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(tenant_token))
    return Driver(sweep_id, token, [t["trial_id"] for t in trials.json()["items"]])


def _json_text(body: dict[str, Any]) -> bytes:
    # json.dumps writes NaN and Infinity as Python's parser reads them back.
    return json.dumps(body, allow_nan=True).encode()


def _post_spec(client: TestClient, token: str, spec: dict[str, Any]) -> httpx.Response:
    return client.post(
        "/api/v1/sweeps",
        content=_json_text({"spec": spec}),
        headers={**auth(token), "Content-Type": "application/json"},
    )


def _with(path: str, value: Any) -> dict[str, Any]:
    """``small_spec()`` with ``value`` set at the dotted ``path``."""
    spec = small_spec()
    node = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


def _cursor(number: int) -> str:
    return base64.urlsafe_b64encode(str(number).encode()).decode().rstrip("=")


Call = Callable[[TestClient, str, Driver], httpx.Response]

REFUSED: dict[str, tuple[Call, str]] = {
    "NUL in a sweep's name": (
        lambda c, t, d: _post_spec(c, t, _with("name", "moons\x00fl")),
        "spec.name",
    ),
    "lr: Infinity in a spec (JSON text)": (
        lambda c, t, d: _post_spec(c, t, _with("train.optimizer", {"lr": float("inf")})),
        "spec.train.optimizer.lr",
    ),
    "lr: -Infinity on a grid axis": (
        lambda c, t, d: _post_spec(c, t, _with("grid.lr", [0.1, float("-inf")])),
        "spec.grid.lr.1",
    ),
    "NaN in the dual section": (
        lambda c, t, d: _post_spec(c, t, _with("dual.init", float("nan"))),
        "spec.dual.init",
    ),
    "NUL in a key of the spec": (
        lambda c, t, d: _post_spec(c, t, _with("task.params.x\x00", 1)),
        "spec.task.params.x\\u0000",
    ),
    "NUL in a task parameter's value": (
        lambda c, t, d: _post_spec(c, t, _with("task.params", {"noise": "\x00"})),
        "spec.task.params.noise",
    ),
    "epochs: 10**20": (
        lambda c, t, d: _post_spec(c, t, _with("train.epochs", 10**20)),
        "spec.train.epochs",
    ),
    "epochs: 10**9 (fits 64 bits, beyond the bound)": (
        lambda c, t, d: _post_spec(c, t, _with("train.epochs", 10**9)),
        "spec.train.epochs",
    ),
    "a seed past 2**32": (
        lambda c, t, d: _post_spec(c, t, _with("grid.seed", [0, 2**40])),
        "spec.grid.seed",
    ),
    "an ε of 10**400 (overflows a float)": (
        lambda c, t, d: _post_spec(c, t, _with("grid.epsilon", [10**400])),
        "spec.grid.epsilon.0",
    ),
    "GET /sweeps/a%00b": (
        lambda c, t, d: c.get("/api/v1/sweeps/a%00b", headers=auth(t)),
        "sweep_id",
    ),
    "a 10 kB sweep id": (
        lambda c, t, d: c.get(f"/api/v1/sweeps/sw-{'a' * 10_000}/trials", headers=auth(t)),
        "sweep_id",
    ),
    "the driver's GET /worker/sweeps/a%00b": (
        lambda c, t, d: c.get("/api/v1/worker/sweeps/a%00b", headers=auth(d.token)),
        "sweep_id",
    ),
    "a cursor decoding to a 40-digit number": (
        lambda c, t, d: c.get(
            "/api/v1/sweeps", params={"cursor": _cursor(10**39 + 7)}, headers=auth(t)
        ),
        "cursor",
    ),
    "a trials cursor decoding to 2**63": (
        lambda c, t, d: c.get(
            f"/api/v1/sweeps/{d.sweep_id}/trials",
            params={"cursor": _cursor(2**63)},
            headers=auth(t),
        ),
        "cursor",
    ),
    "limit: 10**30": (
        lambda c, t, d: c.get("/api/v1/sweeps", params={"limit": 10**30}, headers=auth(t)),
        "limit",
    ),
    "an event batch of generation 10**30": (
        lambda c, t, d: c.post(
            f"/api/v1/worker/sweeps/{d.sweep_id}/events",
            json={"generation": 10**30, "events": []},
            headers=auth(d.token),
        ),
        "generation",
    ),
    "NUL in the batch's MLflow parent run id": (
        lambda c, t, d: c.post(
            f"/api/v1/worker/sweeps/{d.sweep_id}/events",
            json={"generation": 0, "events": [], "mlflow_parent_run_id": "r\x00"},
            headers=auth(d.token),
        ),
        "mlflow_parent_run_id",
    ),
    "NUL in the driver's failure message": (
        lambda c, t, d: c.post(
            f"/api/v1/worker/sweeps/{d.sweep_id}/failure",
            json={"generation": 0, "error": "boom\x00"},
            headers=auth(d.token),
        ),
        "error",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_hostile_input_is_a_4xx_naming_the_field(
    client: TestClient, tenant_token: str, driver: Driver, case: str
) -> None:
    call, field = REFUSED[case]
    response = call(client, tenant_token, driver)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert field in [e["field"] for e in body["errors"]], body
    assert field in body["detail"]
    assert "Traceback" not in response.text


def _event(trial_id: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "trial_id": trial_id,
        "status": "succeeded",
        "attempt": 1,
        "metrics": {"val/loss_mean": 0.25},
        "mlflow_run_id": None,
        "error": None,
    }
    event.update(overrides)
    return event


def _post_events(client: TestClient, d: Driver, events: list[Any]) -> httpx.Response:
    return client.post(
        f"/api/v1/worker/sweeps/{d.sweep_id}/events",
        content=_json_text({"generation": 0, "events": events}),
        headers={**auth(d.token), "Content-Type": "application/json"},
    )


def _states(client: TestClient, token: str, sweep_id: str) -> dict[str, str]:
    page = client.get(f"/api/v1/sweeps/{sweep_id}/trials", headers=auth(token)).json()
    return {t["trial_id"]: t["status"] for t in page["items"]}


POISONED: dict[str, tuple[Callable[[str], Any], str]] = {
    "a NaN metric": (
        lambda tid: _event(tid, metrics={"val/loss_mean": float("nan")}),
        "events.1.metrics.val/loss_mean",
    ),
    "an Infinity metric": (
        lambda tid: _event(tid, metrics={"train/loss": float("inf")}),
        "events.1.metrics.train/loss",
    ),
    "attempt: 10**30": (lambda tid: _event(tid, attempt=10**30), "events.1.attempt"),
    "NUL in the error": (
        lambda tid: _event(tid, status="failed", error="oom\x00"),
        "events.1.error",
    ),
    "NUL in a metric's name": (
        lambda tid: _event(tid, metrics={"val/\x00": 1.0}),
        "events.1.metrics.val/\\u0000",
    ),
    "a status only the service sets": (
        lambda tid: _event(tid, status="pending"),
        "events.1.status",
    ),
    "a trial id of 10 kB": (lambda tid: _event("t" * 10_000), "events.1.trial_id"),
    "not an object": (lambda tid: [tid], "events.1"),
}


@pytest.mark.parametrize("case", list(POISONED), ids=list(POISONED))
def test_a_poisoned_event_is_rejected_alone_and_the_others_land(
    client: TestClient, tenant_token: str, driver: Driver, case: str
) -> None:
    make, field = POISONED[case]
    first, poisoned, last = driver.trial_ids[:3]
    response = _post_events(
        client, driver, [_event(first), make(poisoned), _event(last, status="running")]
    )
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["changed"] == 2
    [rejected] = ack["rejected"]
    assert rejected["index"] == 1
    assert rejected["reason"].startswith(field + ":"), rejected
    states = _states(client, tenant_token, driver.sweep_id)
    assert (states[first], states[poisoned], states[last]) == ("succeeded", "pending", "running")


def test_schema_and_repository_rejections_merge_by_position_in_the_batch(
    client: TestClient, tenant_token: str, driver: Driver
) -> None:
    """The repository numbers its rejections within the events it was given; the answer
    numbers every rejection by its position in the batch the driver sent."""
    done, good = driver.trial_ids[:2]
    assert _post_events(client, driver, [_event(done)]).json() == {"changed": 1, "rejected": []}
    ack = _post_events(
        client,
        driver,
        [
            _event(done, metrics={"val/loss_mean": float("nan")}),  # 0: schema
            _event("no-such-trial"),  # 1: repository (unknown trial)
            _event(good),  # 2: applied
            _event(done, status="failed", error="late"),  # 3: repository (final is final)
        ],
    ).json()
    assert ack["changed"] == 1
    assert [(r["index"], r["trial_id"]) for r in ack["rejected"]] == [
        (0, done),
        (1, "no-such-trial"),
        (3, done),
    ]
    assert "no-such-trial" in ack["rejected"][1]["reason"]
    assert _states(client, tenant_token, driver.sweep_id)[done] == "succeeded"


def test_a_spec_of_a_trillion_trials_is_refused_in_milliseconds(
    client: TestClient, tenant_token: str
) -> None:
    """The server's cap is counted, never expanded: 10**12 trials would never return."""
    axis = [round(0.001 * (i + 1), 6) for i in range(1000)]
    spec = small_spec(
        methods=["erm", "alm"],
        grid={"epsilon": axis, "dual_lr": axis, "rho": axis, "seed": list(range(1000))},
        limits={"max_trials": 10_000_000},
    )
    started = time.perf_counter()
    response = _post_spec(client, tenant_token, spec)
    elapsed = time.perf_counter() - started
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "spec.grid"
    assert "1000000001000 trials" in error["message"]  # alm: 1000**4, erm: 1000 seeds
    assert "cap of 10000 trials (DUALTUNE_MAX_TRIALS)" in error["message"]
    assert elapsed < 2.0  # the JSON of 4000 values and the checks; no expansion


def test_the_cap_is_the_servers_setting(client: TestClient, tenant_token: str) -> None:
    client.app.state.settings = client.app.state.settings.model_copy(update={"max_trials": 4})
    response = _post_spec(client, tenant_token, small_spec())  # 5 trials
    assert response.status_code == 422
    assert "cap of 4 trials" in response.json()["errors"][0]["message"]
    client.app.state.settings = client.app.state.settings.model_copy(update={"max_trials": 5})
    assert _post_spec(client, tenant_token, small_spec()).status_code == 201


def test_each_rejected_event_is_counted_in_the_metrics_and_logged(
    client: TestClient, driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    first, poisoned = driver.trial_ids[:2]
    bad = _event(poisoned, metrics={"val/loss_mean": float("nan")})
    with caplog.at_level("WARNING", logger="dualtune.api.worker"):
        _post_events(client, driver, [_event(first), bad, _event("no-such-trial")])
    assert "dualtune_events_rejected_total 2.0" in client.get("/metrics").text
    logged = [r.getMessage() for r in caplog.records if r.name == "dualtune.api.worker"]
    assert len(logged) == 2
    assert f"sweep {driver.sweep_id}: event 1 (trial {poisoned}) rejected: events.1" in logged[0]
