"""schemathesis against a real ``dualtune serve`` (issue 14, "Must show"): requests generated
from the service's own OpenAPI schema, fitting it and breaking it, on every operation
(tenant and driver routes) and as stateful sequences along the links schemathesis infers
(``POST /sweeps`` → the routes that take its ``id``), on SQLite and on Postgres. No response
may be a 5xx.

The server is the console script in a child process, with its settings from the environment
and its own reconciler running (the fake launcher: ``DUALTUNE_LAUNCHER=fake`` with
``DUALTUNE_TESTING=1``). The driver routes need a driver's token: this process seeds it
through the repository (a sweep claimed by ``fuzz-seed`` for a day and a launch recorded),
so the server's reconciler leaves that sweep alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Flaky, Unsatisfiable
from schemathesis.generation import GenerationMode

from dualtune.service.auth import new_tenant_token, new_worker_token
from dualtune.service.db.engine import make_engine
from dualtune.service.db.repository import Repository
from dualtune.service.usecases.sweeps import submit_sweep
from tests.ports import free_port
from tests.scratch_db import empty_database
from tests.service.api.helpers import small_spec

pytestmark = pytest.mark.slow

EXAMPLES = 200
"""Examples per operation and generation mode (the issue asks for at least 200)."""
STATEFUL_SCENARIOS = 60
DUALTUNE = Path(sys.executable).with_name("dualtune")


@dataclass
class Served:
    """A running ``dualtune serve`` and what the fuzzer sends it."""

    url: str
    tenant_token: str
    worker_token: str
    tenant_sweep: str
    """A sweep of the fuzzing tenant (its routes sometimes get this id)."""
    worker_sweep: str
    """Another tenant's sweep whose launch holds ``worker_token``."""
    log: Path
    calls: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def note(self, case: Any, response: Any) -> None:
        self.calls[case.operation.label] += 1
        if response.status_code >= 500:
            self.server_errors.append(
                f"{case.method} {case.formatted_path} {case.query or ''} "
                f"body={str(case.body)[:300]!r} -> {response.status_code}: {response.text[:300]}"
            )

    def prepare(self, case: Any, n: int) -> dict[str, str]:
        """The headers for ``case``; every other case of a route with a sweep id goes to a
        real sweep (its own tenant's, or the seeded driver's), so the fuzzer reaches the
        code behind the lookups."""
        driver = case.operation.path.startswith("/api/v1/worker")
        if n % 2 == 0 and isinstance(case.path_parameters, dict) and case.path_parameters:
            case.path_parameters["sweep_id"] = self.worker_sweep if driver else self.tenant_sweep
        return {"Authorization": f"Bearer {self.worker_token if driver else self.tenant_token}"}


