"""``python -m dualtune.worker run SPEC``: run one sweep on Ray Tune (local by default) with
MLflow; ``drive``: run the sweep a dualtune service launched this driver for."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualtune.worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep spec to the end (resumes an earlier run)")
    run.add_argument("spec", type=Path)
    run.add_argument("--sweep-id", default=None, help="default: derived from the spec")
    run.add_argument(
        "--storage",
        type=Path,
        default=None,
        help="Tune storage path (default: $DUALTUNE_DATA_DIR/tune)",
    )
    run.add_argument("--ray-address", default=os.environ.get("DUALTUNE_RAY_ADDRESS"))
    run.add_argument("--no-progress", action="store_true")
    drive = sub.add_parser(
        "drive",
        help="run the sweep a dualtune service launched this driver for "
        "(token in $DUALTUNE_WORKER_TOKEN)",
    )
    drive.add_argument("--service-url", required=True)
    drive.add_argument("--sweep-id", required=True)
    drive.add_argument(
        "--submission-id",
        default=None,
        help="the launch this driver belongs to (logged; the service finds its drivers by it)",
    )
    drive.add_argument("--storage", type=Path, default=None)
    drive.add_argument("--ray-address", default=os.environ.get("DUALTUNE_RAY_ADDRESS"))
    args = parser.parse_args(argv)
    if args.command == "drive":
        from dualtune.worker.drive import drive_sweep

        return drive_sweep(
            args.service_url,
            args.sweep_id,
            storage=args.storage,
            ray_address=args.ray_address,
            submission_id=args.submission_id,
        )

    console = Console(stderr=True)
    from dualtune.core.spec import SpecError
    from dualtune.worker.sources import SpecFileSource

    try:
        definition = SpecFileSource(args.spec, args.sweep_id).load()
    except SpecError as exc:
        console.print(
            f"[red]invalid spec {args.spec}[/red]\n{exc}", highlight=False, soft_wrap=True
        )
        return 2
    # Imported here: Ray and torch take seconds to import, not worth it for a bad spec.
    from dualtune.core.report_table import render_report
    from dualtune.core.states import TrialState
    from dualtune.worker.driver import run_sweep
    from dualtune.worker.preflight import InvalidSweepError
    from dualtune.worker.tracking import tracking_uri_from_env

    tracking_uri = tracking_uri_from_env()
    spec = definition.spec
    console.print(
        f"sweep [bold]{definition.sweep_id}[/bold]: {len(spec.trials())} trials "
        f"({', '.join(spec.methods)}) · MLflow {tracking_uri}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        result = run_sweep(
            spec,
            sweep_id=definition.sweep_id,
            storage_path=args.storage,
            tracking_uri=tracking_uri,
            ray_address=args.ray_address,
            show_progress=not args.no_progress,
        )
    except InvalidSweepError as exc:
        console.print("[red]the sweep cannot run[/red]", highlight=False)
        console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return 2
    # Piped or logged output is not cut at 80 columns: the table is the point of the run.
    render_report(result.report, Console(width=None if sys.stdout.isatty() else 200))
    for record in result.trials:
        if record.logging:
            console.print(f"{record.outcome.trial_id}: {record.logging}", highlight=False)
    backend = tracking_uri if tracking_uri.startswith(("sqlite", "postgresql", "mysql")) else None
    if backend:
        console.print(
            f"Compare runs in the MLflow UI: mlflow ui --backend-store-uri {backend}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"Compare runs in the MLflow UI at {tracking_uri}", highlight=False, soft_wrap=True
        )
    failed = result.report["trial_counts"].get(TrialState.FAILED, 0)
    return 1 if failed else 0


if __name__ == "__main__":
    status = main()
    # Everything is written by now: end without the interpreter's slow shutdown (Ray's
    # atexit, Tune's and MLflow's threads), as worker.process_exit explains.
    from dualtune.worker.process_exit import exit_process

    exit_process(status)
