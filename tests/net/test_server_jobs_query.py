"""The job table query (GET /workflows/{id}/jobs): name filter, sort, reverse, paging, against a
real in-process server, and the page selection itself against a brute-force reference."""

from __future__ import annotations

import gc
import weakref
from array import array
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from conftest import Api
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server_auth import make_htpasswd

from torc_net import jobs_query
from torc_net.columns import StrColumn
from torc_net.openapi import JOB_SORT_KEYS, MAX_NAME_CONTAINS
from torc_net.server import Running

StartFn = Callable[..., Awaitable[Running]]

#: Mixed case, a shared "run" in different cases, a ß (case folding), non-ASCII.
NAMES = ["Alpha", "beta", "GAMMA_prep", "gamma_run", "delta", "Épsilon", "zeta_RUN", "eta",
         "theta", "Iota", "kappa_run", "Straße"]
SPEC: dict[str, Any] = {
    "name": "table",
    "failure_handlers": [{"name": "again", "rules": [{"exit_codes": [3], "max_retries": 2}]}],
    "jobs": [{"name": n, "command": "true", "failure_handler": "again"} for n in NAMES],
}


async def jobs(api: Api, wf: int, **params: Any) -> dict[str, Any]:
    query = urlencode({k: str(v).lower() if isinstance(v, bool) else v
                       for k, v in params.items()}, quote_via=quote)
    return dict(await api.ok("GET", f"/workflows/{wf}/jobs?{query}"))


async def table(api: Api) -> tuple[int, list[dict[str, Any]]]:
    """A workflow of 12 independent jobs in several statuses and attempts: 3 completed, 2
    failed, 2 failed with a retried exit code (ready again, attempt 2), the rest pending."""
    wf = (await api.ok("POST", "/workflows", {"spec": SPEC}, status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes",
                       {"hostname": "h", "num_cpus": 64, "memory_bytes": 10**12},
                       status=201))["id"]
    claim = await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/claim", {"limit": 100})
    claimed = sorted(j["id"] for j in claim["jobs"])
    assert len(claimed) == len(NAMES)
    codes = [0, 0, 0, 1, 1, 3, 3]  # by id: the first seven jobs end, the rest stay pending
    results = [{"job_id": job_id, "attempt": 1, "run_id": 1, "return_code": rc,
                "status": "completed" if rc == 0 else "failed", "exec_time_s": 0.1}
               for job_id, rc in zip(claimed[1::2] + claimed[::2], codes, strict=False)]
    await api.ok("POST", f"/workflows/{wf}/compute_nodes/{cn}/complete", {"results": results})
    everything = (await jobs(api, wf, limit=100))["items"]
    counts = {s: sum(j["status"] == s for j in everything) for s in ("completed", "failed",
                                                                      "ready", "pending")}
    assert counts == {"completed": 3, "failed": 2, "ready": 2, "pending": 5}
    assert sorted(j["attempt"] for j in everything) == [1] * 10 + [2] * 2
    return wf, everything


STATUS_CODE = {"ready": 2, "pending": 3, "completed": 5, "failed": 6}


def expected(everything: list[dict[str, Any]], sort_by: str, reverse: bool = False, *,
             status: str | None = None, name_contains: str | None = None) -> list[int]:
    key = {"id": lambda j: (j["id"],), "name": lambda j: (j["name"], j["id"]),
           "status": lambda j: (STATUS_CODE[j["status"]], j["id"]),
           "attempt": lambda j: (j["attempt"], j["id"])}[sort_by]
    chosen = [j for j in everything
              if (status is None or j["status"] == status)
              and (name_contains is None or name_contains.casefold() in j["name"].casefold())]
    return [j["id"] for j in sorted(chosen, key=key, reverse=reverse)]


