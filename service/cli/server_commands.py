"""Commands that run the service: ``up`` (the embedded stack), ``serve`` (containers),
``demo``, ``db upgrade`` / ``db downgrade`` and ``token create``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import psutil
import typer
from pydantic import ValidationError
from sqlalchemy import Engine

from dualtune.core.spec import SpecError, load_spec
from dualtune.service.cli.client_commands import wait_and_report
from dualtune.service.cli.console import app, console, fail
from dualtune.service.client import Client, ClientError
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import Fit, downgrade, upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.errors import ServiceError, Unauthorized
from dualtune.service.launchers import Launcher, LocalLauncher
from dualtune.service.launchers.local_ray_head import LocalRayHead
from dualtune.service.service_log import log_to_stderr
from dualtune.service.settings import Settings
from dualtune.service.usecases.tokens import create_token, list_tokens, revoke_token

db_app = typer.Typer(help="The service's database.", no_args_is_help=True)
token_app = typer.Typer(help="Tenant tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="default: $DUALTUNE_DATA_DIR or ~/.dualtune"),
]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fl_vs_erm.yaml"


def _settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = dict(overrides)
    if data_dir is not None:
        values["data_dir"] = data_dir.expanduser().resolve()
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail(_settings_problems(exc)) from None


def _settings_problems(exc: ValidationError) -> str:
    """Each problem under the environment variable that sets it."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"DUALTUNE_{where.upper()}: {message}" if where else message)
    return "invalid settings: " + "; ".join(lines)


def _database(data_dir: Path | None) -> Engine:
    url = _settings(data_dir).resolved_database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return make_engine(url)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Bring the database (DUALTUNE_DATABASE_URL) to this version's schema. On a database
    one revision ahead (a newer release migrated it; this one runs on it) it does nothing."""
    engine = _database(data_dir)
    try:
        before = upgrade(engine)
    except ServiceError as exc:
        raise fail(exc.message) from None
    except Exception as exc:  # the DB's own message names the problem (host, auth, ...)
        raise fail(f"cannot upgrade {engine.url.render_as_string()}: {exc}") from None
    finally:
        engine.dispose()
    if before.fit is Fit.ONE_AHEAD:
        console.print(
            f"database at revision {before.current}, one ahead of this dualtune's "
            f"{before.head}, which runs on it: nothing to do",
            highlight=False,
        )
        return
    console.print(
        f"database at revision {before.head} (was {before.current or 'empty'})", highlight=False
    )


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[
        str, typer.Argument(help="the revision to go back to (the previous release's)")
    ],
    data_dir: DataDir = None,
) -> None:
    """Take the database back to REVISION before rolling back to the release that needs it
    (a rollback by one release needs none: that release runs on this schema)."""
    engine = _database(data_dir)
    try:
        before = downgrade(engine, revision)
    except ServiceError as exc:
        raise fail(exc.message) from None
    except Exception as exc:  # the DB's own message names the problem (host, auth, ...)
        raise fail(f"cannot downgrade {engine.url.render_as_string()}: {exc}") from None
    finally:
        engine.dispose()
    console.print(f"database at revision {revision} (was {before.current})", highlight=False)


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option(help="the tenant the token acts for")],
    data_dir: DataDir = None,
) -> None:
    """Create a bearer token for TENANT; it is printed once and stored only as a hash."""
    settings = _settings(data_dir)
    repo = Repository(make_engine(settings.resolved_database_url()))
    try:
        _, token = create_token(repo, tenant)
    except ServiceError as exc:
        raise fail(exc.message) from None
    console.print(token, highlight=False, soft_wrap=True)


@token_app.command("list")
def token_list(
    tenant: Annotated[str, typer.Option(help="the tenant whose tokens to list")],
    data_dir: DataDir = None,
) -> None:
    """A tenant's tokens, by prefix (the tokens themselves are not stored)."""
    repo = Repository(make_engine(_settings(data_dir).resolved_database_url()))
    tokens = list_tokens(repo, tenant)
    for prefix, created in tokens:
        console.print(f"{prefix}…  created {created:%Y-%m-%d %H:%M} UTC", highlight=False)
    if not tokens:
        console.print(f"tenant {tenant!r} has no tokens")


