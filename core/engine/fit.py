"""``core.fit``: train one trial (ARCHITECTURE §3.3)."""

from __future__ import annotations

from typing import Any

from core.engine.result import EvalReport, Reporter, TrialResult
from core.engine.trainer import Trainer
from core.spec import TrialConfig


def fit(
    config: TrialConfig,
    *,
    reporter: Reporter | None = None,
    resume: dict[str, Any] | None = None,
) -> TrialResult:
    """Train the trial described by ``config``.

    Args:
        config: one trial of a sweep (``SweepSpec.trials()``).
        reporter: called after every evaluation (each ``train.eval_every`` epochs and the
            last) with the metrics and lazy access to the resumable state.
        resume: a ``state_dict`` from an earlier ``EvalReport``; training continues after
            its epoch and the result is identical to an uninterrupted run.

    Raises:
        Diverged: a non-finite loss; the error names the epoch.
    """
    trainer = Trainer(config)
    if resume is not None:
        trainer.load_state_dict(resume)
    epochs = config.train.epochs
    every = config.train.eval_every
    while trainer.epoch < epochs:
        trainer.train_epoch()
        if trainer.epoch % every == 0 or trainer.epoch == epochs:
            metrics = trainer.evaluate()
            trainer.history.append(metrics)
            if reporter is not None:
                reporter(EvalReport(trainer.epoch, metrics, trainer.epoch == epochs, trainer))
    per_sample = trainer.per_sample()
    return TrialResult(
        trial_id=config.trial_id,
        method=config.method,
        history=trainer.history,
        per_sample=per_sample,
        multipliers=trainer.multipliers.value.detach().cpu().numpy(),
    )
