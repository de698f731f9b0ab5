"""What the commits reach: a walk over the file and tree objects from a set of roots, for garbage collection
(server/gc.py) and the store's check (server/check.py).

Objects are read a batch at a time, each in a short transaction of its own, and each distinct object once
however many commits share it: objects never change, so what a root reached when it was read is what it reaches.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from server.meta import MetaStore
from server.trees import Entry, references

BATCH = 2000  # objects read in one transaction


@dataclass(frozen=True)
class Reached:
    """One object the walk came to: its entries (a tree's) or chunk addresses (a file's); MISSING if absent."""

    address: bytes
    is_dir: bool
    entries: list[Entry]
    chunks: list[bytes]
    missing: bool = False


def walk(meta: MetaStore, roots: Iterable[bytes], seen: Callable[[bytes], bool]) -> Iterator[Reached]:
    """Every object below the trees ROOTS (each a root tree's address), skipping those SEEN says were met
    already (it records each it is asked about), in no particular order."""
    todo = [(a, True) for a in roots if not seen(a)]
    while todo:
        batch = todo[-BATCH:]
        del todo[-BATCH:]
        with meta.transaction() as tx:
            found = tx.get_objects([a for a, _ in batch])
        for address, is_dir in batch:
            data = found.get(address)
            if data is None:
                yield Reached(address, is_dir, [], [], missing=True)
                continue
            entries, chunks = references(data, is_dir)
            todo += [(e.address, e.is_dir) for e in entries if not seen(e.address)]
            yield Reached(address, is_dir, entries, chunks)


class AddressSet:
    """A set of addresses in a few bytes each: their first 8 bytes, as integers. Two addresses that share them
    (about one pair in 10^10 among 10^5 addresses) count as one: garbage collection then keeps a dead chunk."""

    def __init__(self) -> None:
        self._keys: set[int] = set()

    def add(self, address: bytes) -> bool:
        """Adds ADDRESS; whether it was in the set already."""
        key = int.from_bytes(address[:8], "little")
        if key in self._keys:
            return True
        self._keys.add(key)
        return False

    def __contains__(self, address: bytes) -> bool:
        return int.from_bytes(address[:8], "little") in self._keys

    def __len__(self) -> int:
        return len(self._keys)
