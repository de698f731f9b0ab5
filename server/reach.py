"""What the commits reach: a walk over the file and tree objects from a set of roots, for garbage collection
(server/gc.py) and the store's check (server/check.py).

Objects are read a batch at a time (of a bounded size: a store's trees may run to gigabytes), each in a short
transaction of its own, and each distinct object once however many commits share it: objects never change, so
what a root reached when it was read is what it reaches.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pfs.core import hashing
from server.meta import MetaStore
from server.trees import Entry, references

BATCH = 2000  # objects read in one transaction...
BATCH_BYTES = 64 << 20  # ...and of at most this many bytes together (but one): a tree object of 100,000 files is 10 MB


@dataclass(frozen=True)
class Reached:
    """One object the walk came to: its entries (a tree's) or chunk addresses (a file's); or, if it cannot be
    read, WRONG says why ("is missing", "does not match its address": its bytes changed on the disk)."""

    address: bytes
    is_dir: bool
    entries: list[Entry]
    chunks: list[bytes]
    wrong: str = ""


def walk(meta: MetaStore, roots: Iterable[bytes], seen: set[bytes]) -> Iterator[Reached]:
    """Every object below the trees ROOTS (each a root tree's address) not in SEEN, in no particular order; each
    is added to SEEN. An exact set: an object taken for another would leave what it reaches unwalked."""

    def new(address: bytes) -> bool:
        if address in seen:
            return False
        seen.add(address)
        return True

    todo = [(a, True) for a in roots if new(a)]
    while todo:
        window = todo[-BATCH:]
        with meta.transaction() as tx:
            sizes = tx.object_sizes([a for a, _ in window])
        taken = total = 0
        for address, _ in reversed(window):
            total += sizes.get(address, 0)
            if taken and total > BATCH_BYTES:
                break
            taken += 1
        batch = todo[-taken:]
        del todo[-taken:]
        with meta.transaction() as tx:
            found = tx.get_objects([a for a, _ in batch])
        for address, is_dir in batch:
            data = found.get(address)
            if data is None or hashing.address(data) != address:
                yield Reached(address, is_dir, [], [], "is missing" if data is None else "does not match its address")
                continue
            entries, chunks = references(data, is_dir)
            todo += [(e.address, e.is_dir) for e in entries if new(e.address)]
            yield Reached(address, is_dir, entries, chunks)


class AddressSet:
    """A set of chunk addresses in a few bytes each: their first 8 bytes, as integers. Two addresses that share
    them (about one pair in 10^10 among 10^5 addresses) count as one: garbage collection then keeps a dead chunk."""

    def __init__(self) -> None:
        self._keys: set[int] = set()

    def add(self, address: bytes) -> None:
        self._keys.add(int.from_bytes(address[:8], "little"))

    def __contains__(self, address: bytes) -> bool:
        return int.from_bytes(address[:8], "little") in self._keys

    def __len__(self) -> int:
        return len(self._keys)
