"""``core.fit`` (ARCHITECTURE §3.3) and ``fit_unit``: one training loop for a unit of 1..K
trials; ``fit`` is the unit of one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dualtune.core.engine.hardest import hardest_samples
from dualtune.core.engine.result import (
    EvalReport,
    Reporter,
    TrialResult,
    UnitEvalReport,
    UnitReporter,
    UnitResult,
)
from dualtune.core.engine.unit import SingleTrainer, UnitTrainer, unit_state, unit_trainer
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
    unit = SingleTrainer(config)

    def report(evaluation: UnitEvalReport) -> None:
        if reporter is not None and config.trial_id in evaluation.metrics:
            metrics = evaluation.metrics[config.trial_id]
            reporter(EvalReport(evaluation.epoch, metrics, evaluation.is_last, unit.trainer))

    result = _train(unit, [config], report, unit_state(resume) if resume is not None else None)
    if config.trial_id in result.diverged:
        raise result.diverged[config.trial_id]
    return result.results[config.trial_id]


def fit_unit(
    configs: Sequence[TrialConfig],
    *,
    reporter: UnitReporter | None = None,
    resume: dict[str, Any] | None = None,
) -> UnitResult:
    """Train the unit ``configs``: one trial unpacked, or several as one pack
    (``core.spec.packs``). Each member's metrics and state are those of its own trial, and
    a member that diverges is taken out while the others go on.

    Args:
        configs: one trial, or trials that differ only in the per-member keys.
        reporter: called after every evaluation with every active member's metrics; the
            members it returns are stopped there (``UnitResult.stopped``), the others go on.
        resume: a unit ``state_dict`` from an earlier ``UnitEvalReport``.

    Raises:
        NotPackable: several trials that cannot share a pack (the message says why).
    """
    return _train(unit_trainer(configs), configs, reporter, resume)


def _train(
    trainer: UnitTrainer,
    configs: Sequence[TrialConfig],
    reporter: UnitReporter | None,
    resume: dict[str, Any] | None,
) -> UnitResult:
    if resume is not None:
        trainer.load_state_dict(resume)
    first = configs[0]
    epochs, every = first.train.epochs, first.train.eval_every
    methods = {c.trial_id: c.method for c in configs}

    def result(trial_id: str) -> TrialResult:
        if trial_id not in trainer.active:
            raise KeyError(f"{trial_id!r} is not an active member of this unit")
        per_sample = trainer.per_sample(trial_id)
        return TrialResult(
            trial_id=trial_id,
            method=methods[trial_id],
            history=trainer.histories[trial_id],
            per_sample=per_sample,
            multipliers=trainer.multipliers_of(trial_id),
            hardest=hardest_samples(trainer.task, trainer.data.train.x, per_sample),
        )

    stopped: dict[str, TrialResult] = {}
    while trainer.epoch < epochs and trainer.active:
        trainer.train_epoch()
        if trainer.epoch % every == 0 or trainer.epoch == epochs:
            metrics = trainer.evaluate()
            for trial_id, values in metrics.items():
                trainer.histories[trial_id].append(values)
            if reporter is not None:
                to_stop = reporter(
                    UnitEvalReport(
                        trainer.epoch,
                        metrics,
                        dict(trainer.diverged),
                        trainer.epoch == epochs,
                        trainer,
                        result,
                    )
                )
                ending = [t for t in trainer.active if t in set(to_stop or ())]
                if ending and trainer.epoch < epochs:
                    stopped.update({t: result(t) for t in ending})
                    trainer.stop(ending)
    results = {trial_id: result(trial_id) for trial_id in trainer.active}
    return UnitResult(results, dict(trainer.diverged), stopped)
