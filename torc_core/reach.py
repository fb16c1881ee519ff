"""What a node reaches in a workflow's graph: pure walks over the model's CSR arrays.

Why a module of its own: resets choose their jobs by walking the graph (everything downstream
of the chosen or failed jobs) and, when only part of the graph is reset, must see through the
barriers above it (a barrier stands for "all of these dependencies", so a failure behind it is
what the N x M edges it replaces would show). These walks read statuses and never change
them, so they live beside the engine, not in it. Work lists, never recursion: a chain of a
million jobs cannot overflow the stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .model import WorkflowModel


def downstream_closure(model: WorkflowModel, seeds: Iterable[int]) -> list[int]:
    """``seeds`` and every node downstream of them (barriers included), in index order."""
    seen = bytearray(model.num_nodes)
    down_ptr, down_idx = model.down_ptr, model.down_idx
    stack = []
    for s in seeds:
        if not seen[s]:
            seen[s] = 1
            stack.append(s)
    while stack:
        node = stack.pop()
        for k in range(down_ptr[node], down_ptr[node + 1]):
            d = down_idx[k]
            if not seen[d]:
                seen[d] = 1
                stack.append(d)
    return [n for n in range(model.num_nodes) if seen[n]]


def fails_behind(barrier: int, num_jobs: int, failed: Sequence[int] | bytes,
                 statuses: bytearray, up_ptr: Sequence[int], up_idx: Sequence[int],
                 cache: dict[int, bool]) -> bool:
    """Whether a failed job stands behind ``barrier``: one of its dependencies, or of the
    barriers above it. ``failed[status]`` is true for a failed outcome. ``cache`` keeps the
    answers of one pass (the caller's statuses above must not fail meanwhile)."""
    known = cache.get(barrier)
    if known is not None:
        return known
    seen = {barrier}
    stack = [barrier]
    found = False
    while stack and not found:
        b = stack.pop()
        for k in range(up_ptr[b], up_ptr[b + 1]):
            u = up_idx[k]
            if u >= num_jobs:
                if u not in seen:
                    seen.add(u)
                    stack.append(u)
            elif failed[statuses[u]]:
                found = True
                break
    cache[barrier] = found
    return found
