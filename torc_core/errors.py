"""Errors the core raises. Each carries ``status_hint``: the HTTP status the I/O layer should use
(after h11's ``error_status_hint``), so the server maps errors without knowing their kinds."""

from __future__ import annotations

from collections.abc import Callable, Sequence


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

    ``job`` is the node index the refusal is about, if one (``jobs``: when it is about
    several): the engine knows jobs only by index, so the message says ``job 3: ...`` in those
    terms; the I/O layer, which knows the ids users see, words it with :meth:`about` or
    :meth:`naming` instead."""

    status_hint = 409
    #: At most this many jobs are named in a message; the rest are counted.
    NAMED = 20

    def __init__(self, reason: str, *, job: int | None = None,
                 jobs: Sequence[int] = ()) -> None:
        self.reason = reason
        self.job = job
        self.jobs: tuple[int, ...] = tuple(jobs)
        super().__init__(self.naming(str))

    def about(self, job_name: str) -> str:
        """The message with the job called ``job_name`` (e.g. its id) instead of its index."""
        return self.reason if self.job is None else f"job {job_name}: {self.reason}"

    def naming(self, name_of: Callable[[int], str]) -> str:
        """The message with every job it is about called ``name_of(index)`` (e.g. its id)."""
        if self.jobs:
            named = ", ".join(name_of(j) for j in self.jobs[: self.NAMED])
            more = len(self.jobs) - self.NAMED
            return (f"job{'s' if len(self.jobs) > 1 else ''} {named}"
                    f"{f' and {more} more' if more > 0 else ''}: {self.reason}")
        return self.reason if self.job is None else f"job {name_of(self.job)}: {self.reason}"


class IllegalTransition(EngineError):
    status_hint = 409


class UnknownJob(EngineError):
    status_hint = 404


class BadInput(EngineError):
    status_hint = 422
