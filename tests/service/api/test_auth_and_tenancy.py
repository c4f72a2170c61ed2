"""R4: bearer tokens on every route but health; another tenant's sweep is a 404 everywhere;
only token hashes are stored."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.service.api.helpers import auth, small_spec, submit

SWEEP_ROUTES = [
    ("GET", "/api/v1/sweeps/{id}"),
    ("GET", "/api/v1/sweeps/{id}/trials"),
    ("GET", "/api/v1/sweeps/{id}/report"),
    ("GET", "/api/v1/sweeps/{id}/logs"),
    ("POST", "/api/v1/sweeps/{id}/cancel"),
    ("POST", "/api/v1/sweeps/{id}/retry"),
]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/sweeps"),
        ("POST", "/api/v1/sweeps"),
        ("GET", "/api/v1/catalog"),
        *SWEEP_ROUTES,
    ],
)
@pytest.mark.parametrize("token", [None, "dt_not-a-real-token"])
def test_every_api_route_needs_a_known_token(
    client: TestClient, tenant_token: str, method: str, path: str, token: str | None
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    headers = auth(token) if token else {}
    response = client.request(
        method,
        path.format(id=sweep_id),
        headers=headers,
        json={"spec": small_spec()} if method == "POST" else None,
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_routes_are_open(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(("method", "path"), SWEEP_ROUTES)
def test_another_tenants_sweep_is_a_404_on_every_route(
    client: TestClient, tenant_token: str, other_token: str, method: str, path: str
) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    response = client.request(method, path.format(id=sweep_id), headers=auth(other_token))
    assert response.status_code == 404
    assert sweep_id in response.json()["detail"]
    missing = client.request(method, path.format(id="sw-000000000000"), headers=auth(other_token))
    assert missing.status_code == 404  # indistinguishable from a sweep that does not exist


def test_another_tenants_sweeps_are_not_listed(
    client: TestClient, tenant_token: str, other_token: str
) -> None:
    submit(client, tenant_token)
    assert client.get("/api/v1/sweeps", headers=auth(other_token)).json()["items"] == []


def test_a_tenant_token_cannot_act_as_a_driver(client: TestClient, tenant_token: str) -> None:
    sweep_id = submit(client, tenant_token)["id"]
    fetch = client.get(f"/api/v1/worker/sweeps/{sweep_id}", headers=auth(tenant_token))
    events = client.post(
        f"/api/v1/worker/sweeps/{sweep_id}/events",
        json={"generation": 0, "events": []},
        headers=auth(tenant_token),
    )
    assert fetch.status_code == events.status_code == 401


def test_only_token_hashes_are_stored(engine: Engine, tenant_token: str) -> None:
    with engine.connect() as c:
        stored = [tuple(r) for r in c.execute(text("SELECT token_hash, prefix FROM tokens"))]
    everything = repr(stored)
    assert tenant_token not in everything
    secret = tenant_token[12:]
    assert secret not in everything
    assert all(len(h) == 64 for h, _ in stored)
