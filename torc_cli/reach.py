"""Where runners reach the server: the URL an sbatch script gives them, and the refusal of a
server only this host can reach when the allocation may start on other hosts.

Why here and not at the runner: a runner that cannot reach its server learns it on a compute
node, in an allocation that waited in the queue, and can say so only in a Slurm log file.
`submit` knows before anything is submitted: the server reports the URL it wants runners to
use (``serve --advertise-url``, GET /version ``url``), and Slurm says which nodes a partition
has. A loopback URL (127.0.0.0/8, ::1, localhost, or a name that resolves only to those here)
works only when every node the allocation may get is this host.

:func:`loopback_refusal` is the decision (pure: the nodes and the resolver are arguments);
:func:`refusal_for_scripts` gathers the facts from the sbatch scripts and Slurm
(``sinfo``/``scontrol``) and asks it. Where Slurm cannot say (no ``sinfo``, an unknown
partition), nothing is refused: sbatch will say what is wrong.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from torc_net.client import ApiError, TorcClient
from torc_net.credentials import (
    CREDENTIALS_FILE_ENV,
    CredentialsError,
    read_credentials_file,
    write_credentials_file,
)
from torc_net.url_file import check_server_url

log = logging.getLogger("torc_cli.reach")

#: Host names that are loopback wherever they are resolved.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost",
                            "ip6-loopback"})
#: What to change, said in every refusal.
FIX = ("start the server with `serve --host 0.0.0.0` (or --host ADDRESS the nodes reach), or "
       "tell it the URL they should use with `serve --advertise-url "
       "http://HOST:PORT/torc-service/v1`")

Resolver = Callable[[str], list[str]]


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """What an allocation's runners are told: the server's URL, the file it writes that URL
    to (``serve --url-file``; None without one), and how to talk to it (``access``: the TLS
    trust and the credentials file of :func:`access_env`)."""

    url: str
    url_file: str | None = None
    access: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        """The sbatch script's environment for its runners (and their jobs)."""
        env = {"TORC_API_URL": self.url}
        if self.url_file:
            env["TORC_API_URL_FILE"] = self.url_file
        env.update(self.access)
        return env


def credentials_path(output_dir: Path, user: str) -> Path:
    """Where :func:`access_env` keeps ``user``'s credentials for the runners it starts."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", user)[:64]
    return output_dir.resolve() / "slurm" / f".credentials-{safe}"


def access_env(client: TorcClient, output_dir: Path, *, write: bool = True) \
        -> tuple[tuple[str, str], ...]:
    """What runners started by this process need to talk to the server as it does: its TLS
    trust (``TORC_CA_FILE``) and, when it sends credentials, a credentials file
    (``TORC_CREDENTIALS_FILE``, mode 0600, in the output directory the nodes share; the one
    this process was given when it holds the same credentials). Never the password itself:
    it would be written into the sbatch script. ``write=False`` (a dry run): name the file,
    write nothing."""
    env = client.tls.env()
    if client.auth is not None:
        given = os.environ.get(CREDENTIALS_FILE_ENV)
        try:
            same = given is not None and read_credentials_file(given) == client.auth
        except CredentialsError:
            same = False
        if given is not None and same:
            env[CREDENTIALS_FILE_ENV] = given
        else:
            path = credentials_path(output_dir, client.auth[0])
            if write:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_credentials_file(path, *client.auth)
            env[CREDENTIALS_FILE_ENV] = str(path)
    return tuple(sorted(env.items()))


async def server_address(client: TorcClient, fallback_url: str,
                         access: tuple[tuple[str, str], ...] = ()) -> ServerAddress:
    """The server's advertised URL and URL file (GET /version); an older server that says
    neither gets ``fallback_url`` (the one this client uses). ``access``: :func:`access_env`."""
    try:
        about: Any = await client.version()
    except ApiError as exc:
        log.debug("GET /version: %s; runners get %s", exc, fallback_url)
        about = {}
    if not isinstance(about, dict):
        about = {}
    url = about.get("url")
    if not isinstance(url, str) or check_server_url(url) is not None:
        url = fallback_url
    url_file = about.get("url_file")
    return ServerAddress(url.rstrip("/"), url_file if isinstance(url_file, str) else None,
                         access)


def resolve(host: str) -> list[str]:
    """The addresses ``host`` resolves to here (none if it does not)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _is_loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def loopback_addresses(url: str, resolver: Resolver = resolve) -> list[str] | None:
    """The loopback addresses the host of ``url`` is (itself, or every address it resolves to
    here), or None when other hosts may reach it (a routable address, or a name that resolves
    to one, or to nothing here: another host may know it)."""
    host = urlsplit(url).hostname or ""
    if _is_loopback_address(host):
        return [host]
    if host.lower() in LOOPBACK_NAMES:
        return [host]
    addresses = resolver(host)
    if addresses and all(_is_loopback_address(a) for a in addresses):
        return addresses
    return None