async def test_sort_each_way_and_page_through(api: Api) -> None:
    wf, everything = await table(api)
    assert [j["id"] for j in everything] == sorted(j["id"] for j in everything)
    for sort_by in JOB_SORT_KEYS:
        for reverse in (False, True):
            want = expected(everything, sort_by, reverse)
            whole = await jobs(api, wf, sort_by=sort_by, reverse_sort=reverse)
            assert [j["id"] for j in whole["items"]] == want, (sort_by, reverse)
            assert whole["total"] == len(NAMES)
            # Pages of 5 put together are the whole order: nothing repeated, nothing skipped.
            paged: list[int] = []
            for offset in range(0, len(NAMES) + 5, 5):
                page = await jobs(api, wf, sort_by=sort_by, reverse_sort=reverse,
                                  offset=offset, limit=5)
                assert page["total"] == len(NAMES) and page["offset"] == offset
                paged += [j["id"] for j in page["items"]]
            assert paged == want, (sort_by, reverse)
    # Names in code-point order (SQLite's BINARY, as Torc sorts): upper case first.
    by_name = await jobs(api, wf, sort_by="name")
    assert [j["name"] for j in by_name["items"]][:4] == ["Alpha", "GAMMA_prep", "Iota",
                                                          "Straße"]
    # Status by its code (Torc's order): ready, pending, completed, failed; ties by id, and
    # reversed ties reversed too.
    by_status = (await jobs(api, wf, sort_by="status"))["items"]
    assert [j["status"] for j in by_status] == ["ready"] * 2 + ["pending"] * 5 + \
        ["completed"] * 3 + ["failed"] * 2
    back = (await jobs(api, wf, sort_by="status", reverse_sort=True))["items"]
    assert back == by_status[::-1]
    by_attempt = (await jobs(api, wf, sort_by="attempt", reverse_sort=True))["items"]
    assert [j["attempt"] for j in by_attempt[:3]] == [2, 2, 1]
    # Defaults: id order, not reversed.
    assert (await jobs(api, wf, sort_by="id", reverse_sort=False))["items"] == everything
    assert (await jobs(api, wf, offset=100))["items"] == []


async def test_name_filter_ignores_case_and_combines_with_status(api: Api) -> None:
    wf, everything = await table(api)
    for needle in ("run", "RUN", "Run", "gamma", "a", "STRASSE", "straße", "é", "É", "zzz",
                   "_", "Alpha", "ALPHA", "%", "a b"):
        got = await jobs(api, wf, name_contains=needle)
        want = expected(everything, "id", name_contains=needle)
        assert [j["id"] for j in got["items"]] == want, needle
        assert got["total"] == len(want)
    runs = await jobs(api, wf, name_contains="RUN")
    assert sorted(j["name"] for j in runs["items"]) == ["gamma_run", "kappa_run", "zeta_RUN"]
    assert [j["name"] for j in (await jobs(api, wf, name_contains="strasse"))["items"]] == \
        ["Straße"]
    # Filters AND; total counts the jobs that match both; sort and page over what matches.
    for status in ("ready", "pending", "completed", "failed"):
        for needle in ("a", "RUN", "e"):
            for sort_by in JOB_SORT_KEYS:
                for reverse in (False, True):
                    want = expected(everything, sort_by, reverse, status=status,
                                    name_contains=needle)
                    got = await jobs(api, wf, status=status, name_contains=needle,
                                     sort_by=sort_by, reverse_sort=reverse, limit=2, offset=1)
                    assert got["total"] == len(want)
                    assert [j["id"] for j in got["items"]] == want[1:3], \
                        (status, needle, sort_by, reverse)
                    assert all(j["status"] == status for j in got["items"])
    # The longest allowed text is accepted (and matches nothing here).
    long = await jobs(api, wf, name_contains="x" * MAX_NAME_CONTAINS)
    assert long["total"] == 0 and long["items"] == []


async def test_bad_parameters_are_400_naming_them(api: Api) -> None:
    wf, _ = await table(api)
    for query, name, words in (
        ("name_contains=", "name_contains", ["1 to 256"]),
        (f"name_contains={'x' * (MAX_NAME_CONTAINS + 1)}", "name_contains", ["257"]),
        ("sort_by=bogus", "sort_by", ["id, name, status, attempt", "'bogus'"]),
        ("sort_by=", "sort_by", ["id, name, status, attempt"]),
        ("sort_by=NAME", "sort_by", ["id, name, status, attempt"]),
        ("sort_by=status;drop", "sort_by", ["id, name, status, attempt"]),
        ("reverse_sort=yes", "reverse_sort", ["true or false"]),
        ("reverse_sort=1", "reverse_sort", ["true or false"]),
        ("status=nope&name_contains=a", "status", []),
    ):
        reply = await api.get(f"/workflows/{wf}/jobs?{query}")
        assert reply.status == 400, (query, reply.body)
        detail = reply.body["detail"]
        assert detail.startswith(f"query parameter {name}:"), (query, detail)
        for word in words:
            assert word in detail, (query, detail)


