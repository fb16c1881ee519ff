"""Actions are handed out exactly once; allocations are recorded and listed."""

from __future__ import annotations

import trio
from conftest import Api


def actions_spec() -> dict[str, object]:
    return {
        "name": "actions",
        "jobs": [
            {"name": "a", "command": "true"},
            {"name": "b", "command": "true", "depends_on": ["a"]},
        ],
        "actions": [
            {"trigger_type": "on_workflow_start", "action_type": "run_commands",
             "commands": ["echo start"]},
            {"trigger_type": "on_jobs_ready", "action_type": "run_commands", "jobs": ["b"],
             "commands": ["echo b ready"]},
            {"trigger_type": "on_workflow_complete", "action_type": "run_commands",
             "commands": ["echo done"]},
        ],
    }


async def test_each_due_action_is_claimed_exactly_once(api: Api) -> None:
    wf = (await api.ok("POST", "/workflows", {"spec": actions_spec()}, status=201))["id"]
    won: list[int] = []

    async def claimant() -> None:
        client = Api(api.port)
        reply = await client.ok("POST", f"/workflows/{wf}/actions/claim", {})
        won.extend(a["index"] for a in reply["actions"])
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(claimant)
    assert won == [0]  # only on_workflow_start is due, and only one claimant got it

    cn = (await api.ok("POST", f"/workflows/{wf}/compute_nodes", {"hostname": "h"},
                       status=201))["id"]
    base = f"/workflows/{wf}/compute_nodes/{cn}"
    (job_a,) = (await api.ok("POST", f"{base}/claim", {"limit": 5}))["jobs"]
    await api.ok("POST", f"{base}/complete", {"results": [
        {"job_id": job_a["id"], "attempt": 1, "run_id": 1, "return_code": 0,
         "status": "completed"}]})
    reply = await api.ok("POST", f"/workflows/{wf}/actions/claim", {})
    assert [a["index"] for a in reply["actions"]] == [1]
    assert reply["actions"][0]["commands"] == ["echo b ready"]
    (job_b,) = (await api.ok("POST", f"{base}/claim", {"limit": 5}))["jobs"]
    await api.ok("POST", f"{base}/complete", {"results": [
        {"job_id": job_b["id"], "attempt": 1, "run_id": 1, "return_code": 0,
         "status": "completed"}]})
    only_schedule = await api.ok("POST", f"/workflows/{wf}/actions/claim",
                                 {"action_types": ["schedule_nodes"]})
    assert only_schedule["actions"] == []
    reply = await api.ok("POST", f"/workflows/{wf}/actions/claim", {})
    assert [a["index"] for a in reply["actions"]] == [2]
    assert (await api.ok("POST", f"/workflows/{wf}/actions/claim", {}))["actions"] == []
    listed = await api.ok("GET", f"/workflows/{wf}/actions")
    assert [a["claimed"] for a in listed["items"]] == [True, True, True]


async def test_allocations_recorded_listed_and_updated(api: Api) -> None:
    wf = (await api.ok("POST", "/workflows", {"spec": actions_spec()}, status=201))["id"]
    alloc = await api.ok("POST", f"/workflows/{wf}/allocations",
                         {"slurm_job_id": "1234", "scheduler": "cpu"}, status=201)
    assert alloc["state"] == "submitted" and alloc["slurm_job_id"] == "1234"
    await api.ok("POST", f"/workflows/{wf}/allocations/{alloc['id']}/state", {"state": "gone"})
    listed = await api.ok("GET", f"/workflows/{wf}/allocations")
    assert [(a["slurm_job_id"], a["state"]) for a in listed["items"]] == [("1234", "gone")]
    bad = await api.post(f"/workflows/{wf}/allocations/{alloc['id']}/state", {"state": "nope"})
    assert bad.status == 400
    missing = await api.post(f"/workflows/{wf}/allocations", {})
    assert missing.status == 400