def this_host_names() -> set[str]:
    """The names Slurm may give this host's node: its host name, short and long."""
    name = socket.gethostname()
    return {name, name.split(".", 1)[0], "localhost"}


def loopback_refusal(url: str, nodes: Sequence[str], *, target: str,
                     this_host: Iterable[str] | None = None,
                     resolver: Resolver = resolve) -> str | None:
    """Why runners on ``nodes`` (what ``target``, e.g. "partition multi", may run on) cannot
    reach the server at ``url``, in one line; None when they can: the URL is not loopback, or
    every node is this host (``this_host``: its names, default :func:`this_host_names`)."""
    local = loopback_addresses(url, resolver)
    if local is None:
        return None
    here = {n.split(".", 1)[0] for n in (this_host_names() if this_host is None else this_host)}
    others = [n for n in nodes if n.split(".", 1)[0] not in here]
    if not others:
        return None
    host = urlsplit(url).hostname or ""
    what = "is loopback" if local == [host] else f"names {host}, which is {', '.join(local)} " \
        "here (loopback)"
    shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
    return (f"the server's URL {url} {what}: only this host reaches it, but {target} runs on "
            f"{shown}; {FIX}; nothing was submitted")


# ---------------------------------------------------------------------------------------------
# What Slurm says


def sbatch_targets(script: str, environ: dict[str, str] | None = None) \
        -> tuple[str | None, str | None]:
    """(partition, nodelist) an sbatch script asks for, as sbatch reads them: ``#SBATCH``
    directives (the last one wins), overridden by ``SBATCH_PARTITION``."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for line in script.splitlines():
        if not line.startswith("#SBATCH"):
            if line.strip() and not line.startswith("#"):
                break  # sbatch stops reading directives at the first command
            continue
        try:
            words = shlex.split(line[len("#SBATCH"):], comments=True)
        except ValueError:
            continue
        i = 0
        while i < len(words):
            word = words[i]
            for key, long, short in (("partition", "--partition", "-p"),
                                     ("nodelist", "--nodelist", "-w")):
                if word.startswith(long + "="):
                    found[key] = word.split("=", 1)[1]
                elif word in (long, short) and i + 1 < len(words):
                    found[key] = words[i + 1]
                    i += 1
                elif word.startswith(short) and len(word) > 2 and not word.startswith("--"):
                    found[key] = word[2:]
            i += 1
    partition = env.get("SBATCH_PARTITION") or found.get("partition")
    return partition, found.get("nodelist")


async def _slurm(argv: list[str]) -> str | None:
    """A Slurm query's stdout, or None when it cannot answer (logged)."""
    try:
        with trio.fail_after(30):
            done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                          check=False)
    except (OSError, trio.TooSlowError) as exc:
        log.info("%s: %s: cannot tell which nodes runners may get", argv[0], exc)
        return None
    if done.returncode != 0:
        log.info("%s: %s", " ".join(argv), done.stderr.decode(errors="replace").strip())
        return None
    return done.stdout.decode(errors="replace")


async def expand_hostlist(expressions: Sequence[str]) -> list[str] | None:
    """Node names of Slurm host lists (``node[1-3],gpu7``), through ``scontrol show
    hostnames``."""
    joined = ",".join(e for e in expressions if e)
    if not joined:
        return []
    if "[" not in joined:
        return [n for n in joined.split(",") if n]
    out = await _slurm(["scontrol", "show", "hostnames", joined])
    return None if out is None else out.split()


async def partition_nodes(partition: str | None) -> list[str] | None:
    """The nodes of ``partition`` (a comma-separated list of partitions is fine), or of the
    default partition when None; None when Slurm cannot say."""
    if partition is None:
        out = await _slurm(["sinfo", "-h", "-o", "%P %N"])
        if out is None:
            return None
        lists = [line.split()[1] for line in out.splitlines()
                 if len(line.split()) == 2 and line.split()[0].endswith("*")]
    else:
        out = await _slurm(["sinfo", "-h", "-p", partition, "-o", "%N"])
        if out is None:
            return None
        lists = out.split()
    return await expand_hostlist(lists)


async def refusal_for_scripts(url: str, scripts: Iterable[str]) -> str | None:
    """Why runners of these sbatch scripts could not reach the server at ``url`` (one line),
    or None. Asks Slurm only when ``url`` is loopback."""
    if loopback_addresses(url) is None:
        return None
    asked: set[tuple[str | None, str | None]] = set()
    for script in scripts:
        partition, nodelist = sbatch_targets(script)
        if (partition, nodelist) in asked:
            continue
        asked.add((partition, nodelist))
        if nodelist:
            nodes, target = await expand_hostlist([nodelist]), f"--nodelist {nodelist}"
        else:
            nodes = await partition_nodes(partition)
            target = (f"partition {partition}" if partition else "the default partition")
        if nodes:
            reason = loopback_refusal(url, nodes, target=target)
            if reason is not None:
                return reason
    return None
