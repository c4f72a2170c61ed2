"""P5: per-sample logging at n = 1,000,000 costs ≤ 2 % of an epoch.

One trial on two moons with 1,000,000 training samples (sklearn's ``make_moons``; MLP 70-70,
FL, batch 256, SGD lr 0.01 momentum 0.9, 1 torch thread): the wall time of one training epoch
against one per-sample logging event as the worker does it at an evaluation
(``TrialRunLogger.log_per_sample``: a parquet file per split, written on a background
thread, then their upload to the trial's MLflow run, SQLite store and local artifacts).
The event's cost to training is what it adds to the epoch it overlaps: epochs that start
right after a logging event against epochs without one (interleaved rounds), and never less
than the call itself on the training thread. The logging event is then taken
apart: the per-sample arrays from the evaluation (tensor → numpy), the pandas frames, the
parquet writes and the artifact upload. The evaluation itself (a forward pass over both
splits, which every evaluation runs whether or not it logs per-sample tables) is timed
beside it. A pack of K members logs K tables after one shared epoch, so the pack's ratio
is K times the member's logging over the pack's epoch.

    python -m bench.per_sample_logging [--n 1000000] [--k 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dualtune.core.engine.pack_trainer import PackTrainer
from dualtune.core.engine.trainer import Trainer

TARGET = 0.02


def _median_s(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from bench.packing import _moons, _trials
    from dualtune.worker.tracking import TrialRunLogger
    from dualtune.worker.tracking import per_sample as tables
    from dualtune.worker.tracking.sweep_run import ensure_experiment

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=8, help="pack size for the packed ratio")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    trials = _trials(_moons(args.n), args.k)
    trainer = Trainer(trials[0])
    epoch_s = _median_s(trainer.train_epoch, 1)
    evaluate_s = _median_s(trainer.evaluate, 1)
    per_sample: dict[str, Any] = {}
    arrays_s = _median_s(lambda: per_sample.update(trainer.per_sample()), args.repeats)
    pack = PackTrainer(trials)
    pack_epoch_s = _median_s(pack.train_epoch, 1)

    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        from dualtune.worker.tracking.resilient import ResilientClient

        ensure_experiment(ResilientClient(uri), "bench-p5")

        def new_logger() -> TrialRunLogger:
            return TrialRunLogger(
                uri,
                "bench-p5",
                sweep_id="bench-p5",
                trial_id=trials[0].trial_id,
                method="fl",
                params=trials[0].flat_params(),
            )

        logger = new_logger()
        logger.start()  # creates the run: not part of a logging event
        epochs = iter(range(1, 10_000))
        log_s = _median_s(
            lambda: logger.log_per_sample(next(epochs), per_sample, epsilon=0.1), args.repeats
        )
        logger.finish("FINISHED")  # waits for the background writes
        logger = new_logger()
        logger.start()
        alone, after_log = [], []
        for _ in range(args.repeats):
            alone.append(_median_s(trainer.train_epoch, 1))
            logger.log_per_sample(next(epochs), per_sample, epsilon=0.1)
            after_log.append(_median_s(trainer.train_epoch, 1))
        logger.finish("FINISHED")
        epoch_alone_s = statistics.median(alone)
        epoch_after_log_s = statistics.median(after_log)
        cost_s = max(epoch_after_log_s - epoch_alone_s, log_s)
        frames_s = _median_s(
            lambda: [tables.split_frame(per_sample, s) for s in ("train", "val")], args.repeats
        )
        out_dir = tmp / "parquet"
        out_dir.mkdir()
        parquet_s = _median_s(
            lambda: [tables.write_split(per_sample, s, 1, out_dir) for s in ("train", "val")],
            args.repeats,
        )
        sizes = {p.name: p.stat().st_size for p in out_dir.glob("*.parquet")}
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("bench-p5")
        assert experiment is not None
        run = client.create_run(experiment.experiment_id)
        upload_s = _median_s(
            lambda: client.log_artifacts(run.info.run_id, str(out_dir), "per_sample"),
            args.repeats,
        )
    out = {
        "n": args.n,
        "k": args.k,
        "task": "two moons, MLP 70-70, FL, batch 256, SGD lr 0.01 momentum 0.9, 1 torch thread",
        "epoch_s": epoch_s,
        "pack_epoch_s": pack_epoch_s,
        "pack_members_left": len(pack.members),
        "evaluate_s": evaluate_s,
        "per_sample_arrays_s": arrays_s,
        "log_per_sample_s": log_s,
        "epoch_alone_s": epoch_alone_s,
        "epoch_after_log_s": epoch_after_log_s,
        "cost_s": cost_s,
        "frames_s": frames_s,
        "parquet_s": parquet_s,
        "parquet_bytes": sum(sizes.values()),
        "upload_s": upload_s,
        "ratio": cost_s / epoch_alone_s,
        "ratio_with_arrays": (cost_s + arrays_s) / epoch_alone_s,
        "pack_ratio": args.k * (cost_s + arrays_s) / pack_epoch_s,
        "target": TARGET,
    }
    print(out, flush=True)
    return out


if __name__ == "__main__":
    main()
