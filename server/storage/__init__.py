"""Chunk stores: where compressed chunks live, behind one interface.

A store keeps bytes under addresses it is given; checking that the bytes
match the address is the caller's job (server/store.py), done once for all
backends. Backends: local.py (a directory). Each passes tests/test_chunk_store.py.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

from pfs.core.errors import FailedPrecondition
from pfs.core.model import ChunkLocation, DirectRead


@dataclass
class Swept:
    """What a chunk store's garbage collection freed (or, in a dry run, would free)."""

    chunks: int = 0
    bytes: int = 0  # of the store's room: chunks freed, packs deleted less the packs written in their place
    packs: int = 0  # deleted
    rewritten: int = 0  # packs whose live chunks were copied to a new one


class ChunkStore(ABC):
    """Compressed chunks by address. Writes are atomic and durable when put() returns.

    Each chunk has a time it was last touched (server/grace.py): put() sets it; missing() and heads() refresh it
    for each chunk they find, where it is older than a quarter of the store's GRACE."""

    @abstractmethod
    def where(self) -> str:
        """Where the chunks are, as every server of a cluster must name it alike."""

    def claim(self, cluster: str) -> None:
        """Marks the store CLUSTER's where others could take it for theirs; FailedPrecondition if another's it is.
        A data dir is one server's alone."""

    @abstractmethod
    def missing(self, addresses: Iterable[bytes]) -> list[bytes]:
        """The addresses among ADDRESSES that the store lacks, in order; those it holds are touched."""

    @abstractmethod
    def put(self, chunks: Iterable[tuple[bytes, bytes]]) -> int:
        """Stores (address, compressed bytes) pairs; returns how many of them the store did not hold before.

        Storing a chunk again is harmless and not counted (a put racing another put of the same chunk may count
        it in both). A put that fails part-way keeps the chunks it had made durable (whole, and skipped by a
        retry) and leaves no trace of the rest.
        """

    @abstractmethod
    def get(self, address: bytes) -> bytes:
        """The compressed bytes at ADDRESS; raises pfs.core.errors.DataLoss if absent."""

    def get_many(self, addresses: Sequence[bytes]) -> Iterator[bytes]:
        """The compressed bytes of each of ADDRESSES, in order (a store may fetch them together, or ahead)."""
        return map(self.get, addresses)

    @abstractmethod
    def heads(self, addresses: Iterable[bytes], size: int) -> dict[bytes, bytes]:
        """The first SIZE compressed bytes (all, if fewer) of each chunk among ADDRESSES the store holds; the
        absent ones are left out. What a frame's header says (its plain size) without reading the whole frame.
        Those found are touched."""

    @abstractmethod
    def stored(self) -> Iterator[bytes]:
        """The address of every chunk the store holds (server/check.py)."""

    @abstractmethod
    def collect(self, live: Callable[[bytes], bool], cutoff: float, dry_run: bool) -> Generator[int, None, Swept]:
        """Frees (unless DRY_RUN) every chunk that is not LIVE and was last touched before CUTOFF, each one
        atomically against a touch (server/gc.py); yields how many chunks it looked at since it last yielded, and
        returns what it freed. A collection cut off midway has freed only such chunks, and the next one frees the rest."""

    @abstractmethod
    def set_aside(self, addresses: Sequence[bytes]) -> None:
        """Takes the chunks of ADDRESSES, found corrupt, out of the store (their bytes kept where one may look at
        them), so that a put of their data stores them anew, and every commit that holds them is whole again."""

    def describe(self) -> DirectRead | None:
        """How a client on this machine may read the chunks without the server (None: only through it)."""
        return None

    def locate(self, addresses: Sequence[bytes]) -> list[ChunkLocation | None]:
        """Where a client may fetch each of ADDRESSES without the server (None: a chunk the store lacks), for a
        store whose describe() offers kind "url"."""
        raise FailedPrecondition("this server's chunk store gives no chunk locations: read chunks through it")

    @abstractmethod
    def close(self) -> None: ...
