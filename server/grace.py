"""The grace rule that makes garbage collection (server/gc.py) safe while the cluster works.

Every chunk and object carries the time it was last touched: written, or found present by an upload (an object
stored again; a chunk MissingChunks finds, or one PutFiles or PutShardFiles refers to). The collector frees only
what no commit, open or finished, and no staged shard output reached when it marked, AND what was last touched
more than GRACE before the mark began. An upload refers to chunks the moment before its files are recorded, so
whatever it is about to reference was touched within the grace and is kept; an upload slower than the grace
(between asking which chunks are missing and recording its files) may fail cleanly with "never uploaded" and
is tried again, but nothing recorded is ever lost.

A touch writes only where the stored time is older than a quarter of the grace (refresh_before), so ingest
rarely pays a write for it; the collector's cutoff stays three quarters of a grace behind any fresh reference.
"""

DEFAULT_GRACE = 3600.0  # seconds: `pfs server --gc-grace`


def refresh_before(now: float, grace: float) -> float:
    """Touched before this (at NOW, under GRACE), a chunk or object found in use gets a new time."""
    return now - grace / 4
