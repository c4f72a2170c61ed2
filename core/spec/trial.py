"""``TrialConfig``: one point of a sweep — the spec with the grid replaced by ``params``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from dualtune.core.catalog import CONSTRAINT_KINDS, GRID_KEY_DEFAULTS, METHODS, method_applies
from dualtune.core.spec.errors import field_errors
from dualtune.core.spec.sections import (
    Constraint,
    Dual,
    Limits,
    Logging,
    Resources,
    TaskRef,
    Train,
)


class TrialConfig(BaseModel):
    """One trial: a method and the grid values it uses (``params``), plus the shared spec.

    ``params`` holds only the grid keys the method reads *and* the grid sets; ``value(key)``
    resolves any key with the documented defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    trial_id: str
    index: int
    method: str
    params: dict[str, float | int]
    task: TaskRef
    constraint: Constraint
    train: Train = Train()
    dual: Dual = Dual()
    resources: Resources = Resources()
    limits: Limits = Limits()
    logging: Logging = Logging()
    metric_epsilon: float | None = None
    """The ε a trial whose method ignores ε (ERM) is measured at: the sweep's strictest
    (smallest) grid ε, so its feasible share and violations sit beside the others'."""

    @model_validator(mode="after")
    def _method_and_params(self) -> TrialConfig:
        info = METHODS.get(self.method)
        if info is None:
            raise field_errors(
                [
                    (
                        "method",
                        f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}",
                    )
                ]
            )
        # A kind this process does not know passed only as runtime.pip's: unchecked here.
        if self.constraint.kind in CONSTRAINT_KINDS and not method_applies(
            self.method, self.constraint.kind
        ):
            raise field_errors(
                [
                    (
                        "method",
                        f"method {self.method!r} does not apply to "
                        f"constraint kind {self.constraint.kind!r}",
                    )
                ]
            )
        extra = set(self.params) - set(info.grid_keys)
        if extra:
            raise field_errors(
                [("params", f"method {self.method!r} does not use {', '.join(sorted(extra))}")]
            )
        return self

    def value(self, key: str) -> float | int:
        """A grid key's value for this trial: ``params``, else the method's default, else the
        global default; ``lr`` defaults to ``train.optimizer.lr`` and ``kp``/``nu`` to
        ``dual.optimizer`` (0 with gradient ascent)."""
        if key in self.params:
            return self.params[key]
        if key == "epsilon" and self.metric_epsilon is not None:
            return self.metric_epsilon
        method_defaults = METHODS[self.method].defaults
        if key in method_defaults:
            return method_defaults[key]
        if key == "lr":
            return self.train.optimizer.lr
        if key in ("kp", "nu"):
            opt = self.dual.optimizer
            return float(getattr(opt, key)) if opt.name == "nupi" else 0.0
        if key not in GRID_KEY_DEFAULTS:
            raise KeyError(f"unknown grid key {key!r}")
        default = GRID_KEY_DEFAULTS[key]
        assert default is not None
        return default

    def flat_params(self) -> dict[str, str]:
        """The whole config flattened to dotted keys with string values (MLflow params)."""
        flat: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif isinstance(value, list | tuple):
                flat[prefix] = json.dumps(value)
            else:
                flat[prefix] = str(value)

        walk("", self.model_dump(mode="json", exclude={"index"}))
        return flat