async def test_who_may_query(start_inprocess: StartFn, tmp_path: Path) -> None:
    server = await start_inprocess(auth_file=str(make_htpasswd(tmp_path)))
    alice = Api(server.port, auth=("alice", "apw"))
    bob = Api(server.port, auth=("bob", "bpw"))
    anon = Api(server.port)
    try:
        wf = (await alice.ok("POST", "/workflows", {"spec": SPEC}, status=201))["id"]
        query = f"/workflows/{wf}/jobs?name_contains=run&sort_by=name&reverse_sort=true"
        assert (await alice.ok("GET", query))["total"] == 3
        reply = await bob.get(query)
        assert reply.status == 403 and reply.body["error"] == "forbidden"
        reply = await anon.get(query)
        assert reply.status == 401 and "credentials" in reply.body["detail"]
        # Someone else's workflow is refused before its parameters are looked at.
        assert (await bob.get(f"/workflows/{wf}/jobs?sort_by=bogus")).status == 403
        reply = await alice.get(f"/workflows/{wf + 1}/jobs?sort_by=name")
        assert reply.status == 404
    finally:
        for client in (alice, bob, anon):
            await client.aclose()


async def test_big_workflow_off_the_loop_and_cached(server: Running, api: Api) -> None:
    """Past the offload threshold (2,000 items) the same answers, from a worker thread; the
    name order is built once per workflow and goes with it."""
    n = 5000
    spec = {"name": "big", "jobs": [{"name": "Job_{i:04d}_{k}", "command": "true",
                                     "parameters": {"i": f"0:{n // 2 - 1}", "k": "[a,B]"}}]}
    wf = (await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"]
    everything = (await jobs(api, wf, limit=n))["items"]
    assert len(everything) == n
    names = {j["id"]: j["name"] for j in everything}
    by_name = sorted(names, key=lambda i: (names[i], i))
    got = await jobs(api, wf, sort_by="name", offset=2500, limit=7)
    assert [j["id"] for j in got["items"]] == by_name[2500:2507]
    got = await jobs(api, wf, sort_by="name", reverse_sort=True, limit=3)
    assert [j["id"] for j in got["items"]] == by_name[::-1][:3]
    matching = [i for i in names if "_b" in names[i].casefold()]
    got = await jobs(api, wf, name_contains="_B", sort_by="name", offset=100, limit=50)
    assert got["total"] == len(matching) == n // 2
    assert [j["id"] for j in got["items"]] == sorted(matching, key=names.__getitem__)[100:150]
    got = await jobs(api, wf, name_contains="0007_", status="ready")
    assert [j["name"] for j in got["items"]] == ["Job_0007_a", "Job_0007_B"]
    got = await jobs(api, wf, status="ready", sort_by="status", reverse_sort=True, limit=2)
    assert got["total"] == n and [j["id"] for j in got["items"]] == sorted(names)[::-1][:2]
    # One cache entry per workflow (its name order, folded names, masks), dropped with it.
    engine = weakref.ref(server.service.workflows[wf].engine)
    assert engine() in jobs_query._NAME_INDEXES
    await api.ok("DELETE", f"/workflows/{wf}")
    gc.collect()
    assert engine() is None


# ---------------------------------------------------------------------------------------------
# The selection alone, against a brute-force reference

_LETTERS = st.sampled_from(["a", "B", "ß", "SS", "_", "É", "é", "İ", "1", "\x00", "\x01", "\x02"])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(st.lists(_LETTERS, max_size=4).map("".join),
                            st.sampled_from([1, 2, 5, 6]), st.sampled_from([1, 1, 2, 3, 300])),
                  max_size=30),
    needle=st.none() | st.lists(_LETTERS, min_size=1, max_size=2).map("".join),
    code=st.none() | st.sampled_from([2, 5, 6, 9]),
    sort_by=st.sampled_from(JOB_SORT_KEYS),
    reverse=st.booleans(),
    offset=st.integers(0, 35) | st.just(2**63 - 1),
    limit=st.integers(0, 35),
)
def test_select_matches_reference(rows: list[tuple[str, int, int]], needle: str | None,
                                  code: int | None, sort_by: str, reverse: bool, offset: int,
                                  limit: int) -> None:
    n = len(rows)
    names: Sequence[str] = StrColumn(r[0] for r in rows)  # type: ignore[assignment]
    statuses = bytes(r[1] for r in rows)
    attempts = array("l", (r[2] for r in rows))
    folded = jobs_query._folded_names(names)
    mask = None if needle is None else jobs_query._name_mask(names, folded, needle)
    order = jobs_query._name_order(names) if sort_by == "name" else None
    total, page = jobs_query._select(n, sort_by, reverse, offset, limit, statuses, code, mask,
                                    order, attempts)
    column = {"id": None, "name": 0, "status": 1, "attempt": 2}[sort_by]
    chosen = [i for i, r in enumerate(rows)
              if (code is None or r[1] == code)
              and (needle is None or needle.casefold() in r[0].casefold())]
    want = sorted(chosen, key=lambda i: (i,) if column is None else (rows[i][column], i),
                  reverse=reverse)
    assert total == len(want)
    assert page == want[offset : offset + limit]
