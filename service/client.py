"""``dualtune.Client``: the service's REST API (ARCHITECTURE §3.6) from Python, and the CLI's
one HTTP client.

It answers with the API's own public models (``service.api.schemas``: pure pydantic) and
raises one error, ``ClientError``, carrying the HTTP status and the per-field errors. A spec is
validated here first, so a bad one fails with a ``SpecError`` before any request. Importing it
imports neither torch, Ray, MLflow, FastAPI nor SQLAlchemy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from dualtune.core.spec import SweepSpec, load_spec
from dualtune.core.spec.errors import FieldError
from dualtune.core.states import SWEEP_FINAL
from dualtune.service.api.schemas import (
    CatalogPublic,
    ReportPublic,
    SweepPage,
    SweepPublic,
    SweepStatus,
    TrialPage,
    TrialPublic,
    TrialStatus,
)

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATES = SWEEP_FINAL
SpecSource = SweepSpec | Mapping[str, Any] | str | Path
"""What ``submit`` takes: a spec, its mapping, its YAML/JSON text, or a file's path."""

ModelT = TypeVar("ModelT", bound=BaseModel)


class ClientError(Exception):
    """A request the service refused or could not answer.

    ``status`` is the HTTP status (``None`` when there was no answer), ``detail`` the
    service's message and ``errors`` its per-field errors (``{field, message}``, for a 422);
    ``str(error)`` is all of it, one line per field. ``unreachable``: the service did not
    answer at all (not running, wrong URL, network down)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: list[FieldError] | None = None,
        unreachable: bool = False,
    ) -> None:
        self.status = status
        self.unreachable = unreachable
        self.detail = message
        self.errors: list[FieldError] = list(errors or [])
        lines = [f"{status}: {message}" if status is not None else message]
        # One line per field, unless the message already names the only one.
        if len(self.errors) > 1 or any(e["field"] not in message for e in self.errors):
            lines += [f"  {e['field']}: {e['message']}" for e in self.errors]
        super().__init__("\n".join(lines))


def default_url() -> str:
    """``DUALTUNE_URL``, else the embedded stack's ``http://127.0.0.1:8000``."""
    return (os.environ.get("DUALTUNE_URL") or DEFAULT_URL).rstrip("/")


def default_token(data_dir: Path | None = None) -> str | None:
    """``DUALTUNE_TOKEN``, else the ``token`` file ``dualtune up`` writes in the data dir
    (``DUALTUNE_DATA_DIR``, else ``~/.dualtune``); ``None`` when there is neither."""
    token = os.environ.get("DUALTUNE_TOKEN")
    if token:
        return token.strip()
    base = data_dir or Path(os.environ.get("DUALTUNE_DATA_DIR", Path.home() / ".dualtune"))
    path = Path(base) / "token"
    return path.read_text().strip() if path.is_file() else None


def spec_body(spec: SpecSource) -> dict[str, Any]:
    """The JSON the API takes for ``spec``, validated here (``SpecError`` if it is wrong)."""
    loaded = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    return loaded.model_dump(mode="json")


