"""Shards: which of N workers sees which part of a commit (pure; no I/O).

| method | partition | worker i of N sees |
|---|---|---|
| map | BLOCK | every file, but only its blocks (line-aligned chunks) assigned to i |
| reduce | FILE | whole top-level entries (a file, or a directory with all it holds) assigned to i |
| global | REPO | everything |

Assignment is xxh3 of the path (or of the path and block number) mod N, so it
is the same on every machine and every run. Across i = 0..N-1 every byte is
seen exactly once (map, reduce), or by every worker (global).
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

    def blocks(self, path: str, chunks: Sequence[ChunkRef]) -> list[ChunkRef]:
        """The chunks of the file at PATH that this shard sees."""
        if self.method != "map" or self.count == 1:
            return list(chunks)
        prefix = path.encode() + b"\0"
        return [
            c for k, c in enumerate(chunks)
            if xxhash.xxh3_64_intdigest(prefix + str(k).encode()) % self.count == self.index
        ]


def worker_shards(methods: Sequence[str], moduli: Sequence[int], worker: int) -> list[Shard]:
    """Each input's shard for WORKER: the worker number read as digits in the inputs' moduli (cross product)."""
    out = []
    for method, count in zip(methods, moduli):
        out.append(Shard(method, worker % count, count))
        worker //= count
    return out
