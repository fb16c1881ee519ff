"""The job runner's policy, sans I/O: what to claim, report, start and stop, and when.

:class:`RunnerState` holds what the runner knows (slots and resources, the local queue of
claimed jobs, the results not yet reported, the rate estimate behind the queue's size, the
last time it was busy, the end of its allocation) and answers the questions the Trio loop
in :mod:`torc_cli.runner` asks each cycle. It never reads a clock: every method that depends
on time takes ``now``, on the runner's one clock (``trio.current_time()``). That is why it
exists apart from the loop: tests drive it step by step with explicit times, and the loop's
own tests drive the real runner with ``trio.testing.MockClock`` instead of sleeping. It makes
no calls and starts no processes; the runner carries out what it decides (process table,
HTTP client, resource monitor).

Why these rules, in short (the runner's module docstring has the measurements):

* Queue mode (``-j N``) keeps about (completion rate x ``prefetch_horizon_s``) claimed jobs
  queued beyond the N slots, so a finished job's slot is refilled at once and each round
  trip carries many jobs; long jobs give a rate near zero, hence no queue.
* A cycle (report + claim) is due when the queue is half drained or a batch is full;
  otherwise a result waits at most ``max_report_delay_s``.
* Start reports go out only for jobs that have run ``start_report_delay_s``.
* A heartbeat is due only when nothing has reached the server for its interval.
* The allocation's end: the termination signal ``lead`` seconds before it, and claims see
  only the time left minus ``end_buffer_s``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .gpus import GpuPool

#: Longest quiet time before a heartbeat: how long a runner with every slot busy may take to
#: hear of a cancel. 1,000 such runners send 100 small requests a second.
HEARTBEAT_INTERVAL_S = 10.0

#: The rate estimate is not updated from windows shorter than this (a burst of ends within
#: a few ms would make a meaningless rate).
RATE_WINDOW_S = 0.05


def heartbeat_interval(lease_s: float) -> float:
    """A third of the lease (three chances before it expires), at most
    :data:`HEARTBEAT_INTERVAL_S` (to hear of a cancel soon), at least 1 s."""
    return max(1.0, min(lease_s / 3, HEARTBEAT_INTERVAL_S))


@dataclass(slots=True)
class Slot:
    """A job this runner has started and not yet reported as ended."""

    job: dict[str, Any]
    started: float
    start_reported: bool = False
    gpus: tuple[str, ...] = ()


@dataclass(slots=True, kw_only=True)
class RunnerState:
    """The runner's policy and bookkeeping; see the module docstring."""

    cpus: int
    memory_bytes: int
    gpu_ids: tuple[str, ...] = ()
    max_parallel: int | None = None
    max_batch: int = 1000
    prefetch_horizon_s: float = 1.0
    max_report_delay_s: float = 0.25
    start_report_delay_s: float = 0.5
    poll_interval_s: float = 1.0
    idle_timeout_s: float | None = None
    end_buffer_s: float = 60.0
    #: seconds between heartbeats when nothing else reaches the server (set from the lease)
    heartbeat_s: float = HEARTBEAT_INTERVAL_S

    running: dict[int, Slot] = field(default_factory=dict)
    #: claimed, not started (queue mode)
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    #: results not yet reported, oldest first
    results: list[dict[str, Any]] = field(default_factory=list)
    #: why the runner stops ('' while it runs)
    stopping: str = ""
    jobs_ended: int = 0
    target_queue: int = 0
    rate: float = 0.0  # completions per second, smoothed
    last_busy: float = -math.inf
    #: the allocation's end and the termination signal's time, on the runner's clock
    end_at: float | None = None
    terminate_at: float | None = None
    free_cpus: int = field(init=False)
    free_memory: int = field(init=False)
    gpus: GpuPool = field(init=False)
    _rate_mark: tuple[float, int] = field(init=False, default=(-math.inf, 0))

    def __post_init__(self) -> None:
        self.free_cpus = self.cpus
        self.free_memory = self.memory_bytes
        self.gpus = GpuPool(self.gpu_ids)  # each device held by one job at a time

    # -- time ---------------------------------------------------------------------------------

    def start(self, now: float, *, lease_s: float | None = None,
              end_in_s: float | None = None, termination_lead_s: float = 0.0) -> None:
        """The runner begins at ``now``: the rate and idle clocks start; ``lease_s`` sets the
        heartbeat interval; ``end_in_s`` (the allocation ends that long from now: its epoch
        end time minus the wall clock, read once) and ``termination_lead_s`` place the end
        and the termination signal on the runner's clock."""
        self._rate_mark = (now, self.jobs_ended)
        self.last_busy = now
        if lease_s is not None:
            self.heartbeat_s = heartbeat_interval(lease_s)
        if end_in_s is not None:
            self.end_at = now + end_in_s
            self.terminate_at = self.end_at - termination_lead_s

    def walltime_s(self, now: float) -> float | None:
        """Seconds a claimed job may run (the time left before the end buffer); None: no
        end."""
        if self.end_at is None:
            return None
        return max(0.0, self.end_at - now - self.end_buffer_s)

    def heartbeat_at(self, last_answer_at: float) -> float:
        """When a heartbeat is due: an interval after the server's last answer (any answer
        renews the lease, so a busy runner sends none)."""
        return last_answer_at + self.heartbeat_s

    def heartbeat_due(self, now: float, last_answer_at: float) -> bool:
        return now >= self.heartbeat_at(last_answer_at)

    def note_busy(self, now: float) -> None:
        if self.running or self.queue:
            self.last_busy = now

    def idle_expired(self, now: float) -> bool:
        """Nothing to run for ``idle_timeout_s`` (allocations should not idle to walltime)."""
        return (self.idle_timeout_s is not None and not self.running and not self.results
                and now - self.last_busy > self.idle_timeout_s)

    def due(self, now: float, last_answer_at: float = -math.inf) -> set[str]:
        """What is due at ``now``, by name: ``starts`` (start reports), ``cycle`` (a report
        and claim), ``heartbeat``, ``terminate`` (the allocation's end is near), ``idle``
        (the idle timeout has passed)."""
        due: set[str] = set()
        if self.starts_due(now, mark=False):
            due.add("starts")
        if self.cycle_due() or (not self.stopping and self.claim_size(now, update=False) > 0):
            due.add("cycle")
        if self.heartbeat_due(now, last_answer_at):
            due.add("heartbeat")
        if self.terminate_at is not None and now >= self.terminate_at:
            due.add("terminate")
        if self.idle_expired(now):
            due.add("idle")
        return due

    def next_wakeup(self, now: float) -> float:
        """When the main loop, with nothing due now, should look again by itself (a job's end
        or a stop wakes it sooner): a result waits at most ``max_report_delay_s``, a start
        report ``start_report_delay_s``; otherwise it polls the server each
        ``poll_interval_s``."""
        if self.stopping:
            return now + self.poll_interval_s
        timeout = self.max_report_delay_s if self.results else self.poll_interval_s
        if not self.results and any(not s.start_reported for s in self.running.values()):
            timeout = min(timeout, self.start_report_delay_s)
        return now + timeout

    # -- claiming -----------------------------------------------------------------------------

    def update_rate(self, now: float) -> None:
        """Queue mode: size the local queue to cover ``prefetch_horizon_s`` of completions."""
        if self.max_parallel is None or self.prefetch_horizon_s <= 0:
            return
        t0, n0 = self._rate_mark
        if now - t0 < RATE_WINDOW_S:
            return
        inst = (self.jobs_ended - n0) / (now - t0)
        self.rate = inst if self.rate == 0.0 else 0.5 * (self.rate + inst)
        self._rate_mark = (now, self.jobs_ended)
        self.target_queue = min(self.max_batch, int(self.rate * self.prefetch_horizon_s))

    def claim_size(self, now: float, *, update: bool = True) -> int:
        """How many jobs to claim now (<= 0: none): the free slots, in queue mode plus the
        queue's target (``update``: refresh the rate estimate first)."""
        if self.max_parallel is not None:
            if update:
                self.update_rate(now)
            want = self.max_parallel + self.target_queue
            return min(want - len(self.running) - len(self.queue), self.max_batch)
        return min(self.free_cpus, self.max_batch)

    def claim_resources(self) -> dict[str, int]:
        """What a claim may take, by resources (none in queue mode: -j N ignores them)."""
        if self.max_parallel is not None:
            return {}
        return {"cpus": self.free_cpus, "memory_bytes": self.free_memory,
                "gpus": self.gpus.free}

    def held_ids(self) -> list[int]:
        """Every job this runner holds: the server gives back any other it thinks we hold
        (they were in an answer we never received)."""
        return [*self.running, *(int(j["id"]) for j in self.queue),
                *(int(r["job_id"]) for r in self.results)]

    def claimed(self, jobs: list[dict[str, Any]]) -> None:
        self.queue.extend(jobs)

    def batch_was_full(self, asked: int, got: int, now: float) -> bool:
        """The claim filled every slot asked for and there is room again: more may be ready,
        ask again at once. In queue mode, only once the queue is as low as makes a cycle due
        (:meth:`cycle_due`): the jobs that ended during the round trip were refilled from the
        queue, and claiming again for just those made a round trip per handful of jobs
        (measured: 10,000 ``true`` jobs took 109-425 claims, most of them for 4-30 jobs,
        each a transaction and a sync on the server)."""
        if got < asked or self.claim_size(now) <= 0:
            return False
        return self.max_parallel is None or len(self.queue) <= self.target_queue // 2

    # -- running ------------------------------------------------------------------------------

    def next_to_start(self) -> dict[str, Any] | None:
        """The next queued job to start now, taken off the queue (None: no free slot, none
        queued, or stopping)."""
        if not self.queue or self.stopping:
            return None
        if self.max_parallel is not None and len(self.running) >= self.max_parallel:
            return None
        return self.queue.popleft()

    def launch(self, job: dict[str, Any], now: float) -> tuple[str, ...]:
        """Account for ``job`` starting at ``now``; its GPU devices (none in queue mode or
        without GPUs)."""
        gpus: tuple[str, ...] = ()
        if self.max_parallel is None:
            self.free_cpus -= int(job.get("num_cpus", 1))
            self.free_memory -= int(job.get("memory_bytes", 0))
            if self.gpus.total:  # its own devices; none for a GPU-less job (gpus.py)
                gpus = self.gpus.acquire(int(job.get("num_gpus") or 0))
        self.running[int(job["id"])] = Slot(job=job, started=now, gpus=gpus)
        return gpus

    def ended(self, jid: int, result: dict[str, Any]) -> Slot:
        """The job's result is known: free its resources and queue the result."""
        slot = self.running.pop(jid)
        if self.max_parallel is None:
            self.free_cpus += int(slot.job.get("num_cpus", 1))
            self.free_memory += int(slot.job.get("memory_bytes", 0))
            self.gpus.release(slot.gpus)
        self.results.append(result)
        self.jobs_ended += 1
        return slot

    def starts_due(self, now: float, *, mark: bool = True) -> list[int]:
        """The jobs whose start report is due (run ``start_report_delay_s``); ``mark``:
        they count as reported from now on."""
        due = now - self.start_report_delay_s
        starts = [jid for jid, s in self.running.items()
                  if not s.start_reported and s.started <= due]
        if mark:
            for jid in starts:
                self.running[jid].start_reported = True
        return starts

    # -- reporting ----------------------------------------------------------------------------

    def report_batch(self) -> list[dict[str, Any]]:
        return self.results[: self.max_batch]

    def reported(self, n: int) -> None:
        """The first ``n`` results reached the server (later ones were appended after)."""
        del self.results[:n]

    def cycle_due(self) -> bool:
        """Whether finished jobs should be reported (and slots refilled) now."""
        if not self.results:
            return False
        return len(self.results) >= self.max_batch or len(self.queue) <= self.target_queue // 2

    def wake_after_end(self) -> bool:
        """After a job's end (and refilling slots): whether the main loop should run now."""
        return bool(self.stopping) or self.cycle_due() or not self.queue

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, reason: str) -> bool:
        """Stop claiming; the queue is dropped (deactivation puts it back to ready). True:
        this is the first reason."""
        first = not self.stopping
        if first:
            self.stopping = reason
        self.queue.clear()
        return first

    def finished_stopping(self) -> bool:
        return bool(self.stopping) and not self.running and not self.results

    def idle(self) -> bool:
        """Nothing running, queued or unreported here."""
        return not self.running and not self.queue and not self.results

    def held_failures(self, counts: dict[str, int]) -> int:
        """Held failures (use_pending_failed), when they are all that stands between the
        workflow and its end: nothing ready, pending or running anywhere, and this runner
        idle. Only a decision changes that; 0 otherwise."""
        if (not self.idle() or counts.get("ready", 0) or counts.get("pending", 0)
                or counts.get("running", 0)):
            return 0
        return int(counts.get("pending_failed", 0))

    def stuck(self, counts: dict[str, int]) -> bool:
        """This runner is idle, its claim got nothing, and jobs are ready while nothing runs
        anywhere: the ready jobs do not fit here, and nothing will change that by itself."""
        return (self.idle() and counts.get("ready", 0) > 0
                and not counts.get("pending", 0) and not counts.get("running", 0))