class Client:
    """A dualtune service's REST API.

    ``url`` and ``token`` default as the CLI's (``DUALTUNE_URL``; ``DUALTUNE_TOKEN``, else
    the data dir's ``token``). ``transport`` replaces the network (``httpx.MockTransport``
    in tests). Use it as a context manager, or ``close()`` it.

    >>> with dualtune.Client() as client:  # doctest: +SKIP
    ...     sweep = client.submit("examples/fl_vs_erm.yaml")
    ...     client.wait(sweep.id)
    ...     print(client.report(sweep.id).methods)
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.token = token if token is not None else default_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    def __repr__(self) -> str:
        return f"dualtune.Client({self.url!r})"

    # -- sweeps ------------------------------------------------------------------------------

    def submit(self, spec: SpecSource, idempotency_key: str | None = None) -> SweepPublic:
        """Submit a sweep. The same ``idempotency_key`` with the same spec returns the same
        sweep (with another spec: a 409)."""
        body = spec_body(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._parse(
            SweepPublic, self._send("POST", "/api/v1/sweeps", json={"spec": body}, headers=headers)
        )

    def get(self, sweep_id: str) -> SweepPublic:
        """A sweep: status, spec, trial counts, best trial, MLflow links."""
        return self._parse(SweepPublic, self._send("GET", f"/api/v1/sweeps/{sweep_id}"))

    def sweeps(
        self, status: SweepStatus | None = None, *, limit: int = 50, cursor: str | None = None
    ) -> SweepPage:
        """A page of your sweeps, newest first; pass ``next_cursor`` for the next one."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._parse(SweepPage, self._send("GET", "/api/v1/sweeps", params=params))

    def trials(self, sweep_id: str, status: TrialStatus | None = None) -> list[TrialPublic]:
        """Every trial of the sweep (in the spec's order), or those in ``status``."""
        trials: list[TrialPublic] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = self._parse(
                TrialPage,
                self._send("GET", f"/api/v1/sweeps/{sweep_id}/trials", params=params),
            )
            trials += page.items
            cursor = page.next_cursor
            if cursor is None:
                return trials

    def report(self, sweep_id: str) -> ReportPublic:
        """Per method, the best trial by the spec's selection and its metrics against ERM."""
        return self._parse(ReportPublic, self._send("GET", f"/api/v1/sweeps/{sweep_id}/report"))

    def cancel(self, sweep_id: str) -> SweepPublic:
        """Stop the sweep (idempotent); unfinished trials become cancelled."""
        return self._parse(SweepPublic, self._send("POST", f"/api/v1/sweeps/{sweep_id}/cancel"))

    def retry(self, sweep_id: str) -> SweepPublic:
        """Run a finished sweep's failed, diverged and cancelled trials again."""
        return self._parse(SweepPublic, self._send("POST", f"/api/v1/sweeps/{sweep_id}/retry"))

    def logs(self, sweep_id: str, tail: int = 200) -> str:
        """The last ``tail`` lines of the sweep's driver output (its latest launch)."""
        return self._send("GET", f"/api/v1/sweeps/{sweep_id}/logs", params={"tail": tail}).text

    def wait(
        self,
        sweep_id: str,
        on_update: Callable[[SweepPublic], None] | None = None,
        *,
        interval_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> SweepPublic:
        """Poll until the sweep is final and return it; ``on_update`` sees every state. A
        service that stops answering in between (a restart) is waited out; past
        ``timeout_s`` this raises ``ClientError``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                sweep: SweepPublic | None = self.get(sweep_id)
            except ClientError as exc:
                if not exc.unreachable:
                    raise
                sweep = None
            if sweep is not None:
                if on_update is not None:
                    on_update(sweep)
                if sweep.status in FINAL_STATES:
                    return sweep
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"sweep {sweep_id} did not finish in {timeout_s:g} s")
            time.sleep(interval_s)

    # -- the service -------------------------------------------------------------------------

    def catalog(self) -> CatalogPublic:
        """Tasks (with parameter schemas and sources), methods, constraint kinds, grid keys,
        and the plugins that failed to load."""
        return self._parse(CatalogPublic, self._send("GET", "/api/v1/catalog"))

    def ready(self) -> bool:
        """Whether the service answers and is ready (its database, at a schema it runs on);
        never raises. The launcher's health is in ``/healthz``, not a readiness gate."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- HTTP --------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the dualtune service at {self.url} ({exc}); start it with "
                "`dualtune up`, or point DUALTUNE_URL at it",
                unreachable=True,
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _parse(self, model: type[ModelT], response: httpx.Response) -> ModelT:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ClientError(
                f"the service at {self.url} answered {response.request.url.path} with "
                f"something that is not a {model.__name__} (another dualtune version?): "
                f"{exc.errors(include_url=False)[:3]}",
                status=response.status_code,
            ) from None


def _error(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ClientError(
            response.text.strip() or response.reason_phrase, status=response.status_code
        )
    errors: list[FieldError] = [
        {"field": str(e.get("field", "")), "message": str(e.get("message", ""))}
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    return ClientError(
        str(body.get("detail", response.text)), status=response.status_code, errors=errors
    )


__all__ = ["Client", "ClientError", "SpecSource", "default_token", "default_url", "spec_body"]
