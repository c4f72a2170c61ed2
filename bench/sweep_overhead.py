"""P6: ``dualtune run`` of a 27-config grid against the same grid in one process.

The grid is ``bench/p6_grid.yaml``: ``bench/p3_grid.yaml``'s 27 FL trials on sklearn digits
at 20 epochs, ``pack`` and ``logging`` at their defaults. Four ways to train it:

(a) ``dualtune run SPEC`` as a user runs it: the CLI in a process of its own, tracking on
    into a fresh SQLite MLflow store (created before the clock starts, as a user's store
    exists before their sweep; its creation is timed apart), Tune's storage in a fresh
    ``$DUALTUNE_DATA_DIR``, the working directory a fresh folder (MLflow's artifacts land
    there), no Ray address in the environment: the driver starts its own Ray runtime.
    Run again with every process timing its pieces (``bench/process_timers.py``: the CLI,
    the driver, Ray's workers), for the breakdown; and once more with a Ray runtime already
    running on this machine (``ray start --head``) whose address is in
    ``DUALTUNE_RAY_ADDRESS``, as ``dualtune up`` leaves one, timed the same way.
(b) the 27 trials as one pack in this process (``core.engine.fit.fit_unit``).
(c) a plain for-loop of ``core.fit`` over the 27 trials, as a script a user runs
    (``python -c``, its imports included, one torch thread as each unit has); and the same
    loop in this process, for reference.

(b) and the in-process loop run after a warm-up (data loaded, a one-epoch unit trained)
with one torch thread, as a unit does. Targets (issue 15): P6a = (a) ÷ (b) ≤ 2.0 and
P6b = (a) ÷ (c) ≤ 0.5.

    python -m bench.sweep_overhead [--no-join]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench import process_timers, timers

P6_SPEC = Path(__file__).with_name("p6_grid.yaml")
REPO = Path(__file__).resolve().parents[1]
TARGET_PACK = 2.0
"""P6a: ``dualtune run`` ÷ the grid as one pack in one process."""
TARGET_LOOP = 0.5
"""P6b: ``dualtune run`` ÷ a plain for-loop of ``fit``."""
RAY_ENV = ("RAY_ADDRESS", "DUALTUNE_RAY_ADDRESS")
"""Where a driver finds a Ray runtime to join (``worker.ray_runtime``)."""
SCRUBBED = (
    *RAY_ENV,
    "MLFLOW_TRACKING_URI",
    "DUALTUNE_DATA_DIR",
    "PYTHONPATH",
    timers.ENV,
    process_timers.ENV,
)
"""Variables of this process a user's fresh shell would not have."""
LOOP_SCRIPT = """\
import sys
import torch
from dualtune import fit, load_spec
torch.set_num_threads(1)
for trial in load_spec(sys.argv[1]).trials():
    fit(trial)
"""
"""(c): a user's loop, with one torch thread as each unit has (so that neither side gains
from oversubscribing the cores, which on a machine shared with other work costs most)."""
RAY_PIECES = frozenset({"driver: Ray connect", "driver: Ray init check"})
"""The driver's own Ray start-up around ``ray.init`` (``bench/timers.py``'s names, now and
before ``worker.ray_runtime.connect_ray``)."""
HEAD_START_TIMEOUT_S = 180.0
LOG_TAIL = 3000


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    return {**env, **extra}


def _bin(name: str) -> str:
    """A console script of this environment (``dualtune``, ``ray``)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"no {name} next to {sys.executable} or on PATH")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _fresh_store(directory: Path) -> tuple[str, float]:
    """A new MLflow SQLite store with its schema, and how long making it took."""
    from mlflow.tracking import MlflowClient

    directory.mkdir(parents=True)
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    seconds = _seconds(lambda: MlflowClient(uri).search_experiments(max_results=1))
    return uri, seconds


def _logged(uri: str, experiment: str) -> dict[str, int]:
    """What the sweep left in the store: its runs, and those with metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {"runs": 0, "runs_with_metrics": 0}
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return {"runs": len(runs), "runs_with_metrics": sum(bool(r.data.metrics) for r in runs)}


