"""HTTPS across hosts: runners on the namespaced Slurm nodes (``local-slurm.sh start --nodes
4``) reach a server on the head's bridge address over TLS, trusting a throwaway CA by the file
submit names, authenticating as the submitting user through a 0600 credentials file the sbatch
script names — the password itself is in no script, and was never in the environment (it was
given with ``--password``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slurm

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
from cli_helpers import clean_env, torc  # noqa: E402
from slurm_helpers import wait_for  # noqa: E402
from test_slurm_multinode import NODES, cluster, scheduler, start_action  # noqa: E402, F401
from tls_helpers import htpasswd, make_pki, tls_server  # noqa: E402

PASSWORD = "correct horse battery"


def test_runners_on_other_hosts_use_https_and_a_credentials_file(
        tmp_path: Path, cluster: dict[str, str]) -> None:  # noqa: F811
    head = cluster["head_address"]
    pki = make_pki(tmp_path / "pki", head)
    users = htpasswd(tmp_path / "htpasswd", {"alice": PASSWORD})
    srv = tls_server(tmp_path / "torc.db", pki, host=head, url_host=head, more=(
        "--auth-file", str(users), "--require-auth", "--lease-seconds", "15"))
    env = clean_env(TORC_API_URL=srv.url, TORC_CA_FILE=str(pki.ca), TORC_USERNAME="alice")

    def cli(*args: str, timeout: float = 120) -> Any:
        proc = torc(tmp_path, "-f", "json", "--password", PASSWORD, *args, env=env,
                    timeout=timeout)
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout)

    (tmp_path / "hosts").mkdir()
    spec = {"name": "tls_two_hosts", "slurm_schedulers": [scheduler("two", 2)],
            "actions": [start_action("two", per_node=True)],
            "jobs": [{"name": "h{i}", "command": "hostname > hosts/{i}.txt && sleep 0.2",
                      "parameters": {"i": "1:12"}}]}
    (tmp_path / "wf.json").write_text(json.dumps(spec))
    wid = 0
    try:
        wid = int(cli("create", "wf.json")["id"])
        cli("submit", str(wid))
        wait_for(lambda: cli("status", str(wid))["is_complete"], 240, "12 jobs over https")
        assert cli("status", str(wid))["counts"]["completed"] == 12
        ran_on = {p.read_text().strip() for p in (tmp_path / "hosts").iterdir()}
        assert len(ran_on) == 2 and ran_on <= {f"node{i}" for i in range(1, NODES + 1)}, ran_on
        scripts = list((tmp_path / "torc_output" / "slurm").glob(f"torc_wf{wid}_*.sh"))
        assert scripts
        for script in scripts:
            text = script.read_text()
            assert PASSWORD not in text and "TORC_PASSWORD" not in text, text
            assert f"export TORC_CA_FILE={pki.ca}" in text, text
            assert "export TORC_CREDENTIALS_FILE=" in text, text
            assert f"export TORC_API_URL=https://{head}:{srv.port}/torc-service/v1" in text
        creds = tmp_path / "torc_output" / "slurm" / ".credentials-alice"
        assert creds.read_text() == f"alice:{PASSWORD}\n"
        assert creds.stat().st_mode & 0o777 == 0o600
    finally:
        if wid:
            subprocess.run([sys.executable, "-m", "torc_cli.main", "--password", PASSWORD,
                            "cancel", str(wid)], cwd=tmp_path, env=env, capture_output=True,
                           timeout=120, check=False)
        srv.stop()
