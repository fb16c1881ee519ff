"""``GET /workflows/{id}/dag``: a workflow's dependency graph for the dashboard's DAG view.

Theory of operation
-------------------
Rule 1: the graph is the engine's, as stored (:mod:`torc_core.graph`): a group of jobs whose
``|U| * |D|`` dependencies went through a barrier node answers as *one* barrier node with
``|U| + |D|`` edges, never as the product. Edges point from a dependency to the node that
waits for it.

Rule 2: every job carries its name *pattern* (:func:`pattern_of`): the name with each number
replaced by ``{}``, so ``work_007`` is ``work_{}`` and ``train_lr0.1_bs32`` is
``train_lr{}_bs{}``. It is how parameterized jobs are recognised as one group; the dashboard
(``torc_net/dash/static/dag.js``, ``patternOf``) applies the same rule to the names in the
websocket feed, so the two must stay identical (a browser test compares them).

Rule 3: a workflow of at most ``max_nodes`` jobs (and :data:`MAX_GRAPH_EDGES` stored edges)
answers ``mode: graph``: every node and edge. A larger one answers ``mode: summary``: jobs per
pattern with their counts per status, and the dependencies between patterns, counted as
written (a barrier's ``U -> D`` counts ``|U ∩ a| * |D ∩ b|`` for patterns ``a``, ``b``).
It is bounded: at most :data:`MAX_PATTERNS` groups (the smallest lumped into ``(other)``),
:data:`MAX_PATTERN_EDGES` edges (the heaviest kept) and :data:`MAX_PAIR_STEPS` steps spent
crossing barriers' pattern pairs; ``truncated`` says whether anything was left out.

Rule 4: statuses are a snapshot taken on the event loop (one byte copy); everything else (the
names, the edges) never changes after a workflow is created, so the answer is built in a
worker thread (:meth:`Service.offload`) in time linear in jobs plus edges. The dashboard keeps
the statuses live from the websocket feed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .api_workflows import Endpoint
from .service import Call, Service
from .state import STATUS_LABELS, WorkflowState
from .validate import query_int

#: Graph mode up to this many jobs unless the request says otherwise (``max_nodes``) ...
DEFAULT_MAX_NODES = 3000
#: ... and never above this many: a browser lays out and draws 5,000 nodes in well under a
#: second, and the answer stays a few hundred kB.
MAX_NODES = 5000
#: Stored edges above which even a small workflow answers as a summary (a few thousand jobs
#: with direct edges to thousands of others: too many lines to draw, a too large answer).
MAX_GRAPH_EDGES = 50_000
#: Groups in a summary; the smallest beyond it are lumped into :data:`OTHER`.
MAX_PATTERNS = 2000
#: Pattern-to-pattern edges in a summary; the heaviest are kept.
MAX_PATTERN_EDGES = 20_000
#: Steps spent crossing each barrier's upstream patterns with its downstream ones.
MAX_PAIR_STEPS = 2_000_000
OTHER = "(other)"

#: A number: a run of ASCII digits, with a decimal part if one follows (``0.1``). ASCII only,
#: as in JavaScript's ``/[0-9]+(?:\.[0-9]+)?/g``: Python's ``\d`` would also take other
#: scripts' digits, and the dashboard's rule would disagree.
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def pattern_of(name: str) -> str:
    """A job name's pattern: every number replaced by ``{}`` (``work_007`` -> ``work_{}``,
    ``train_lr0.1_bs32`` -> ``train_lr{}_bs{}``, ``v1.2.3`` -> ``v{}.{}``); a name without
    digits is its own pattern."""
    return _NUMBER.sub("{}", name)


def _node_id(job_id: Callable[[int], int], num_jobs: int, node: int) -> str:
    return f"j{job_id(node)}" if node < num_jobs else f"b{node - num_jobs}"


def graph_answer(wf: WorkflowState, statuses: bytes) -> dict[str, Any]:
    """Every node and stored edge (``mode: graph``)."""
    model = wf.model
    n, job_id, names = wf.num_jobs, wf.job_ids.id, wf.names
    ptr, idx = model.down_ptr, model.down_idx
    ids = [_node_id(job_id, n, v) for v in range(model.num_nodes)]
    nodes: list[dict[str, Any]] = []
    for k in range(n):
        name = names[k]
        nodes.append({"id": ids[k], "kind": "job", "job_id": job_id(k), "name": name,
                      "status": STATUS_LABELS[statuses[k]], "group": pattern_of(name)})
    up_count = [0] * model.num_barriers
    edges: list[list[str]] = []
    for u in range(model.num_nodes):
        source = ids[u]
        for e in range(ptr[u], ptr[u + 1]):
            v = idx[e]
            if v >= n:
                up_count[v - n] += 1
            edges.append([source, ids[v]])
    for b in range(model.num_barriers):
        node = n + b
        down = ptr[node + 1] - ptr[node]
        # Barrier statuses are not in the feed: a snapshot would go stale, so none is given.
        nodes.append({"id": ids[node], "kind": "barrier", "job_id": None,
                      "name": f"barrier {b}: {up_count[b]} upstream, {down} downstream",
                      "status": None, "group": ""})
    return {"mode": "graph", "num_jobs": n, "num_edges": len(edges), "nodes": nodes,
            "edges": edges}


def summary_answer(names: Sequence[str], num_jobs: int, statuses: bytes,
                   ptr: Sequence[int], idx: Sequence[int], num_nodes: int) -> dict[str, Any]:
    """Jobs per pattern and dependencies between patterns (``mode: summary``), in
    O(jobs + edges) plus the bounded barrier crossing."""
    # 1. Each job's pattern, as an index into `patterns` (first seen first).
    index: dict[str, int] = {}
    patterns: list[str] = []
    of_job = [0] * num_jobs
    for k in range(num_jobs):
        p = pattern_of(names[k])
        i = index.get(p)
        if i is None:
            i = index[p] = len(patterns)
            patterns.append(p)
        of_job[k] = i
    sizes = [0] * len(patterns)
    for i in of_job:
        sizes[i] += 1
    # 2. Too many patterns: keep the largest (ties: first seen), lump the rest.
    truncated = len(patterns) > MAX_PATTERNS
    if truncated:
        keep = sorted(range(len(patterns)), key=lambda i: (-sizes[i], i))[: MAX_PATTERNS - 1]
        kept = set(keep)
        remap = [MAX_PATTERNS - 1] * len(patterns)
        for new, old in enumerate(sorted(kept)):
            remap[old] = new
        names_out = [patterns[i] for i in sorted(kept)] + [OTHER]
        of_job = [remap[i] for i in of_job]
    else:
        names_out = patterns
    num_groups = len(names_out)
    width = len(STATUS_LABELS)
    counts = [0] * (num_groups * width)
    for k in range(num_jobs):
        counts[of_job[k] * width + statuses[k]] += 1
    # 3. Edges between patterns: direct ones counted, barriers crossed (up x down patterns).
    weights: dict[tuple[int, int], int] = {}
    num_barriers = num_nodes - num_jobs
    ups: list[dict[int, int]] = [{} for _ in range(num_barriers)]
    downs: list[dict[int, int]] = [{} for _ in range(num_barriers)]
    for u in range(num_nodes):
        start, end = ptr[u], ptr[u + 1]
        if start == end:
            continue
        if u < num_jobs:
            pu = of_job[u]
            for e in range(start, end):
                v = idx[e]
                if v < num_jobs:
                    key = (pu, of_job[v])
                    weights[key] = weights.get(key, 0) + 1
                else:
                    up = ups[v - num_jobs]
                    up[pu] = up.get(pu, 0) + 1
        else:
            down = downs[u - num_jobs]
            for e in range(start, end):
                v = idx[e]
                if v < num_jobs:  # the compiler links barriers to jobs only
                    pv = of_job[v]
                    down[pv] = down.get(pv, 0) + 1
    steps = 0
    for b in range(num_barriers):
        up_items, down_items = ups[b].items(), downs[b].items()
        if steps + len(up_items) * len(down_items) > MAX_PAIR_STEPS:
            truncated = True
            continue
        steps += len(up_items) * len(down_items)
        for pa, ca in up_items:
            for pb, cb in down_items:
                key = (pa, pb)
                weights[key] = weights.get(key, 0) + ca * cb
    pairs = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(pairs) > MAX_PATTERN_EDGES:
        truncated = True
        pairs = pairs[:MAX_PATTERN_EDGES]
    groups = []
    for g, pattern in enumerate(names_out):
        row = counts[g * width : (g + 1) * width]
        groups.append({"pattern": pattern, "count": sum(row),
                       "counts": {STATUS_LABELS[s]: c for s, c in enumerate(row) if c}})
    return {"mode": "summary", "num_jobs": num_jobs, "num_edges": ptr[num_nodes],
            "num_patterns": len(patterns), "truncated": truncated, "groups": groups,
            "edges": [[names_out[a], names_out[b], w] for (a, b), w in pairs]}


async def workflow_dag(s: Service, c: Call) -> dict[str, Any]:
    wf = s.workflow(c.path["workflow_id"], c.who)
    max_nodes = query_int(c.args, "max_nodes", DEFAULT_MAX_NODES, maximum=MAX_NODES)
    model = wf.model
    statuses = bytes(wf.engine.statuses)  # the snapshot (Rule 4)
    work = wf.num_jobs + model.num_edges
    if wf.num_jobs <= max_nodes and model.num_edges <= MAX_GRAPH_EDGES:
        return await s.offload(work, graph_answer, wf, statuses)
    return await s.offload(work, summary_answer, wf.names, wf.num_jobs, statuses,
                           model.down_ptr, model.down_idx, model.num_nodes)


ENDPOINTS: dict[str, Endpoint] = {"workflow_dag": workflow_dag}
