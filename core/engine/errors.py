"""Errors the engine raises for a trial (as opposed to bad input, which the spec rejects)."""

from __future__ import annotations


class Diverged(RuntimeError):  # noqa: N818 (public name fixed by ARCHITECTURE 3.3)
    """Training produced a non-finite loss. A trial that raises it ends as ``diverged``."""

    def __init__(self, epoch: int, detail: str = "non-finite training loss") -> None:
        self.epoch = epoch
        self.detail = detail
        super().__init__(f"diverged at epoch {epoch}: {detail}")

    def __reduce__(self) -> tuple[type[Diverged], tuple[int, str]]:
        # Keep the epoch when the error crosses a process boundary (Ray pickles it).
        return (Diverged, (self.epoch, self.detail))
