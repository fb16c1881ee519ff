"""`torc-trio htpasswd add|remove|list FILE [USER]`: manage the server's bcrypt htpasswd file.

Why here and not Apache's ``htpasswd -B``: clusters rarely have Apache tools installed. Files
written here are ordinary htpasswd files (``user:$2b$...``) that ``htpasswd -B`` also reads,
and files made by ``htpasswd -B`` (``$2y$``) are read by the server. Writes go to a temporary
sibling file renamed over the original, so a running server never reads a half-written file.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from pathlib import Path

import bcrypt

DEFAULT_ROUNDS = 12


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def add_user(path: Path, user: str, password: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """Add or replace ``user``; returns True if the user already existed."""
    if not user or ":" in user:
        raise ValueError("user names must be non-empty and contain no ':'")
    entry = f"{user}:{hash_password(password, rounds)}"
    lines = _read_lines(path)
    existed = False
    out = []
    for line in lines:
        if line.partition(":")[0] == user:
            existed = True
            out.append(entry)
        else:
            out.append(line)
    if not existed:
        out.append(entry)
    _write_lines(path, out)
    return existed


def remove_user(path: Path, user: str) -> bool:
    lines = _read_lines(path)
    out = [line for line in lines if line.partition(":")[0] != user]
    if len(out) == len(lines):
        return False
    _write_lines(path, out)
    return True


def list_users(path: Path) -> list[str]:
    return [
        line.partition(":")[0]
        for line in _read_lines(path)
        if line.strip() and not line.startswith("#") and ":" in line
    ]


def add_htpasswd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["add", "remove", "list"])
    parser.add_argument("file", metavar="FILE", help="the htpasswd file")
    parser.add_argument("user", metavar="USER", nargs="?", help="user name (add, remove)")
    parser.add_argument("--password", help="the password (default: prompt, or read one line "
                        "from stdin when it is not a terminal)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"bcrypt cost (default: {DEFAULT_ROUNDS})")


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {args.user}: ")
        if getpass.getpass("Repeat: ") != first:
            raise SystemExit("passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\n")


def main_htpasswd(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if args.action == "list":
        for user in list_users(path):
            print(user)
        return 0
    if not args.user:
        print(f"htpasswd {args.action}: USER is required", file=sys.stderr)
        return 2
    if args.action == "add":
        password = _password(args)
        if not password:
            print("htpasswd add: empty password", file=sys.stderr)
            return 2
        existed = add_user(path, args.user, password, args.rounds)
        print(f"{'updated' if existed else 'added'} {args.user} in {path}")
        return 0
    if remove_user(path, args.user):
        print(f"removed {args.user} from {path}")
        return 0
    print(f"htpasswd remove: no user {args.user!r} in {path}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torc-trio htpasswd")
    add_htpasswd_arguments(parser)
    return main_htpasswd(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