# -- (a): dualtune run ----------------------------------------------------------------------
def cli_run(
    spec: Path,
    directory: Path,
    *,
    ray_address: str | None = None,
    instrumented: bool = False,
    worker_timings: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``dualtune run spec`` in a fresh store, data folder and working directory.

    ``instrumented``: every process the run starts times its pieces (``worker_timings``:
    where Ray's workers write theirs, when a runtime of someone else's runs them)."""
    from dualtune.core.spec import load_spec

    directory.mkdir(parents=True)
    uri, store_s = _fresh_store(directory / "mlflow")
    env = _env(MLFLOW_TRACKING_URI=uri, DUALTUNE_DATA_DIR=str(directory / "data"))
    if ray_address is not None:
        env["DUALTUNE_RAY_ADDRESS"] = ray_address
    env |= extra_env or {}
    main_sink, worker_sink = directory / "timings", worker_timings or directory / "workers"
    if instrumented:
        main_sink.mkdir()
        worker_sink.mkdir(exist_ok=True)
        site = process_timers.site_dir(directory / "site")
        env |= {
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
            process_timers.ENV: str(main_sink),
            timers.ENV: str(worker_sink),
        }
    log = directory / "dualtune-run.log"
    command = [_bin("dualtune"), "run", str(spec.resolve())]
    with log.open("w") as out:
        launched = time.time()
        start = time.perf_counter()
        code = subprocess.call(command, cwd=directory, env=env, stdout=out, stderr=out)
        wall = time.perf_counter() - start
        ended = time.time()
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited {code}:\n{text[-LOG_TAIL:]}")
    result: dict[str, Any] = {
        "wall_s": wall,
        "store_setup_s": store_s,
        "logged": _logged(uri, load_spec(spec).name),
        "log_tail": text[-LOG_TAIL:],
    }
    if instrumented:
        result["breakdown"] = cli_breakdown(
            process_timers.read_calls(main_sink / "cli.jsonl"),
            process_timers.read_calls(main_sink / "driver.jsonl"),
            timers.read_worker_calls(worker_sink),
            launched=launched,
            ended=ended,
        )
        result["timers_missing"] = process_timers.read_missing(main_sink, worker_sink)
    return result


def _one(calls: list[timers.Call], name: str) -> timers.Call | None:
    return next((c for c in calls if c.name == name), None)


def cli_breakdown(
    cli: list[timers.Call],
    driver: list[timers.Call],
    workers: Mapping[int, list[timers.Call]],
    *,
    launched: float,
    ended: float,
) -> dict[str, Any]:
    """Where the wall time of one ``dualtune run`` went, from launch to exit: the CLI's
    process, the driver's, ``run_sweep``'s pieces, and inside ``Tuner.fit`` the unit that
    finished last (``packing._breakdown``)."""
    from bench import packing

    cli_start, cli_exit = _one(cli, "process: start → site"), _one(cli, "process: exit")
    drv_start, drv_exit = _one(driver, "process: start → site"), _one(driver, "process: exit")
    sweep = _one(driver, "driver: run_sweep")
    if cli_start is None or cli_exit is None or drv_start is None or drv_exit is None:
        return {"error": "the CLI or the driver did not record its start or exit"}
    if sweep is None:
        return {"error": "the driver did not record run_sweep"}
    wall = ended - launched
    imports = {
        c.name.removeprefix("import: "): c.exclusive
        for c in driver
        if c.name.startswith("import: ") and c.end <= sweep.start
    }
    # The CLI either exec's into the driver (its exit is the driver's start) or spawns it and
    # waits (it exits after the driver).
    exec_d = cli_exit.start <= drv_start.start
    timeline = {
        # A clock tick (10 ms) of resolution: the start may read a little before the launch.
        "launch until the CLI's interpreter starts": max(0.0, cli_start.start - launched),
        "CLI: Python start-up": cli_start.end - cli_start.start,
        (
            "CLI: its imports, the spec check, exec into the driver"
            if exec_d
            else "CLI: its imports, the spec check, spawning the driver"
        ): drv_start.start - cli_start.end,
        "driver: Python start-up": drv_start.end - drv_start.start,
        "driver: imports (Ray, torch, MLflow, dualtune), the spec": sweep.start - drv_start.end,
        "driver: run_sweep": sweep.end - sweep.start,
        "driver: after run_sweep (the report printed, Ray left)": drv_exit.start - sweep.end,
    }
    if exec_d:
        timeline["driver: its exit (its own Ray runtime killed)"] = ended - drv_exit.start
    else:
        timeline["driver: interpreter teardown, until the CLI's exit"] = (
            cli_exit.start - drv_exit.start
        )
        timeline["CLI: its exit"] = ended - cli_exit.start
    inside = [c for c in driver if sweep.start <= c.start and c.end <= sweep.end]
    pieces: dict[str, float] = {}
    for c in inside:
        if c.name.startswith("import: "):
            label = "imports inside run_sweep"
        elif c.name.startswith("ray.init") or c.name in RAY_PIECES:
            label = "Ray: start or join"
        else:
            label = c.name.removeprefix("driver: ")
        pieces[label] = pieces.get(label, 0.0) + c.exclusive
    pieces["run_sweep, untimed"] = pieces.pop("run_sweep", 0.0)
    # The driver connects on a thread of its own from before run_sweep (its wait for that
    # thread is inside, as "Ray: start or join").
    inits = [c.name.removeprefix("ray.init: ") for c in driver if c.name.startswith("ray.init")]
    tune = (
        packing._breakdown(inside, dict(workers), wall)
        if _one(inside, "driver: Tuner.fit")
        else {}
    )
    return {
        "wall_s": wall,
        "timeline": timeline,
        "driver_imports": imports,
        "run_sweep": pieces,
        "ray_init": inits,
        "joined": any(i.startswith("join ") for i in inits),
        "tune": tune,
    }


def _auth_env(directory: Path) -> dict[str, str]:
    """Ray's token authentication, on as the embedded stack's head has it: a token file the
    head and the driver both read."""
    token = directory / "ray_auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


@contextlib.contextmanager
def ray_head(directory: Path, cpus: int, env: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """A Ray runtime of its own on this machine, started as ``dualtune up`` starts its head
    (``service/launchers/local_ray_head.py``: ``ray start --head --block``, 127.0.0.1,
    token authentication, its own temp dir, so no other driver here finds it by default),
    stopped on exit: SIGTERM to ``ray start --block`` stops the processes it started."""
    port = _free_port()
    # A short path: Ray's socket paths under it must fit in 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="p6ray-", dir="/tmp"))
    log = directory / "ray-head.log"
    command = [
        _bin("ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--num-cpus={cpus}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        "--block",
    ]
    start = time.perf_counter()
    with log.open("w") as out:
        head = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
            start_new_session=True,
        )
    try:
        # Written once the head is up (before ``--block`` starts to wait).
        address_file = temp / "ray_current_cluster"
        while not address_file.exists():
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}:\n{log.read_text()}")
            if time.perf_counter() - start > HEAD_START_TIMEOUT_S:
                raise TimeoutError(f"no Ray head after {HEAD_START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        yield {"address": f"127.0.0.1:{port}", "start_s": time.perf_counter() - start}
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                # Its own session: the group holds only what this ray start began.
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


def joined_run(spec: Path, directory: Path, cpus: int) -> dict[str, Any]:
    """(a) with a Ray runtime already running here whose address the driver is given."""
    directory.mkdir(parents=True)
    workers = directory / "workers"
    workers.mkdir()
    site = process_timers.site_dir(directory / "site")
    # The head's workers time their pieces like the driver's own runtime's do.
    auth = _auth_env(directory)
    head_env = _env(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), **auth)
    head_env[timers.ENV] = str(workers)
    head_env[process_timers.ENV] = str(directory / "head")
    with ray_head(directory, cpus, head_env) as head:
        run = cli_run(
            spec,
            directory / "run",
            ray_address=head["address"],
            instrumented=True,
            worker_timings=workers,
            extra_env=auth,
        )
    run["head_start_s"] = head["start_s"]
    run["address"] = head["address"]
    breakdown = run["breakdown"]
    if "error" in breakdown:
        run["note"] = "the driver's timings are incomplete: whether it joined is not known"
    elif not breakdown["joined"]:
        run["note"] = (
            f"DUALTUNE_RAY_ADDRESS={head['address']} was set, yet the driver "
            f"{', '.join(breakdown['ray_init']) or 'never called ray.init'}: joining a running "
            "runtime is not wired (yet)"
        )
    return run


# -- (b), (c) -------------------------------------------------------------------------------
def in_process(spec: Path) -> dict[str, Any]:
    """(b) one pack and the in-process loop, one torch thread, after a warm-up."""
    import torch

    from dualtune.core.engine.fit import fit, fit_unit
    from dualtune.core.spec import load_spec

    torch.set_num_threads(1)
    loaded = load_spec(spec)
    trials = loaded.trials()
    short = load_spec(
        {
            **loaded.model_dump(mode="json"),
            "train": {**loaded.train.model_dump(mode="json"), "epochs": 1},
        }
    ).trials()
    warm_s = _seconds(lambda: (fit(short[0]), fit_unit(short[:2])))
    return {
        "warm_up_s": warm_s,
        "one_pack_s": _seconds(lambda: fit_unit(trials)),
        "loop_in_process_s": _seconds(lambda: [fit(t) for t in trials]),
    }


def loop_script(spec: Path, directory: Path) -> float:
    """(c) ``for trial in spec.trials(): fit(trial)`` as a user's script, in a new process."""
    directory.mkdir(parents=True)
    command = [sys.executable, "-c", LOOP_SCRIPT, str(spec.resolve())]
    start = time.perf_counter()
    subprocess.run(command, cwd=directory, env=_env(), check=True, capture_output=True)
    return time.perf_counter() - start


# -- P6 -------------------------------------------------------------------------------------
def _again_once(run: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """``run(1)``, and ``run(2)`` if it fails: a sweep that failed once on a busy machine (a
    Ray start past Ray's fixed 30 s, say) is run again, and the failure is kept."""
    try:
        return run(1)
    except RuntimeError as exc:
        print(f"failed once, again: {exc}", flush=True)
        result = run(2)
        result["failed_attempt"] = str(exc)[-LOG_TAIL:]
        return result


def p6(spec: Path = P6_SPEC, *, join: bool = True, cpus: int | None = None) -> dict[str, Any]:
    """Every P6 run; returns wall times, ratios and breakdowns."""
    from dualtune.core.spec import load_spec

    loaded = load_spec(spec)
    cpus = cpus or os.cpu_count() or 1
    out: dict[str, Any] = {
        "spec": str(spec.relative_to(REPO) if spec.is_relative_to(REPO) else spec),
        "trials": len(loaded.trials()),
        "epochs": loaded.train.epochs,
        "cpus": cpus,
        "target_pack": TARGET_PACK,
        "target_loop": TARGET_LOOP,
    }
    with tempfile.TemporaryDirectory(prefix="p6-") as directory:
        tmp = Path(directory)
        out["loop_script_s"] = loop_script(spec, tmp / "loop")
        out |= in_process(spec)
        out["cli"] = _again_once(lambda n: cli_run(spec, tmp / f"cli-{n}"))
        out["cli_instrumented"] = _again_once(
            lambda n: cli_run(spec, tmp / f"cli-timed-{n}", instrumented=True)
        )
        if join:
            try:
                out["cli_joined"] = joined_run(spec, tmp / "joined", cpus)
            except Exception as exc:  # reported, not fatal: joining may not be wired yet
                out["cli_joined"] = {"error": f"{type(exc).__name__}: {exc}"}
    ratios = {"": out["cli"]}
    if "wall_s" in out.get("cli_joined", {}):
        ratios["_joined"] = out["cli_joined"]
    for suffix, run in ratios.items():
        out[f"P6a{suffix}"] = run["wall_s"] / out["one_pack_s"]
        out[f"P6b{suffix}"] = run["wall_s"] / out["loop_script_s"]
    out["cli_over_loop_in_process"] = out["cli"]["wall_s"] / out["loop_in_process_s"]
    print(summary(out), flush=True)
    return out


def summary(r: Mapping[str, Any]) -> str:
    """A few lines for a terminal."""
    lines = [
        f"P6 ({r['trials']} trials, {r['epochs']} epochs, {r['cpus']} CPUs):",
        f"  (a) dualtune run            {r['cli']['wall_s']:7.1f} s",
        f"  (a) instrumented            {r['cli_instrumented']['wall_s']:7.1f} s",
    ]
    joined = r.get("cli_joined", {})
    if "wall_s" in joined:
        lines.append(f"  (a) joining a running Ray   {joined['wall_s']:7.1f} s")
    for key in ("note", "error"):
        if key in joined:
            lines.append(f"  joined run: {joined[key]}")
    lines += [
        f"  (b) one pack, in process    {r['one_pack_s']:7.1f} s",
        f"  (c) for-loop of fit, script {r['loop_script_s']:7.1f} s",
        f"      for-loop, in process    {r['loop_in_process_s']:7.1f} s",
        f"  P6a = (a)/(b) = {r['P6a']:.2f} (target ≤ {r['target_pack']})",
        f"  P6b = (a)/(c) = {r['P6b']:.2f} (target ≤ {r['target_loop']})",
    ]
    if "P6a_joined" in r:
        lines.append(f"  joined: P6a = {r['P6a_joined']:.2f}, P6b = {r['P6b_joined']:.2f}")
    b = r["cli_instrumented"].get("breakdown", {})
    if "timeline" in b:
        lines += [f"    {k}: {v:.2f} s" for k, v in b["timeline"].items()]
        lines += [f"      run_sweep: {k}: {v:.2f} s" for k, v in b["run_sweep"].items()]
        share = b["tune"].get("tracking_share") if b["tune"] else None
        if share is not None:
            lines.append(f"    tracking share of the last unit: {100 * share:.1f} %")
    missing = r["cli_instrumented"].get("timers_missing")
    if missing:
        lines.append(f"  names bench/timers.py wraps that the code lacks: {', '.join(missing)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, default=P6_SPEC)
    parser.add_argument("--no-join", action="store_true", help="skip the run that joins Ray")
    args = parser.parse_args(argv)
    return p6(args.spec, join=not args.no_join)


if __name__ == "__main__":
    main()
