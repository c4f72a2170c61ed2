"""The CLI's HTTP client for the service (``DUALTUNE_URL``, ``DUALTUNE_TOKEN``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


class ClientError(Exception):
    """A request the service refused or could not answer, with its message."""


def default_url() -> str:
    return os.environ.get("DUALTUNE_URL", "http://127.0.0.1:8000").rstrip("/")


def default_token(data_dir: Path | None = None) -> str | None:
    token = os.environ.get("DUALTUNE_TOKEN")
    if token:
        return token.strip()
    base = data_dir or Path(os.environ.get("DUALTUNE_DATA_DIR", Path.home() / ".dualtune"))
    path = Path(base) / "token"
    return path.read_text().strip() if path.is_file() else None


class ServiceClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        return self._send(method, path, **kw).json()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the dualtune service at {self.url} ({exc}); start it with "
                "`dualtune up`, or point DUALTUNE_URL at it"
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("detail", response.text)
                errors = body.get("errors") or []
            except ValueError:
                message, errors = response.text, []
            lines = [f"{response.status_code}: {message}"]
            if len(errors) > 1:
                lines += [f"  {e['field']}: {e['message']}" for e in errors]
            raise ClientError("\n".join(lines))
        return response

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/api/v1/sweeps", json={"spec": spec}, headers=headers)

    def sweep(self, sweep_id: str) -> Any:
        return self._call("GET", f"/api/v1/sweeps/{sweep_id}")

    def sweeps(self, status: str | None = None, limit: int = 50) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._call("GET", "/api/v1/sweeps", params=params)

    def trials(self, sweep_id: str, status: str | None = None) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", f"/api/v1/sweeps/{sweep_id}/trials", params=params)
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def report(self, sweep_id: str) -> Any:
        return self._call("GET", f"/api/v1/sweeps/{sweep_id}/report")

    def cancel(self, sweep_id: str) -> Any:
        return self._call("POST", f"/api/v1/sweeps/{sweep_id}/cancel")

    def retry(self, sweep_id: str) -> Any:
        return self._call("POST", f"/api/v1/sweeps/{sweep_id}/retry")

    def logs(self, sweep_id: str, tail: int = 200) -> str:
        return self._send("GET", f"/api/v1/sweeps/{sweep_id}/logs", params={"tail": tail}).text

    def catalog(self) -> Any:
        return self._call("GET", "/api/v1/catalog")

    def wait(
        self,
        sweep_id: str,
        on_update: Callable[[Any], None] | None = None,
        *,
        interval_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Any:
        """Poll until the sweep is final; ``on_update`` sees each state. A service restart
        in between is waited out."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                sweep = self.sweep(sweep_id)
            except ClientError as exc:
                if "cannot reach" not in str(exc):
                    raise
                sweep = None
            if sweep is not None:
                if on_update is not None:
                    on_update(sweep)
                if sweep["status"] in FINAL:
                    return sweep
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"sweep {sweep_id} did not finish in {timeout_s:.0f} s")
            time.sleep(interval_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
