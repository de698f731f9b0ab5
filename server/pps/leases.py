"""Leases: which server of a cluster runs each pipeline's controller, so that exactly one does at any time.

Every server beats (its row in `servers`, expiring TTL seconds later) and holds the leases of some pipelines
(rows in `leases`, expiring likewise), renewing both RENEWALS times a TTL in one transaction; all expiries are by
the database's clock. A server alone on its store (SQLite, under its data dir's lock) renews once in ALONE_TTL.
A pipeline whose lease has expired (its server died, or was paused past it) is taken by the next server to
renew, up to a fair share of the pipelines each; a server holding more than its share (another joined, or came
back) gives the rest up, for the others to take.

No two controllers of one pipeline, ever: a holder counts its lease as lost MARGIN seconds before it expires, by
its own clock started before the renewal it counts from, so it stops acting before anyone else may take the
lease; and every write a controller makes (a job, a try) checks the lease in its own transaction (fence()), so a
server that was paused and does not yet know it lost the lease cannot write after another took it.
"""

import logging
import math
import re
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pfs.core.errors import FailedPrecondition
from pfs.core.private import write_private
from server.meta import MetaStore, Tx

log = logging.getLogger(__name__)

TTL = 8.0  # seconds a beat or a lease lasts
ALONE_TTL = 86400.0  # the same on a store of one server (SQLite), which no other can take over: a write a day
RENEWALS = 4  # per TTL
MARGIN = 1.0  # seconds before its expiry that a holder stops counting on a lease


class LeaseLost(Exception):
    """A controller's write found that its server no longer holds the pipeline's lease."""


class Leases:
    def __init__(self, meta: MetaStore, server: str, address: str) -> None:
        self.meta = meta
        self.server = server  # this server's id (server_id())
        self.address = address  # where workers and clients reach it
        self.ttl = TTL if meta.shared else ALONE_TTL
        self.servers: dict[str, str] = {}  # the live servers and their addresses, as of the last renewal
        self._held: dict[str, float] = {}  # pipeline -> until when (time.monotonic()) this server may act on it
        self._due = 0.0

    def renew(self) -> None:
        """Beats, renews the leases held and takes free ones up to a fair share, when a renewal is due (and at
        once after take())."""
        started = time.monotonic()
        if started < self._due:
            return
        with self.meta.transaction() as tx:
            if not self.meta.shared:  # alone on its store (its data dir's lock says so): any other is gone
                for other in set(tx.live_servers()) - {self.server}:
                    tx.drop_server(other)
            tx.beat(self.server, self.address, self.ttl)
            servers = tx.live_servers()
            leases = tx.leases()
            names = [p.name for p in tx.list_pipelines()]
            share = math.ceil(len(names) / len(servers))
            held = [n for n in names if leases.get(n) == self.server and tx.claim_lease(n, self.server, self.ttl)]
            for n in held[share:]:  # more than its share (a server joined, or came back): for those with less
                tx.release_lease(n, self.server)
            held = held[:share]
            for n in names:
                if len(held) < share and n not in leases and tx.claim_lease(n, self.server, self.ttl):
                    held.append(n)
        self.servers = servers
        for name in set(self._held) - set(held):
            log.info("pipeline %s: this server no longer holds its lease; its controller stops here", name)
        for name in set(held) - set(self._held):
            log.info("pipeline %s: this server took its lease; its controller runs here", name)
        self._held = dict.fromkeys(held, started + self.ttl - MARGIN)
        self._due = started + self.ttl / RENEWALS

    def take(self) -> None:
        """Makes the next renew() run at once: there is a pipeline to take."""
        self._due = 0.0

    def held(self) -> list[str]:
        """The pipelines whose controllers may act here now."""
        now = time.monotonic()
        return sorted(n for n, until in self._held.items() if until > now)

    def lost(self, name: str) -> None:
        """Stops counting on NAME's lease (a write found it gone)."""
        if self._held.pop(name, None) is not None:
            log.info("pipeline %s: this server no longer holds its lease; its controller stops here", name)

    def fence(self, name: str) -> Callable[[Tx], None]:
        """A check, for a transaction, that this server still holds NAME's lease; LeaseLost if not."""
        def check(tx: Tx) -> None:
            if tx.leases().get(name) != self.server:
                raise LeaseLost(name)
        return check

    def addresses(self) -> str:
        """Where a worker reaches the cluster: this server first, then the others alive."""
        # each once: servers that workers reach through one address (a Kubernetes Service) all beat with it
        return ",".join(dict.fromkeys([self.address, *(a for s, a in self.servers.items() if s != self.server)]))

    def release(self) -> None:
        """Gives every lease up (the server stops), so that other servers take its pipelines at once."""
        self._held.clear()
        with self.meta.transaction() as tx:
            tx.drop_server(self.server)


def server_id(data_dir: Path) -> str:
    """This server's id in its cluster: made once and kept in DATA_DIR, so that a restarted server knows the tries
    it had started (their workers ended with it) as its own."""
    path = data_dir / "server-id"
    made = path.read_bytes().strip() if path.exists() else b""
    if not made:  # an older server's crash could leave it empty
        made = f"{socket.gethostname()}-{secrets.token_hex(3)}".encode()
        write_private(path, made.decode() + "\n")
    if not re.fullmatch(rb"[A-Za-z0-9._-]{1,200}", made):
        raise FailedPrecondition(f"{path} holds no server id ({made[:40]!r}): remove it, and the server makes a new "
                                 "one")
    return made.decode()
