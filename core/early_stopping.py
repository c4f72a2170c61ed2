"""Feasibility-aware successive halving (ARCHITECTURE §3.1 ``early_stopping``): where the
rungs are, how trials rank at a rung, and which go on. Pure Python: the worker's rung board
holds one ``Rungs`` for a sweep and asks it at every rung a trial reaches.

At a rung, every trial that reached it so far is ranked: those meeting every bound of the
rule's ``subject_to`` first, the others after them by least total violation, then by the
rule's metric (a missing metric ranks last). The cut is the best ⌊M/rf⌋ (at least 1), where
M is the rung's **cohort**: how many trials can reach it (the experiment's trials less those
stopped at an earlier rung). A trial is stopped when ⌊M/rf⌋ trials recorded at the rung
already rank ahead of it, and goes on otherwise.

When the whole cohort arrives together (the members of one pack, one report: all recorded
before any is judged) this is synchronous successive halving, exactly the top ⌊M/rf⌋. When
trials arrive one by one (units of one, or several packs), an early arrival is judged
against fewer peers, and the rule errs towards going on: a trial that would make the cut
once every trial has reached the rung is never stopped. (Asynchronous successive halving,
ASHA and Ray's ``ASHAScheduler``, cuts at ⌊n/rf⌋ of the n recorded so far instead, which
stops such trials when they happen to arrive among better ones.) A decision once made is
kept: asked again (a unit resumed after a crash), the board answers the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dualtune.core.reporting import meets_bounds, score, total_violation
from dualtune.core.spec import EarlyStopping, Selection

Standing = tuple[int, float, float]
"""A trial's rank key at a rung, lower is better: (0 feasible / 1 not, violation, score)."""


def rung_epochs(grace: int, factor: float, epochs: int) -> tuple[int, ...]:
    """The rungs grace·rf^k (rounded to whole epochs) below ``epochs``."""
    rungs: list[int] = []
    k = 0
    while True:
        rung = round(grace * factor**k)
        if rung >= epochs:
            return tuple(rungs)
        if not rungs or rung > rungs[-1]:
            rungs.append(rung)
        k += 1


def rung_at(rungs: Sequence[int], epoch: int) -> int | None:
    """The rung an evaluation at ``epoch`` decides: the highest one at or below it (an
    evaluation schedule that skips a rung is judged at its next evaluation)."""
    passed = [r for r in rungs if r <= epoch]
    return passed[-1] if passed else None


def standing(metrics: Mapping[str, float], rule: Selection) -> Standing:
    if meets_bounds(metrics, rule.subject_to):
        return (0, 0.0, score(metrics, rule.metric, rule.mode))
    return (1, total_violation(metrics, rule.subject_to), score(metrics, rule.metric, rule.mode))


def kept(n: int, factor: float) -> int:
    """How many of a rung's cohort of ``n`` trials go on."""
    return max(1, math.floor(n / factor + 1e-9))


@dataclass
class Rungs:
    """The rung records of one sweep: every trial's standing at each rung it reached, and
    the decisions made there."""

    rule: Selection
    factor: float
    rungs: tuple[int, ...]
    trials: int
    """The experiment's trials: the first rung's cohort."""
    standings: dict[int, dict[str, Standing]] = field(default_factory=dict)
    decisions: dict[int, dict[str, bool]] = field(default_factory=dict)

    @classmethod
    def of(cls, stopping: EarlyStopping, selection: Selection, epochs: int, trials: int) -> Rungs:
        return cls(
            stopping.rule(selection),
            stopping.reduction_factor,
            rung_epochs(stopping.grace_epochs, stopping.reduction_factor, epochs),
            trials,
        )

    def cohort(self, rung: int) -> int:
        """How many trials can reach ``rung``: all, less those stopped at earlier rungs."""
        stopped = sum(
            not goes_on
            for earlier, decided in self.decisions.items()
            if earlier < rung
            for goes_on in decided.values()
        )
        return max(self.trials - stopped, len(self.standings.get(rung, {})))

    def decide(self, rung: int, members: Mapping[str, Mapping[str, float]]) -> dict[str, bool]:
        """Record ``members`` (trial id → metrics at ``rung``) and answer, for each, whether
        it goes on."""
        standings = self.standings.setdefault(rung, {})
        decided = self.decisions.setdefault(rung, {})
        fresh = [t for t in members if t not in decided]
        for trial_id in fresh:
            standings[trial_id] = standing(members[trial_id], self.rule)
        order = sorted(standings, key=lambda t: (standings[t], t))
        top = set(order[: kept(self.cohort(rung), self.factor)])
        for trial_id in fresh:
            decided[trial_id] = trial_id in top
        return {t: decided[t] for t in members}

    def to_json(self) -> dict[str, Any]:
        return {
            "standings": {
                str(r): {t: list(s) for t, s in v.items()} for r, v in self.standings.items()
            },
            "decisions": {str(r): dict(v) for r, v in self.decisions.items()},
        }

    def load_json(self, saved: Mapping[str, Any]) -> None:
        """Take back the records of ``to_json`` (a driver started again for the sweep)."""
        self.standings = {
            int(r): {t: (int(s[0]), float(s[1]), float(s[2])) for t, s in v.items()}
            for r, v in saved.get("standings", {}).items()
        }
        decisions = saved.get("decisions", {})
        self.decisions = {int(r): {t: bool(d) for t, d in v.items()} for r, v in decisions.items()}
