"""`torc-trio htpasswd add|remove|list FILE [USER]`: manage the server's bcrypt htpasswd file.

Why here and not Apache's ``htpasswd -B``: clusters rarely have Apache tools installed. Files
written here are ordinary htpasswd files (``user:$2b$...``) that ``htpasswd -B`` also reads,
and files made by ``htpasswd -B`` (``$2y$``) are read by the server. Writes go to a temporary
sibling file renamed over the original, so a running server never reads a half-written file.

A password over 72 bytes (bcrypt's limit), a user name with ':' or a cost outside 4..31 is
refused with one line on stderr and status 2, and the file is left as it was.
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
#: bcrypt reads at most this many bytes of a password; bcrypt>=4.1 refuses longer ones (older
#: versions, and Apache's htpasswd, silently ignored the rest). Refusing says so plainly.
BCRYPT_MAX_PASSWORD_BYTES = 72
#: the cost range bcrypt accepts (each step doubles the time of one check)
MIN_ROUNDS, MAX_ROUNDS = 4, 31


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


def password_problem(password: str) -> str | None:
    """Why bcrypt cannot hash ``password`` (too many bytes), or None. Shared with the server,
    which answers such a password with a 401 that says this instead of a 500."""
    size = len(password.encode("utf-8"))
    if size > BCRYPT_MAX_PASSWORD_BYTES:
        return f"password is {size} bytes; bcrypt's limit is {BCRYPT_MAX_PASSWORD_BYTES} bytes"
    return None


def check_user_name(user: str) -> None:
    """htpasswd lines are ``user:hash``: a name must be non-empty and contain no ':'."""
    if not user or ":" in user:
        raise ValueError("user names must be non-empty and contain no ':'")


def check_rounds(rounds: int) -> None:
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise ValueError(f"--rounds must be between {MIN_ROUNDS} and {MAX_ROUNDS}")


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A ``$2b$`` hash; ValueError for a password over 72 bytes or a cost out of range."""
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    check_rounds(rounds)
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def add_user(path: Path, user: str, password: str, rounds: int = DEFAULT_ROUNDS) -> bool:
    """Add or replace ``user``; returns True if the user already existed. ValueError (and the
    file untouched) for a bad name, a password bcrypt cannot hash, or a cost out of range."""
    check_user_name(user)
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
        # Everything that can be refused is refused with one line (status 2), never a
        # traceback; the name and cost are checked before prompting for a password.
        try:
            check_user_name(args.user)
            check_rounds(args.rounds)
        except ValueError as exc:
            print(f"htpasswd add: {exc}", file=sys.stderr)
            return 2
        password = _password(args)
        problem = "empty password" if not password else password_problem(password)
        if problem:
            print(f"htpasswd add: {problem}", file=sys.stderr)
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
