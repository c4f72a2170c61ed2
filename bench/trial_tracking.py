"""What tracking costs a packed trial's training thread: K ``TrialRunLogger``s on a SQLite
store, driven the way a pack drives them (``worker/pack_trainable.py``).

K members (default 27, the P3 grid) of a digits-sized trial (1,257 training and 540
validation samples, the §3.4 metrics of a classification trial), E evaluations (default 5):
each member's logger is built on the process's MLflow client, asked whether its trial is
already complete, started, given every evaluation's metrics, the per-sample tables at the
last evaluation (``per_sample_every`` = 5), its final artifacts (``log_final``, figures only
where ``--figures``) and its status, then finished. Each call is timed on the calling
thread, which is the training thread in a pack: what a packed trial's wall time pays
(``wall_s`` is the whole run less the simulated training, ``--train-s`` per epoch). The
store is checked afterwards: every member's metrics at every step, once.

    python -m bench.trial_tracking [--members 27] [--epochs 5] [--figures] [--train-s 0.25]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

N_TRAIN, N_VAL = 1257, 540


def _per_sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "train_loss": rng.exponential(0.3, N_TRAIN).astype(np.float32),
        "train_label": rng.integers(0, 10, N_TRAIN),
        "val_loss": rng.exponential(0.3, N_VAL).astype(np.float32),
        "val_label": rng.integers(0, 10, N_VAL),
        "multiplier": np.maximum(0, rng.normal(0, 1, N_TRAIN)).astype(np.float32),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=27)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--figures", action="store_true", help="logging.plots: all")
    parser.add_argument(
        "--train-s",
        type=float,
        default=0.0,
        help="seconds each epoch trains (a sleep: training that leaves the GIL free, as "
        "torch's kernels do); 0 puts every send at the end, the worst case",
    )
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    from dualtune.core.spec.metric_names import metric_names_for
    from dualtune.worker.tracking import TrialRunLogger
    from dualtune.worker.tracking.resilient import ResilientClient
    from dualtune.worker.tracking.sweep_run import ensure_experiment

    rng = np.random.default_rng(0)
    names = [*metric_names_for("classification", "per_sample"), "epoch"]
    times: dict[str, float] = defaultdict(float)
    cpu = [0.0]

    def timed(label: str, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        start, start_cpu = time.perf_counter(), time.thread_time()
        out = fn(*a, **kw)
        times[label] += time.perf_counter() - start
        cpu[0] += time.thread_time() - start_cpu
        return out

    with tempfile.TemporaryDirectory() as directory:
        uri = f"sqlite:///{Path(directory) / 'mlflow.db'}"
        setup = ResilientClient(uri)
        ensure_experiment(setup, "bench-tracking")
        wall = time.perf_counter()
        client = timed("client", MlflowClient, tracking_uri=uri)
        extra: dict[str, Any] = {}
        if "mlflow_client" in inspect.signature(TrialRunLogger).parameters:
            extra["mlflow_client"] = client
        loggers = [
            timed(
                "__init__",
                TrialRunLogger,
                uri,
                "bench-tracking",
                sweep_id="bench",
                trial_id=f"fl-{i:04d}",
                method="fl",
                params={"params.epsilon": "0.1", "params.seed": str(i), "task.name": "digits"},
                **extra,
            )
            for i in range(args.members)
        ]
        for logger in loggers:
            timed("completed", logger.completed)
        for logger in loggers:
            timed("start", logger.start)
        final_kw: dict[str, Any] = {}
        if "figures" in inspect.signature(TrialRunLogger.log_final).parameters:
            final_kw["figures"] = args.figures
        per_sample = _per_sample(rng)
        for epoch in range(1, args.epochs + 1):
            time.sleep(args.train_s)
            for logger in loggers:
                metrics = {n: float(rng.random()) for n in names}
                metrics["epoch"] = float(epoch)
                timed("log_metrics", logger.log_metrics, epoch, metrics)
                if epoch == args.epochs:
                    timed("log_per_sample", logger.log_per_sample, epoch, per_sample, epsilon=0.1)
        summaries = []
        for logger in loggers:
            timed("log_final", logger.log_final, per_sample, epsilon=0.1, **final_kw)
            timed("set_status_tag", logger.set_status_tag, _succeeded())
            summaries.append(timed("finish", logger.finish, "FINISHED"))
        wall = time.perf_counter() - wall - args.epochs * args.train_s

        assert all(s.ok for s in summaries), [s.message for s in summaries if not s.ok]
        for logger in loggers:
            assert logger.run_id is not None
            steps = [m.step for m in client.get_metric_history(logger.run_id, "train/loss_mean")]
            assert steps == list(range(1, args.epochs + 1)), steps
    out = {
        # CPU seconds, which a machine's load does not inflate as it does wall time: the
        # training thread's inside the logger's calls, the tracking threads' in all.
        "training_thread_cpu_s": round(cpu[0], 3),
        "tracking_threads_cpu_s": _tracking_threads_cpu_s(),
        "members": args.members,
        "epochs": args.epochs,
        "figures": args.figures,
        "train_s_per_epoch": args.train_s,
        "flush_s": os.environ.get("DUALTUNE_MLFLOW_FLUSH_S", "default"),
        "training_thread_s": round(sum(times.values()), 3),
        "wall_s": round(wall, 3),
        "by_call_s": {k: round(v, 3) for k, v in times.items()},
    }
    print(json.dumps(out), flush=True)
    return out


def _tracking_threads_cpu_s() -> float | None:
    try:
        from dualtune.worker.tracking.background import SENDER, WRITER, serial_executor
    except ImportError:  # tracking on the training thread: nothing else to count
        return None
    return round(
        sum(serial_executor(n).submit(time.thread_time).result() for n in (SENDER, WRITER)), 3
    )


def _succeeded() -> Any:
    from dualtune.core.states import TrialState

    return TrialState.SUCCEEDED


if __name__ == "__main__":
    main()
