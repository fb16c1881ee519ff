"""Following a workflow's event feed until it ends (watch, events monitor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .exits import FeedLost
from .session import Context

FeedHandler = Callable[[dict[str, Any], dict[str, int]], None]


def all_done(counts: dict[str, int]) -> bool:
    return sum(counts.values()) > 0 and not any(
        counts.get(s, 0) for s in ("uninitialized", "blocked", "ready", "pending", "running"))


async def follow_workflow_feed(ctx: Context, wid: int, on_message: FeedHandler, who: str, *,
                               end_events: tuple[str, ...] = ("completed", "canceled")) \
        -> dict[str, int]:
    """Follow workflow ``wid``'s event feed until the workflow ends: a ``workflow`` message
    with one of ``end_events``, or counts (the first message) that show every job done.
    ``on_message(message, counts)`` is told of each message with the job counts after it.
    Returns the last counts; raises :class:`FeedLost` (exit 5) when the feed overflows or
    closes before the end. ``who`` names the command in those messages."""
    from torc_net.client import open_event_feed

    counts: dict[str, int] = {}
    async with open_event_feed(ctx.url, wid, auth=ctx.client.auth,
                               tls=ctx.client.tls) as feed:
        async for message in feed:
            kind = message.get("type")
            if kind == "overflow":
                raise FeedLost(f"{who}: fell behind the event feed of workflow {wid}; run "
                               f"{who} again")
            if kind == "counts":
                counts = dict(message["counts"])
            elif kind == "job_status":
                old, new = message["old"], message["new"]
                counts[old] = counts.get(old, 0) - 1
                counts[new] = counts.get(new, 0) + 1
            on_message(message, counts)
            if kind == "workflow" and message.get("event") in end_events:
                return counts
            if kind == "counts" and all_done(counts):
                return counts
    raise FeedLost(f"{who}: the event feed of workflow {wid} closed before it ended")
