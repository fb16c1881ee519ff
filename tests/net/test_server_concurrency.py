"""Many concurrent runners never get the same job; admission control answers 503 at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from conftest import Api, simple_spec

from torc_net.server import Running

StartFn = Callable[..., Awaitable[Running]]


async def test_concurrent_claims_are_exclusive(api: Api) -> None:
    num_jobs = 600
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(num_jobs)}, status=201))["id"]
    claimed: dict[int, int] = {}
    duplicates: list[int] = []

    async def runner(k: int) -> None:
        client = Api(api.port)
        cn = (await client.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": f"h{k}"},
                              status=201))["id"]
        base = f"/workflows/{wf}/compute_nodes/{cn}"
        while True:
            body = await client.ok("POST", f"{base}/claim", {"limit": 7})
            if not body["jobs"]:
                break
            for job in body["jobs"]:
                if job["id"] in claimed:
                    duplicates.append(job["id"])
                claimed[job["id"]] = cn
            results = [{"job_id": j["id"], "attempt": 1, "run_id": 1, "return_code": 0,
                        "status": "completed", "exec_time_s": 0} for j in body["jobs"]]
            # Report every batch twice: the second report is acknowledged, not counted.
            first = await client.ok("POST", f"{base}/complete", {"results": results})
            again = await client.ok("POST", f"{base}/complete", {"results": results})
            assert first["accepted"] == len(results) and again["duplicates"] == len(results)
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for k in range(20):
            nursery.start_soon(runner, k)
    assert duplicates == []
    assert len(claimed) == num_jobs
    assert len(set(claimed.values())) > 1
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["completed"] == num_jobs and status["is_complete"] is True
    results = await api.ok("GET", f"/workflows/{wf}/results?limit=1")
    assert results["total"] == num_jobs


async def test_admission_refuses_with_retry_after(start_inprocess: StartFn) -> None:
    server = await start_inprocess(max_concurrent_requests=2, max_queued_requests=0)
    wf_api = Api(server.port)
    # A slow request holds a slot: a body that arrives slowly keeps the handler busy.
    statuses: list[int] = []
    retry_after: list[str] = []

    async def slow_request(release: trio.Event) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"POST /torc-service/v1/workflows HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"
            )
            await release.wait()

    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_request, release)
        nursery.start_soon(slow_request, release)
        with trio.fail_after(10):
            # Polls another component's counter; there is no event to wait on.
            while server.admission.in_flight < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        reply = await wf_api.get("/ping")
        statuses.append(reply.status)
        retry_after.append(reply.headers.get("retry-after", ""))
        release.set()
    assert statuses == [503] and retry_after == ["1"]
    with trio.fail_after(10):
        while server.admission.in_flight:  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert (await wf_api.get("/ping")).status == 200
    assert server.admission.refused == 1
    await wf_api.aclose()


async def _hold_slot(port: int, release: trio.Event) -> None:
    """A request whose body never completes keeps its handler (and admission slot) busy."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST /torc-service/v1/workflows HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{"
        )
        await release.wait()


async def test_admission_queues_then_serves_in_order(start_inprocess: StartFn) -> None:
    """Past the bound, requests wait (FIFO) for a slot instead of being refused at once."""
    server = await start_inprocess(max_concurrent_requests=1, max_queued_requests=4,
                                   max_queue_wait_s=30)
    apis = [Api(server.port) for _ in range(3)]
    order: list[int] = []
    release = trio.Event()

    async def ping(k: int) -> None:
        reply = await apis[k].get("/ping")
        assert reply.status == 200
        order.append(k)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold_slot, server.port, release)
            while server.admission.in_flight < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            for k in range(3):
                nursery.start_soon(ping, k)
                while server.admission.queued < k + 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert order == []
            release.set()
    assert order == [0, 1, 2]
    assert server.admission.refused == 0 and server.admission.waited == 3
    for a in apis:
        await a.aclose()


