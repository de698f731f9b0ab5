"""What makes the servers of one store one cluster, checked as each starts: one place for the chunks, one
garbage collection grace, an id of its own each, and a store of chunks no other cluster uses.

A server that would break one of them (started with another --storage or --gc-grace than the live servers of
its database, on a copy of a live server's data dir, or on chunks another cluster marked as its own) stops with
one line saying which, before it serves anything: each of these lost data or failed jobs without a word.
"""

import secrets
import time

from pfs.core.errors import FailedPrecondition
from server.pps.leases import RENEWALS, TTL
from server.store import Store


def join(store: Store, server: str) -> None:
    """Checks that SERVER (this one's id) may serve STORE beside its other servers, before it takes anything in
    the store as its own (its root token, which replaces the one its id held); FailedPrecondition, one line, if
    not. Where its id beats in the store already, it waits one beat's time (the row of a server that crashed
    under this id runs out then); an id that goes on beating is another live server's."""
    where = store.chunks.where()
    if store.meta.shared:  # a data dir's lock keeps a store of SQLite to one server
        deadline = time.monotonic() + TTL
        while server in (live := _live(store)) and time.monotonic() < deadline:
            time.sleep(TTL / RENEWALS)
        if server in live:
            raise FailedPrecondition(f"server id {server!r} (the data dir's server-id) is a live server's, at "
                                     f"{live[server]}: is this data dir a copy of its? Remove server-id from it, "
                                     "and this server makes an id of its own")
    with store.meta.transaction() as tx:
        kept = tx.setting("storage", where)
        if kept != where:
            raise FailedPrecondition(f"this cluster's chunks are in {kept}, as its database says, not {where}: give "
                                     "every server of a cluster the same --storage")
        grace = tx.setting("gc_grace", repr(store.grace))
        if float(grace) != store.grace:
            others = sorted(s for s in (tx.live_servers() if store.meta.shared else ()) if s != server)
            if others:
                raise FailedPrecondition(
                    f"the cluster's live servers ({', '.join(others)}) collect garbage with --gc-grace {grace}, "
                    f"not {store.grace:g}: a collection by the shorter one frees what the others' uploads are about "
                    "to record; start every server of a cluster with the same --gc-grace (to change it, stop them "
                    "all first)")
            tx.put_setting("gc_grace", repr(store.grace))
        cluster = tx.setting("cluster", secrets.token_hex(8))
    store.chunks.claim(cluster)


def _live(store: Store) -> dict[str, str]:
    with store.meta.transaction() as tx:
        return tx.live_servers()