def _seed(url: str) -> tuple[str, str, str, str]:
    """Tokens and sweeps: the fuzzing tenant's sweep, and another tenant's sweep with a
    launch recorded under a lease the server does not take over (``fuzz-seed``, a day)."""
    engine = make_engine(url)
    repo = Repository(engine)
    tenant_token, other_token, worker_token = (
        new_tenant_token(),
        new_tenant_token(),
        new_worker_token(),
    )
    tenant = repo.create_token("fuzz", tenant_token)
    other = repo.create_token("fuzz-driver", other_token)
    tenant_sweep, _ = submit_sweep(repo, tenant, small_spec("fuzz-tenant"), None)
    worker_sweep, _ = submit_sweep(repo, other, small_spec("fuzz-driver"), None)
    repo.claim("fuzz-seed", lease_s=86_400)
    repo.begin_launch(
        worker_sweep.id, "fuzz-seed", worker_token, launch=1, submission_id="fuzz-seed-1"
    )
    engine.dispose()
    return tenant_token, worker_token, tenant_sweep.id, worker_sweep.id


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dualtune serve exited ({server.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # a child process starting: nothing to wait on but its port
    pytest.fail(f"dualtune serve did not answer /healthz in 60 s:\n{log.read_text()}")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with empty_database(request.param, tmp, "fuzz") as url:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUALTUNE_")}
        env.update(
            DUALTUNE_DATABASE_URL=url,
            DUALTUNE_DATA_DIR=str(tmp),
            DUALTUNE_PORT=str(port),
            DUALTUNE_LAUNCHER="fake",
            DUALTUNE_TESTING="1",
            DUALTUNE_RECONCILE_INTERVAL_S="0.5",
        )
        subprocess.run([str(DUALTUNE), "db", "upgrade"], env=env, check=True, capture_output=True)
        tenant_token, worker_token, tenant_sweep, worker_sweep = _seed(url)
        log = tmp / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [str(DUALTUNE), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, server, log)
            yield Served(base, tenant_token, worker_token, tenant_sweep, worker_sweep, log)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _schema(served: Served) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


def _check(served: Served, what: str) -> None:
    tail = "\n".join(served.log.read_text(errors="replace").splitlines()[-80:])
    assert served.server_errors == [], (
        f"{what}: {len(served.server_errors)} responses 5xx:\n"
        + "\n".join(served.server_errors[:20])
        + f"\n--- serve log ---\n{tail}"
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(served: Served, mode: GenerationMode) -> None:
    """Every operation, with data that fits its schema and data that breaks it."""
    operations = [result.ok() for result in _schema(served).get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /api/v1/sweeps", "POST /api/v1/worker/sweeps/{sweep_id}/events"} <= labels
    assert len(operations) >= 15
    served.calls.clear()
    unsatisfiable = []
    n = iter(range(10**9))
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            headers = served.prepare(case, next(n))
            served.note(case, case.call(headers=headers, timeout=60))

        try:
            call()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing in this operation to break
            unsatisfiable.append(operation.label)
    _check(served, f"{mode.value} generation")
    # Where the schema leaves room for 200 distinct requests, 200 went out.
    parametrised = [
        op.label
        for op in operations
        if op.label not in unsatisfiable and (op.path_parameters or op.query or op.body)
    ]
    short = {
        label: served.calls[label] for label in parametrised if served.calls[label] < EXAMPLES
    }
    assert short == {}, f"fewer than {EXAMPLES} examples: {short}"


def test_no_stateful_sequence_gets_a_server_error(served: Served) -> None:
    """Sequences along the links schemathesis infers from the schema (``POST /sweeps`` →
    read, cancel, retry, report, the driver's routes on its id, ...). Submissions carry a
    valid spec, so the links have sweeps to follow; the links' other values are generated."""
    schema = _schema(served)
    machine = schema.as_state_machine()
    assert schema.statistic.transitions.total >= 20
    scenarios = [0]

    class Fuzz(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            # A fixed valid spec (same body, same answer), so the links have a sweep to
            # follow and a replayed scenario draws as the first run did.
            if case.operation.label == "POST /api/v1/sweeps":
                case.body = {"spec": small_spec("stateful")}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            driver = case.operation.path.startswith("/api/v1/worker")
            token = served.worker_token if driver else served.tenant_token
            return {"headers": {"Authorization": f"Bearer {token}"}, "timeout": 60}

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            served.note(case, response)

        def teardown(self) -> None:
            scenarios[0] += 1

    served.calls.clear()
    for _ in range(10):
        if scenarios[0] >= STATEFUL_SCENARIOS:
            break
        try:
            Fuzz.run(
                settings=settings(
                    max_examples=STATEFUL_SCENARIOS - scenarios[0],
                    stateful_step_count=8,
                    deadline=None,
                    database=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
            )
        except Flaky:
            # The server's state grows with every scenario, so a replay can find other
            # links to follow; schemathesis's own runner goes on the same way.
            continue
    _check(served, "stateful")
    assert scenarios[0] >= STATEFUL_SCENARIOS
    assert served.calls["POST /api/v1/sweeps"] > 0
    followed = [label for label in served.calls if "{sweep_id}" in label]
    assert len(followed) >= 4, served.calls
