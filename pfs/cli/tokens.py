"""The `pfs auth` verbs: login, whoami, create-token, revoke, set-role, get-roles."""

import sys
import time

from pfs.cli import output
from pfs.client import Client
from pfs.client.auth import login_path
from pfs.core import durations
from pfs.core.errors import InvalidArgument
from pfs.core.private import write_private


def cmd_login(args, client):
    """Reads a token from stdin, checks it with the server, and keeps it in ~/.pfs/token (mode 0600)."""
    token = sys.stdin.readline().strip()
    if not token:
        raise InvalidArgument("no token on stdin: `pfs auth login < FILE`, or paste it and press Enter")
    with Client(client.address, token) as checked:  # the same server, shown the new token
        subject, _ = checked.whoami()
    path = login_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, token + "\n")
    print(f"logged in as {subject}; the token is in {path}")


def cmd_whoami(args, client):
    subject, expires = client.whoami()
    print(subject if not expires else f"{subject} (the token expires {expires_text(expires)})")


def cmd_create_token(args, client):
    token, _ = client.create_token(args.subject, ttl(args.ttl) if args.ttl else 0.0)
    print(token)


def cmd_revoke(args, client):
    token = sys.stdin.readline().strip() if args.subject is None else ""
    count = client.revoke(args.subject or "", token)
    print(f"revoked {count} token{'s' if count != 1 else ''}")


def cmd_set_role(args, client):
    client.set_role(args.repo, args.subject, args.role)


def cmd_get_roles(args, client):
    output.table(("USER", "ROLE"), sorted(client.get_roles(args.repo).items()))


def ttl(text: str) -> float:
    """Seconds from a duration (90s, 30m, 12h, 7d, 1h30m)."""
    seconds = durations.parse(text)
    if not seconds:  # 0 would read as no --ttl: a token until revoked
        raise InvalidArgument(f"--ttl {text!r} is not a duration above 0: give a number and s, m, h or d (30m, 7d)")
    return seconds


def expires_text(expires: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
