"""``core.fit``: train one trial (ARCHITECTURE §3.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dualtune.core.engine.pack_trainer import PackTrainer
from dualtune.core.engine.result import (
    EvalReport,
    PackEvalReport,
    PackReporter,
    PackResult,
    Reporter,
    TrialResult,
)
from dualtune.core.engine.trainer import Trainer
from dualtune.core.spec import TrialConfig


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


def fit_pack(
    configs: Sequence[TrialConfig],
    *,
    reporter: PackReporter | None = None,
    resume: dict[str, Any] | None = None,
) -> PackResult:
    """Train the trials ``configs`` as one pack (``core.spec.packs``): each member's
    metrics and state are those of its own trial, and a member that diverges is taken out
    while the others go on.

    Args:
        configs: trials that differ only in the per-member keys (same seed and settings).
        reporter: called after every evaluation with every active member's metrics.
        resume: a pack ``state_dict`` from an earlier ``PackEvalReport``.

    Raises:
        NotPackable: the trials cannot share a pack (the message says why).
    """
    trainer = PackTrainer(configs)
    if resume is not None:
        trainer.load_state_dict(resume)
    first = configs[0]
    epochs, every = first.train.epochs, first.train.eval_every
    while trainer.epoch < epochs and trainer.members:
        trainer.train_epoch()
        if trainer.epoch % every == 0 or trainer.epoch == epochs:
            metrics = trainer.evaluate()
            for trial_id, values in metrics.items():
                trainer.histories[trial_id].append(values)
            if reporter is not None:
                reporter(
                    PackEvalReport(
                        trainer.epoch,
                        metrics,
                        dict(trainer.diverged),
                        trainer.epoch == epochs,
                        trainer,
                    )
                )
    methods = {c.trial_id: c.method for c in configs}
    results = {
        trial_id: TrialResult(
            trial_id=trial_id,
            method=methods[trial_id],
            history=trainer.histories[trial_id],
            per_sample=trainer.per_sample(trial_id),
            multipliers=trainer.multipliers_of(trial_id),
        )
        for trial_id in trainer.active
    }
    return PackResult(results, dict(trainer.diverged))
