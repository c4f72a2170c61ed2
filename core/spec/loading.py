"""Load a spec from a file, a YAML/JSON string or a mapping, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dualtune.core.spec.errors import SpecError
from dualtune.core.spec.sweep import SweepSpec


def _parse(text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(
            [{"field": "", "message": f"{origin} is not valid YAML{where}: {problem}"}]
        ) from None


def load_spec(source: str | Path | Mapping[str, Any]) -> SweepSpec:
    """A validated ``SweepSpec`` from a path (.yaml/.yml/.json), YAML/JSON text or a mapping.

    Raises:
        SpecError: the file is missing or unreadable, the text is not YAML, or the spec is
            invalid; each error names its field.
    """
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        text, origin = None, "spec"
        if isinstance(source, Path) or (
            isinstance(source, str)
            and "\n" not in source
            and source.endswith((".yaml", ".yml", ".json"))
        ):
            path = Path(source)
            try:
                text = path.read_text()
            except OSError as exc:
                raise SpecError(
                    [{"field": "", "message": f"cannot read {path}: {exc.strerror or exc}"}]
                ) from None
            origin = str(path)
        else:
            text = str(source)
        data = _parse(text, origin)
    if not isinstance(data, dict):
        raise SpecError(
            [
                {
                    "field": "",
                    "message": "a spec is a mapping with keys name, task, "
                    "constraint, methods, grid, …",
                }
            ]
        )
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError.from_validation(exc) from None