async def test_admission_refuses_after_queue_wait(start_inprocess: StartFn) -> None:
    server = await start_inprocess(max_concurrent_requests=1, max_queued_requests=4,
                                   max_queue_wait_s=0.2)
    api = Api(server.port)
    release = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold_slot, server.port, release)
            while server.admission.in_flight < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            reply = await api.get("/ping")
            release.set()
    assert reply.status == 503 and reply.headers.get("retry-after") == "1"
    assert server.admission.refused == 1 and server.admission.queued == 0
    await api.aclose()


async def test_retried_claim_with_same_seq_gets_same_jobs(api: Api) -> None:
    """A claim retried after a broken connection must not lease a second set of jobs."""
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(6)}, status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    first = await api.ok("POST", f"{base}/claim", {"limit": 2, "claim_seq": 1})
    again = await api.ok("POST", f"{base}/claim", {"limit": 2, "claim_seq": 1})
    assert [j["id"] for j in again["jobs"]] == [j["id"] for j in first["jobs"]]
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["pending"] == 2 and status["counts"]["ready"] == 4
    nxt = await api.ok("POST", f"{base}/claim", {"limit": 2, "claim_seq": 2})
    assert not {j["id"] for j in nxt["jobs"]} & {j["id"] for j in first["jobs"]}
    # Without a sequence number every claim is new.
    more = await api.ok("POST", f"{base}/claim", {"limit": 1})
    assert len(more["jobs"]) == 1


async def test_jobs_of_a_lost_claim_answer_are_given_back(api: Api) -> None:
    """After a restart the replay record is gone; the runner's list of held jobs lets the
    server give back the jobs of the answer it never received."""
    wf = (await api.ok("POST", "/workflows", {"spec": simple_spec(4)}, status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    lost = await api.ok("POST", f"{base}/claim", {"limit": 2, "claim_seq": 1})
    assert len(lost["jobs"]) == 2
    # The runner never saw that answer: it holds nothing and claims anew.
    again = await api.ok("POST", f"{base}/claim",
                         {"limit": 4, "claim_seq": 2, "held_job_ids": []})
    assert len(again["jobs"]) == 4  # the two lost jobs came back and were claimed again
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["pending"] == 4 and status["counts"]["ready"] == 0


async def test_claim_carries_results(api: Api) -> None:
    """A busy runner reports what finished with its next claim: one round trip per cycle.
    The results are checked with the rest of the body before anything changes, applied before
    the claim, and a replayed claim does not count them twice."""
    spec = {"name": "chain", "jobs": [{"name": "a", "command": "true"},
                                      {"name": "b", "command": "true", "depends_on": ["a"]}]}
    wf = (await api.ok("POST", "/workflows", {"spec": spec}, status=201))["id"]
    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    first = await api.ok("POST", f"{base}/claim", {"limit": 2, "claim_seq": 1})
    (a,) = first["jobs"]
    done = {"job_id": a["id"], "attempt": a["attempt"], "run_id": a["run_id"],
            "return_code": 0, "status": "completed"}
    bad = await api.request("POST", f"{base}/claim",
                            {"limit": 2, "claim_seq": 2, "results": [done, {"job_id": "x"}]})
    assert bad.status == 400 and "results[1].job_id" in bad.body["detail"], bad.body
    status = await api.ok("GET", f"/workflows/{wf}/status")
    assert status["counts"]["pending"] == 1 and status["counts"]["completed"] == 0
    second = await api.ok("POST", f"{base}/claim",
                          {"limit": 2, "claim_seq": 2, "results": [done],
                           "held_job_ids": [a["id"]]})
    assert second["accepted"] == 1 and second["duplicates"] == 0
    assert [j["name"] for j in second["jobs"]] == ["b"]  # released by a's result, same trip
    replay = await api.ok("POST", f"{base}/claim",
                          {"limit": 2, "claim_seq": 2, "results": [done]})
    assert replay == second
    results = await api.ok("GET", f"/workflows/{wf}/results")
    assert len(results["items"]) == 1
