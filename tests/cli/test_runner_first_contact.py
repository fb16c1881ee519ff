"""A runner's first contact is one request: it registers, reads the workflow and claims its
first jobs in one POST (issue 17: an allocation is productive after one round trip). The real
JobRunner against a real in-process server, with a client that notes every request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tests.conftest import API
from torc_cli.resources import Resources
from torc_cli.runner import JobRunner, RunnerConfig
from torc_core.settings import MONITOR_OFF
from torc_net.client import TorcClient
from torc_net.server import Running


class NotingClient(TorcClient):
    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.calls: list[tuple[str, str, Any]] = []

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> Any:
        self.calls.append((method, path, json))
        return await super().call(method, path, json, **kw)


async def test_register_reads_the_workflow_and_claims_in_one_request(
        start_inprocess: Callable[..., Awaitable[Running]], tmp_path: Path) -> None:
    server = await start_inprocess()
    client = NotingClient(f"http://127.0.0.1:{server.port}{API}")
    try:
        wid = int((await client.create_workflow({
            "name": "first", "jobs": [{"name": f"j{i}", "command": "true"} for i in range(3)],
        }))["id"])
        client.calls.clear()
        cfg = RunnerConfig(workflow_id=wid, api_url=client.base_url, output_dir=tmp_path,
                           resources=Resources(cpus=4, memory_bytes=2**30, gpus=0, nodes=1),
                           handle_signals=False, monitor=MONITOR_OFF)
        with trio.fail_after(60):
            summary = await JobRunner(client, cfg).run()
        assert summary.is_complete
        method, path, body = client.calls[0]
        assert (method, path) == ("POST", f"/workflows/{wid}/compute_nodes")
        assert body["workflow"] is True and body["claim"]["limit"] >= 3
        # Nothing else was needed before the jobs ran: no separate read of the workflow, and
        # every claim after it reports what ran (all three jobs came with the first contact).
        assert ("GET", f"/workflows/{wid}") not in [(m, p) for m, p, _ in client.calls]
        claims = [b for m, p, b in client.calls if p.endswith("/claim")]
        assert all(b["results"] for b in claims), claims
        assert sum(len(b["results"]) for b in claims) == 3
        status = await client.workflow_status(wid)
        assert status["counts"]["completed"] == 3
    finally:
        await client.aclose()
