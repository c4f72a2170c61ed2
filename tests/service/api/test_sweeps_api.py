"""The sweeps API (ARCHITECTURE §3.6) on SQLite and on Postgres, with the fake launcher."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.api.helpers import auth, small_spec, submit


def test_submit_stores_the_sweep_and_its_method_aware_trials(
    client: TestClient, tenant_token: str
) -> None:
    sweep = submit(client, tenant_token)
    assert sweep["status"] == "pending"
    assert sweep["total_trials"] == 5  # erm once, fl over 2 ε × 2 dual lr
    assert sweep["trial_counts"] == {"pending": 5}
    assert sweep["spec"]["train"]["epochs"] == 3
    assert sweep["spec"]["train"]["batch_size"]  # stored with its defaults filled in
    got = client.get(f"/api/v1/sweeps/{sweep['id']}", headers=auth(tenant_token)).json()
    assert got["id"] == sweep["id"]
    assert got["best_trial"] is None


def test_an_invalid_spec_is_a_422_naming_the_field_and_the_valid_choices(
    client: TestClient, tenant_token: str
) -> None:
    response = client.post(
        "/api/v1/sweeps",
        json={"spec": small_spec(methods=["erm", "feasible"])},
        headers=auth(tenant_token),
    )
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "spec.methods.1"
    assert "valid methods: erm, penalty, cserm, fl, rfl, alm, sal" in body["errors"][0]["message"]
    assert "spec.methods.1" in body["detail"]


def test_an_unknown_grid_key_and_a_missing_spec_are_422_not_500(
    client: TestClient, tenant_token: str
) -> None:
    bad_grid = small_spec(grid={"epsilon": [0.1], "learning_rate": [0.1]})
    response = client.post("/api/v1/sweeps", json={"spec": bad_grid}, headers=auth(tenant_token))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("spec.grid")
    assert client.post("/api/v1/sweeps", json={}, headers=auth(tenant_token)).status_code == 422
    not_json = client.post(
        "/api/v1/sweeps",
        content=b"{not json",
        headers={**auth(tenant_token), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422


def test_the_same_idempotency_key_and_body_give_one_sweep(
    client: TestClient, tenant_token: str
) -> None:
    headers = {**auth(tenant_token), "Idempotency-Key": "k-1"}
    first = client.post("/api/v1/sweeps", json={"spec": small_spec()}, headers=headers)
    again = client.post("/api/v1/sweeps", json={"spec": small_spec()}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    listed = client.get("/api/v1/sweeps", headers=auth(tenant_token)).json()["items"]
    assert len(listed) == 1


def test_the_same_idempotency_key_with_another_body_is_a_409(
    client: TestClient, tenant_token: str
) -> None:
    headers = {**auth(tenant_token), "Idempotency-Key": "k-2"}
    client.post("/api/v1/sweeps", json={"spec": small_spec()}, headers=headers)
    other = client.post("/api/v1/sweeps", json={"spec": small_spec(name="other")}, headers=headers)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]


def test_idempotency_keys_belong_to_their_tenant(
    client: TestClient, tenant_token: str, other_token: str
) -> None:
    a = client.post(
        "/api/v1/sweeps",
        json={"spec": small_spec()},
        headers={**auth(tenant_token), "Idempotency-Key": "shared"},
    )
    b = client.post(
        "/api/v1/sweeps",
        json={"spec": small_spec()},
        headers={**auth(other_token), "Idempotency-Key": "shared"},
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_sweeps_are_listed_newest_first_with_a_cursor(
    client: TestClient, tenant_token: str
) -> None:
    ids = [submit(client, tenant_token, small_spec(name=f"s{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/sweeps", params=params, headers=auth(tenant_token)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_sweeps_filter_by_status(client: TestClient, tenant_token: str) -> None:
    kept = submit(client, tenant_token)["id"]
    gone = submit(client, tenant_token, small_spec(name="b"))["id"]
    client.post(f"/api/v1/sweeps/{gone}/cancel", headers=auth(tenant_token))
    pending = client.get(
        "/api/v1/sweeps", params={"status": "pending"}, headers=auth(tenant_token)
    ).json()
    assert [s["id"] for s in pending["items"]] == [kept]
    bad = client.get("/api/v1/sweeps", params={"status": "done"}, headers=auth(tenant_token))
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "status"


def test_a_cursor_that_the_service_did_not_issue_is_a_422(
    client: TestClient, tenant_token: str
) -> None:
    response = client.get("/api/v1/sweeps", params={"cursor": "%%%"}, headers=auth(tenant_token))
    assert response.status_code == 422
    assert "cursor" in response.json()["detail"]


def test_trials_page_in_expansion_order_and_filter_by_status(
    client: TestClient, tenant_token: str
) -> None:
    sweep = submit(client, tenant_token)
    url = f"/api/v1/sweeps/{sweep['id']}/trials"
    first = client.get(url, params={"limit": 3}, headers=auth(tenant_token)).json()
    rest = client.get(
        url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=auth(tenant_token)
    ).json()
    trials = first["items"] + rest["items"]
    assert rest["next_cursor"] is None
    assert [t["position"] for t in trials] == list(range(5))
    assert [t["method"] for t in trials].count("fl") == 4
    assert {t["status"] for t in trials} == {"pending"}
    assert all(t["attempts"] == 0 and t["mlflow_run_id"] is None for t in trials)
    none_running = client.get(url, params={"status": "running"}, headers=auth(tenant_token))
    assert none_running.json() == {"items": [], "next_cursor": None}


def test_cancelling_a_pending_sweep_cancels_it_and_its_trials_idempotently(
    client: TestClient, tenant_token: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    first = client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token))
    again = client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=auth(tenant_token))
    assert first.status_code == again.status_code == 202
    assert again.json()["status"] == "cancelled"
    assert again.json()["trial_counts"] == {"cancelled": 5}


def test_retry_needs_a_finished_sweep(client: TestClient, tenant_token: str) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    response = client.post(f"/api/v1/sweeps/{sweep_id}/retry", headers=auth(tenant_token))
    assert response.status_code == 409
    assert "pending" in response.json()["detail"]


def test_the_catalog_lists_tasks_with_schemas_methods_with_grid_keys_and_kinds(
    client: TestClient, tenant_token: str
) -> None:
    catalog = client.get("/api/v1/catalog", headers=auth(tenant_token)).json()
    tasks = {t["name"]: t for t in catalog["tasks"]}
    assert {"two_moons", "digits", "iris_svm"} <= set(tasks)
    assert tasks["digits"]["parameters"]["type"] == "object"
    assert "hidden" in tasks["digits"]["parameters"]["properties"]
    methods = {m["name"]: m for m in catalog["methods"]}
    assert {"epsilon", "alpha", "dual_lr"} <= set(methods["rfl"]["grid_keys"])
    assert "group_rate" in {k["name"] for k in catalog["constraint_kinds"]}


def test_an_oversized_body_is_a_413_not_a_memory_spike(
    client: TestClient, tenant_token: str
) -> None:
    huge = {"spec": small_spec(name="x" * (9 * 1024 * 1024))}
    response = client.post("/api/v1/sweeps", json=huge, headers=auth(tenant_token))
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
