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
    """An input the engine refuses. The engine's state is unchanged.

    ``job`` is the node index the refusal is about, if one: the engine knows jobs only by
    index, so the message says ``job 3: ...`` in those terms; the I/O layer, which knows the
    ids users see, words it with :meth:`about` instead."""

    status_hint = 409

    def __init__(self, reason: str, *, job: int | None = None) -> None:
        self.reason = reason
        self.job = job
        super().__init__(reason if job is None else f"job {job}: {reason}")

    def about(self, job_name: str) -> str:
        """The message with the job called ``job_name`` (e.g. its id) instead of its index."""
        return self.reason if self.job is None else f"job {job_name}: {self.reason}"


class IllegalTransition(EngineError):
    status_hint = 409


class UnknownJob(EngineError):
    status_hint = 404


class BadInput(EngineError):
    status_hint = 422
