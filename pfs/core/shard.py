"""Shards: which of N workers sees which part of a commit (pure; no I/O).

| method | partition | worker i of N sees |
|---|---|---|
| map | BLOCK | every file, but only its blocks (line-aligned chunks) in part i of N equal parts of the commit's bytes |
| reduce | FILE | whole top-level entries (a file, or a directory with all it holds) assigned to i |
| global | REPO | everything |

map lays the commit's files end to end in path order (a directory's entries
in name order, each directory's files where its name sorts), T bytes in all,
and cuts that into N slices of T/N bytes: worker i sees the blocks whose
middle lies in slice i. So every worker gets within one block of T/N bytes
(a hash of the path and block number gave 2 workers of 100 blocks 53% and
47%, and the slower one sets the job's time), each reads a run of
consecutive blocks, and a file's shards, read in worker order, are the
file. A file's place is the sizes of what sorts before it, which a
commit's directory listings carry (a directory's size is all it holds), so
a mount places every file it lists without asking for more; with SINCE the
bytes laid out are those a worker is shown (what changed), whose directory
sizes the server counts the same way, so the changed bytes are what is
balanced. A commit of fewer blocks than workers leaves some with none; a
job of several inputs cuts each on its own (worker_shards), so each worker
gets its share of each.

reduce keeps a hash of the top-level name mod N: its unit is a whole entry,
so no split does better than the largest one, and a name goes to the same
worker whatever else the commit holds.

Both are the same on every machine and every run: every worker computes its
own share from the same listing, without talking to the others. Across
i = 0..N-1 every byte is seen exactly once (map, reduce), or by every worker
(global).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from pfs.core.errors import InvalidArgument
from pfs.core.model import ChunkRef

METHODS = ("map", "reduce", "global")
MAX_SHARDS = 2**31 - 1  # the wire's int32


@dataclass(frozen=True)
class Shard:
    method: str = "global"
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgument(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if not (1 <= self.count <= MAX_SHARDS and 0 <= self.index < self.count):
            raise InvalidArgument(f"invalid shard {self.index}/{self.count}: need 0 <= i < N <= {MAX_SHARDS}")

    @classmethod
    def parse(cls, spec: str, method: str) -> "Shard":
        """A shard from 'i/N' (as the CLI takes it)."""
        try:
            index, count = (int(x) for x in spec.split("/"))
        except ValueError:
            raise InvalidArgument(f"invalid shard {spec!r}: write it as i/N, e.g. 0/4") from None
        return cls(method, index, count)

    def __str__(self) -> str:
        return f"{self.method} {self.index}/{self.count}"

    def sees_entry(self, top_level_name: str) -> bool:
        """Whether a top-level file or directory is in this shard at all."""
        if self.method != "reduce" or self.count == 1:
            return True
        return xxhash.xxh3_64_intdigest(top_level_name.encode()) % self.count == self.index

    def blocks(self, chunks: Sequence[ChunkRef], start: int, total: int) -> list[ChunkRef]:
        """The chunks of a file that this shard sees: the file starts START bytes into the TOTAL bytes of its
        commit laid end to end in path order."""
        if self.method != "map" or self.count == 1:
            return list(chunks)
        seen = []
        for c in chunks:
            # the slice holding the chunk's middle, start + size / 2, counted in half bytes to stay whole; at most
            # the last (an empty chunk at the very end), and the first for a commit of empty chunks only
            owner = min((2 * start + c.size) * self.count // max(2 * total, 1), self.count - 1)
            if owner == self.index:
                seen.append(c)
            elif owner > self.index:  # the slices follow each other: none of the rest is ours
                break
            start += c.size
        return seen


def worker_shards(methods: Sequence[str], moduli: Sequence[int], worker: int) -> list[Shard]:
    """Each input's shard for WORKER: the worker number read as digits in the inputs' moduli (cross product)."""
    out = []
    for method, count in zip(methods, moduli):
        out.append(Shard(method, worker % count, count))
        worker //= count
    return out