@token_app.command("revoke")
def token_revoke(
    prefix: Annotated[str, typer.Argument(help="the start of the token (as `token list` shows)")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a token: it stops working within 10 s on every replica."""
    repo = Repository(make_engine(_settings(data_dir).resolved_database_url()))
    try:
        revoke_token(repo, prefix.rstrip("…"))
    except ServiceError as exc:
        raise fail(exc.message) from None
    console.print(f"revoked {prefix}", highlight=False)


def ensure_local_token(repo: Repository, data_dir: Path) -> str:
    """The embedded stack's tenant token in ``data_dir/token`` (mode 600), made once."""
    path = data_dir / "token"
    if path.is_file():
        token = path.read_text().strip()
        with contextlib.suppress(Unauthorized):
            repo.tenant_for_token(token)
            return token
    _, token = create_token(repo, "local")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    path.chmod(0o600)
    return token


def _start_mlflow_ui(settings: Settings, port: int) -> subprocess.Popen[bytes] | None:
    mlflow = Path(sys.executable).with_name("mlflow")
    executable = str(mlflow) if mlflow.exists() else shutil.which("mlflow")
    if executable is None:
        console.print("MLflow is not installed here: no UI (pip install 'dualtune[worker]')")
        return None
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "mlflow-ui.log").open("ab") as log:
        return subprocess.Popen(
            [
                executable,
                "server",
                "--backend-store-uri",
                settings.resolved_tracking_uri(),
                "--default-artifact-root",
                str(settings.data_dir / "mlartifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # In `up`'s process group: Ctrl-C, or `demo` stopping the stack, reach it too.
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """In the UI's process: ask Linux to stop it when `up` dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop_tree(pid: int) -> None:
    """SIGTERM a process and its children (MLflow's server runs uvicorn in a child), then
    SIGKILL what is left after 10 s."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    del frame
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: this turns it
    # into an exit that runs `up`'s clean-up (stopping the MLflow UI).
    raise SystemExit(128 + signum)


def _serve(settings: Settings, host: str, launcher: Launcher | None = None) -> None:
    import uvicorn

    from dualtune.service.api.app import create_app

    try:
        application = create_app(settings, launcher)
    except ServiceError as exc:
        raise fail(exc.message) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    log_to_stderr()
    uvicorn.run(application, host=host, port=settings.port, log_level="warning")


@app.command()
def up(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="the service's port")] = 8000,
    mlflow_port: Annotated[int, typer.Option(help="the MLflow UI's port")] = 5000,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="start the MLflow UI")] = True,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray/--no-ray",
            help="one Ray head for every sweep (--no-ray: each driver starts its own)",
        ),
    ] = True,
) -> None:
    """The embedded stack on 127.0.0.1: service + SQLite + local Ray + MLflow (and its UI)."""
    settings = _settings(
        data_dir,
        port=port,
        launcher="local",
        # The leases' owner prefix: a restarted stack on this host sees its old process is
        # gone and takes its sweeps back at once.
        replica_id="embedded",
        mlflow_ui_url=f"http://127.0.0.1:{mlflow_port}" if ui else None,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    ensure_local_token(Repository(engine), settings.data_dir)
    engine.dispose()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ui_process = _start_mlflow_ui(settings, mlflow_port) if ui else None
    # One Ray runtime for the stack's life, which every sweep's driver joins: a driver does
    # not pay a runtime's start-up per sweep (docs/service.md, "The embedded Ray head").
    head = LocalRayHead(settings.data_dir)
    try:
        ray_address = head.start() if ray else None
        console.print(
            f"dualtune on http://127.0.0.1:{port} · data in {settings.data_dir} · token in "
            f"{settings.data_dir / 'token'}"
            + (f" · MLflow UI on {settings.mlflow_ui_url}" if ui_process else "")
            + (f" · Ray on {ray_address}" if ray_address else ""),
            highlight=False,
            soft_wrap=True,
        )
        if ray and ray_address is None:
            console.print(
                f"the Ray head did not start (see {head.log_path}): each sweep's driver "
                "starts a Ray runtime of its own",
                highlight=False,
                soft_wrap=True,
            )
        launcher = LocalLauncher(
            log_dir=settings.data_dir / "logs",
            data_dir=settings.data_dir,
            ray_head_env=head.driver_env(),
        )
        _serve(settings, "127.0.0.1", launcher)
    finally:
        head.stop()
        if ui_process is not None:
            _stop_tree(ui_process.pid)


@app.command()
def serve(
    host: Annotated[
        str,
        typer.Option(help="interface to listen on (0.0.0.0: every one, as in a container)"),
    ] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """The service alone, settings from DUALTUNE_* (containers). Needs `dualtune db upgrade`."""
    settings = _settings()
    if workers <= 1:
        _serve(settings, host)
        return
    import uvicorn

    from dualtune.service.api.app import create_app

    try:  # fail here, once, with the message, rather than in every worker
        create_app(settings, reconcile=False)
    except (ServiceError, ValueError) as exc:
        raise fail(getattr(exc, "message", str(exc))) from None
    uvicorn.run(
        "dualtune.service.api.app:app_from_env",
        factory=True,
        host=host,
        port=settings.port,
        workers=workers,
        log_level="warning",
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _start_stack(settings: Settings, port: int, mlflow_port: int) -> subprocess.Popen[bytes]:
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    console.print(f"starting the embedded stack (logs in {logs / 'service.log'}) ...")
    with (logs / "service.log").open("ab") as log:
        stack = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dualtune.service.cli",
                "up",
                "--data-dir",
                str(settings.data_dir),
                "--port",
                str(port),
                "--mlflow-port",
                str(mlflow_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stopping it stops Ray and the UI too
        )
    deadline = time.monotonic() + 120
    with Client(f"http://127.0.0.1:{port}") as probe:
        while not (probe.ready() and (settings.data_dir / "token").is_file()):
            if stack.poll() is not None or time.monotonic() > deadline:
                _stop(stack)
                raise fail(
                    f"the stack did not start; see {logs / 'service.log'} "
                    f"(is port {port} or {mlflow_port} taken? pass --port / --mlflow-port)"
                )
            time.sleep(0.5)
    return stack


@app.command()
def demo(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="the service's port")] = 8000,
    mlflow_port: Annotated[int, typer.Option(help="the MLflow UI's port")] = 5000,
    spec: Annotated[Path, typer.Option(help="the sweep to run")] = EXAMPLE,
    keep: Annotated[
        bool | None,
        typer.Option(
            "--keep/--no-keep",
            help="keep the stack up after the report (default: on a terminal)",
        ),
    ] = None,
) -> None:
    """The tour: start the embedded stack (or use the one already running), submit a sweep,
    watch it, print the report and where to compare the runs in the MLflow UI."""
    try:
        loaded = load_spec(spec)
    except SpecError as exc:
        raise fail(f"invalid spec {spec}\n{exc}", 2) from None
    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    token_file = settings.data_dir / "token"
    with Client(url) as probe:
        running = probe.ready() and token_file.is_file()
    if running:
        console.print(f"using the dualtune stack already running on {url}")
    stack = None if running else _start_stack(settings, port, mlflow_port)
    try:
        with Client(url, token_file.read_text().strip()) as client:
            body = loaded.model_dump(mode="json")
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            sweep = client.submit(loaded, "demo-" + digest[:16])
            console.print(
                f"sweep [bold]{sweep.id}[/bold]: {sweep.total_trials} trials of "
                f"{', '.join(loaded.methods)} on {loaded.task.name}",
                highlight=False,
            )
            code = wait_and_report(client, sweep.id)
            final = client.get(sweep.id)
        link = final.mlflow.experiment_url or f"http://127.0.0.1:{mlflow_port}"
        console.print(
            f"Compare the sweep's runs in the MLflow UI: {link}",
            highlight=False,
            soft_wrap=True,
        )
        if stack is not None and (keep if keep is not None else sys.stdin.isatty()):
            console.print("The stack stays up for the MLflow UI; press Ctrl-C to stop it.")
            with contextlib.suppress(KeyboardInterrupt):
                stack.wait()
        raise typer.Exit(code)
    except ClientError as exc:
        raise fail(str(exc)) from None
    finally:
        if stack is not None:
            _stop(stack)
