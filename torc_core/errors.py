"""Errors the core raises. Each carries ``status_hint``: the HTTP status the I/O layer should use
(after h11's ``error_status_hint``), so the server maps errors without knowing their kinds."""

from __future__ import annotations

from collections.abc import Sequence


class TorcError(Exception):
    status_hint: int = 400


class SpecError(TorcError):
    """A workflow spec is invalid. ``errors`` lists every located problem found, e.g.
    ``jobs[3] 'train_{i}': depends_on: no job named 'prep'``. Nothing was created."""

    status_hint = 422

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("; ".join(self.errors) if self.errors else "invalid spec")


class EngineError(TorcError):
    """An input the engine refuses. The engine's state is unchanged."""

    status_hint = 409


class IllegalTransition(EngineError):
    status_hint = 409


class UnknownJob(EngineError):
    status_hint = 404


class BadInput(EngineError):
    status_hint = 422
