"""Specs and calls the API tests share."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def small_spec(name: str = "moons-fl", **overrides: Any) -> dict[str, Any]:
    """erm + fl over ε × dual lr: 1 + 2×2 = 5 trials."""
    spec: dict[str, Any] = {
        "name": name,
        "task": {"name": "two_moons"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": [0.1, 0.3], "dual_lr": [0.01, 0.1], "seed": 0},
        "train": {"epochs": 3},
    }
    spec.update(overrides)
    return spec


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(client: TestClient, token: str, spec: dict[str, Any] | None = None, **kw: Any) -> Any:
    response = client.post(
        "/api/v1/sweeps", json={"spec": spec or small_spec()}, headers=auth(token), **kw
    )
    assert response.status_code == 201, response.text
    return response.json()
