"""Readers of a server's chunk store that bypass the server, by the kind of store it offers (its Info's DirectRead).

A reader fetches a batch of chunks and checks each; a chunk it cannot give (absent, out of reach, wrong) comes
back None and is read through the server instead, so an offer is only ever a faster way to the same bytes.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from pfs import chunk_dir
from pfs.core.model import URL_READS, ChunkRef, DirectRead
from pfs.vfs.local_chunks import LocalChunks
from pfs.vfs.url_chunks import Locate, UrlChunks


class DirectReader(Protocol):
    root: str  # where the chunks are read from (the offer's root), as a mount names it

    def read_many(self, refs: Sequence[ChunkRef]) -> Iterable[bytes | None]:
        """Each chunk's plain bytes, in order (as each is read, where the reader can), or None."""

    def expect(self, refs: Iterable[ChunkRef]) -> None:
        """REFS are likely to be read soon (what a reader of a file or a directory goes on to)."""

    def close(self) -> None: ...


# By DirectRead kind: a reader of the offer (its chunks located through the server's LocateChunks where the kind
# needs it), or None where this client cannot read it.
READERS: dict[str, Callable[[DirectRead, Locate], DirectReader | None]] = {
    chunk_dir.KIND: lambda offer, locate: LocalChunks.find(offer.root),
    URL_READS: lambda offer, locate: UrlChunks(locate, offer.root),
}


def direct_reader(offer: DirectRead | None, locate: Locate) -> DirectReader | None:
    """A reader of the store a server offers (OFFER), if this client knows its kind and can reach it; LOCATE is
    the server's LocateChunks (Client.locate_chunks)."""
    make = READERS.get(offer.kind) if offer else None
    return make(offer, locate) if make else None
