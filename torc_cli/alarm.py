"""A sleep until a deadline that other tasks can bring forward.

Why: the runner has tasks that sleep until the earliest of a set of deadlines (the process
table's SIGKILL after a grace period, the monitor's runtime limits and next sample) while other
tasks add earlier ones. Re-arming a task through a channel or an event would cost a wake-up per
added deadline; moving the sleeping task's cancel-scope deadline costs nothing and wakes it only
when the new deadline comes.
"""

from __future__ import annotations

import trio


class Alarm:
    """One task :meth:`sleep_until` a deadline; any task may :meth:`bring_forward` it."""

    __slots__ = ("_scope",)

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` (trio's clock), or the earlier one given meanwhile."""
        with trio.CancelScope(deadline=deadline) as scope:
            self._scope = scope
            try:
                await trio.sleep_forever()
            finally:
                self._scope = None

    def bring_forward(self, deadline: float) -> None:
        """Wake the sleeper by ``deadline`` at the latest (no effect if nobody sleeps: the
        sleeper computes its deadline afresh before it sleeps again)."""
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline
