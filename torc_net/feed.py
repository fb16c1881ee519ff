"""Websocket fan-out of job and workflow events.

Theory of operation
-------------------
Each subscriber owns a bounded trio memory channel. :meth:`Feed.publish` serializes a message
once and puts it into every interested subscriber's channel with ``send_nowait``: publishing
never awaits, so a slow consumer can never stall a request handler. A subscriber whose channel
is full is marked *overflowed* and its channel closed; its websocket task notices, sends
``{"type": "overflow"}`` (best effort) and closes the connection. Memory is bounded by
``queue_size`` messages per subscriber.

Who hears what. Every subscriber carries ``visible(workflow_id, owner)`` (the service's
access rule, :meth:`torc_net.access.AccessGroups.may_see`), asked on every publish, for the
subscribers of one workflow too: it may change while they listen (a member removed from a
group), and then they hear nothing more of it. :meth:`Feed.drop_unseen` ends such per-workflow
feeds after a group change.

Messages are published once the change that carries them is committed (nobody hears of what
is not on disk), in the order of the changes, which is the engine's order. A subscriber is
registered together with a read of the current counts (no await in between) and the store's
change sequence number at that moment: it then hears exactly of the changes after those
counts, never of one the counts already include (``since``).

Batched subscribers (``?batch=1`` on the websocket URL; the dashboard is one) get each change's
messages as JSON arrays, at most ``MAX_BATCH`` to a frame, instead of one frame per message: a
change of a thousand transitions is one frame to send and, in a browser, one task to run rather
than a thousand. The bound is the same for both kinds: ``queue_size`` messages waiting to be
sent, however they are framed.

A subscriber that does not read is dropped, never waited for: its queue fills, it is marked
overflowed, and its websocket task closes the connection. A send to its websocket that takes
longer than ``SEND_TIMEOUT_S`` means the client stopped reading altogether: the watchdog
(:meth:`Feed.run_watchdog`) hangs up on it (:mod:`torc_net.hangup` says why nothing else can
end such a send).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import trio

from .hangup import Address, hang_up

DEFAULT_QUEUE_SIZE = 10_000
#: Messages in one frame of a batched subscriber (a frame of ~150 KB at most).
MAX_BATCH = 1000
#: A websocket send that takes longer than this means the client is not reading.
SEND_TIMEOUT_S = 10.0


#: Whether a subscriber may hear of a workflow: ``visible(workflow_id, owner)``.
Visible = Callable[[int, str | None], bool]


class Subscriber:
    """One websocket's queue. ``workflow_id is None`` means every visible workflow."""

    __slots__ = ("batched", "client", "limit", "overflowed", "pending", "receive", "send",
                 "sending_since", "since", "visible", "workflow_id")

    def __init__(
        self,
        workflow_id: int | None,
        visible: Visible,
        queue_size: int,
        since: int = 0,
        batched: bool = False,
    ) -> None:
        self.workflow_id = workflow_id
        self.visible = visible
        #: changes with this sequence number or lower are already in the first counts
        self.since = since
        #: frames are JSON arrays of messages (see the module docstring)
        self.batched = batched
        #: the websocket's peer, and since when (trio time) a send to it has been waiting
        self.client: Address | None = None
        self.sending_since: float | None = None
        #: (frame, messages in it); ``pending`` messages are queued, at most ``limit``
        self.send, self.receive = trio.open_memory_channel[tuple[str, int]](queue_size)
        self.limit = queue_size
        self.pending = 0
        self.overflowed = False

    def offer(self, text: str, count: int = 1) -> None:
        """Queue a frame of ``count`` messages, or overflow if that is more than may wait."""
        if self.pending + count > self.limit:
            self.overflowed = True
            self.send.close()
            return
        try:
            self.send.send_nowait((text, count))
            self.pending += count
        except trio.WouldBlock:
            self.overflowed = True
            self.send.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def sent(self, count: int) -> None:
        """A frame of ``count`` messages went out: room for as many more."""
        self.pending -= count


class Feed:
    """Registry of subscribers; see the module docstring."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._by_workflow: dict[int, set[Subscriber]] = {}
        self._global: set[Subscriber] = set()

    def wants(self, workflow_id: int) -> bool:
        """Whether anyone listens to ``workflow_id`` (skip building messages otherwise)."""
        return bool(self._global) or bool(self._by_workflow.get(workflow_id))

    def subscribe(
        self, workflow_id: int | None, visible: Visible, since: int = 0,
        batched: bool = False,
    ) -> Subscriber:
        sub = Subscriber(workflow_id, visible, self.queue_size, since, batched)
        if workflow_id is None:
            self._global.add(sub)
        else:
            self._by_workflow.setdefault(workflow_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.workflow_id is None:
            self._global.discard(sub)
        else:
            subs = self._by_workflow.get(sub.workflow_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_workflow[sub.workflow_id]
        sub.send.close()

    def publish_many(
        self, workflow_id: int, owner: str | None,
        messages: tuple[dict[str, Any], ...] | list[dict[str, Any]], seq: int | None = None,
    ) -> None:
        """Offer ``messages`` of the change numbered ``seq`` to everyone who listens to the
        workflow, may see it, and subscribed before that change was made (``seq`` None: to
        everyone who listens and may see it)."""
        def hears(sub: Subscriber) -> bool:
            return (not sub.overflowed and (seq is None or sub.since < seq)
                    and sub.visible(workflow_id, owner))

        targets = [s for s in self._by_workflow.get(workflow_id, ()) if hears(s)]
        targets.extend(s for s in self._global if hears(s))
        if not targets:
            return
        # Each message is encoded once, and each batch once, whoever hears them.
        texts = [json.dumps(message, separators=(",", ":")) for message in messages]
        frames: list[tuple[str, int]] | None = None
        for sub in targets:
            if sub.overflowed:
                continue
            if sub.batched:
                if frames is None:
                    frames = [("[" + ",".join(texts[i : i + MAX_BATCH]) + "]",
                               len(texts[i : i + MAX_BATCH]))
                              for i in range(0, len(texts), MAX_BATCH)]
                for frame, count in frames:
                    sub.offer(frame, count)
            else:
                for text in texts:
                    sub.offer(text)

    def close_workflow(self, workflow_id: int) -> None:
        """End the per-workflow feeds of a deleted workflow."""
        for sub in list(self._by_workflow.pop(workflow_id, ())):
            sub.send.close()

    def drop_unseen(self, owner: Callable[[int], str | None]) -> int:
        """End the per-workflow feeds whose subscriber may no longer see their workflow
        (``owner(workflow_id)`` says whose it is): after a group change took someone's access
        away. How many were ended."""
        dropped = 0
        for workflow_id, subs in self._by_workflow.items():
            who_owns = owner(workflow_id)
            for sub in subs:
                if not sub.visible(workflow_id, who_owns):
                    sub.send.close()
                    dropped += 1
        return dropped

    def close_all(self) -> None:
        """Shutdown: end every feed so websocket tasks finish promptly."""
        for subs in list(self._by_workflow.values()):
            for sub in subs:
                sub.send.close()
        for sub in self._global:
            sub.send.close()
        self._by_workflow.clear()
        self._global.clear()

    def _subscribers(self) -> Iterator[Subscriber]:
        yield from self._global
        for subs in self._by_workflow.values():
            yield from subs

    def hang_up_stuck(self, port: int, older_than: float = SEND_TIMEOUT_S) -> int:
        """Hang up on subscribers whose websocket send has waited ``older_than`` seconds."""
        now = trio.current_time()
        stuck = [s for s in self._subscribers() if s.client is not None
                 and s.sending_since is not None and now - s.sending_since >= older_than]
        for sub in stuck:
            sub.overflowed = True
        return hang_up(port, [s.client for s in stuck if s.client]) if stuck else 0

    async def run_watchdog(self, port: int) -> None:
        """Once a second, hang up on subscribers that stopped reading."""
        while True:
            await trio.sleep(1)
            self.hang_up_stuck(port)

    @property
    def num_subscribers(self) -> int:
        return len(self._global) + sum(len(s) for s in self._by_workflow.values())
