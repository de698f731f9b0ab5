"""File and tree objects: content-addressed, immutable, like git's blobs and trees.

A file object lists its chunks (packed binary, 40 bytes each). A file of more
than FILE_PAGE chunks lists them in pages instead: each page a file object of
FILE_PAGE chunks (the last of as many as are left), counted from the file's
start, so an append stores its last page and the list of pages, and the pages
before it are the objects they were (without pages, a file appended to 2,000
times stored 2,000 whole chunk lists, of 1 to 2,000 chunks). A tree object
lists a directory's entries (JSON, sorted by name). A directory of more than
PAGED_FROM entries is a tree object of pages instead, {"pages": [[first name,
address, entries, size], ...]}, each page a tree object of the entries from
that name on; a page ends after a name whose hash says so, so a change
rewrites its page and the list of pages, not every entry (and a lookup reads
one page). Changing one file rewrites only the trees on the path to it; equal
files and subtrees share one object. A directory is an entry of its own, as in
a file system and in Pachyderm 1.x (not as in git): made explicitly or by a
file put below it, it stays, empty or not, until it is deleted, so a stored
tree that programs rely on (a bare git repository's empty refs/tags, a
maildir's cur/new/tmp) reads back as it was. An empty directory is the tree
object "[]"; a commit with no files at all keeps no root tree (None), as
before.
"""

import bisect
import itertools
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import xxhash

from pfs.core import paths
from pfs.core.errors import DataLoss, FailedPrecondition, NotFound
from pfs.core.hashing import address
from pfs.core.model import ChunkRef
from server.meta import Tx


@dataclass(frozen=True)
class Entry:
    """A name in a directory: a file or a directory object, with its total size."""

    name: str
    is_dir: bool
    address: bytes
    size: int


@dataclass
class Edit:
    """Pending changes to one directory: name -> new file entry, None (deleted) or a nested Edit."""

    fresh: bool = False  # the directory was deleted earlier in the same batch: start empty
    children: dict[str, "Entry | Edit | None"] = field(default_factory=dict)

    def put(self, parts: list[str], entry: Entry | None) -> None:
        """Records a file (or a deletion, with None) at the path PARTS below this directory."""
        name = parts[0]
        if len(parts) > 1:
            self._directory(name).put(parts[1:], entry)
        elif entry is not None and isinstance(self.children.get(name), Edit):
            raise FailedPrecondition(f"cannot write file {name!r}: it is a directory")
        else:
            self.children[name] = entry

    def make_directory(self, parts: list[str]) -> None:
        """Records a directory at the path PARTS below this directory: made if missing, kept as it is if there."""
        edit = self
        for name in parts:
            edit = edit._directory(name)

    def _directory(self, name: str) -> "Edit":
        """The pending edit of the directory NAME, made (empty if it was deleted earlier in the batch) if none is."""
        child = self.children.get(name, _ABSENT)
        if child is None or child is _ABSENT:
            child = self.children[name] = Edit(fresh=child is None)
        elif isinstance(child, Entry):
            raise FailedPrecondition(f"cannot write below {name!r}: it is a file")
        return child


_ABSENT = object()
EMPTY_TREE = address(b"[]")  # the tree object of an empty directory
_CHUNK_REF = struct.Struct("<32sQ")  # a file object: (address, plain size) per chunk, in order
FILE_PAGE = 256  # chunks a file object lists at most (10 KiB); a file of more is a list of pages:
_FILE_PAGES = b"pfs file pages\n"  # this, then (address, chunks, plain size) of each page, in order; never a whole
_PAGE_REF = struct.Struct("<32sQQ")  # number of chunk references long (15 + 48n bytes is not a multiple of 40)
LOAD_BATCH = 1000  # file objects read in one query by loading_files (fewer than the cache holds)
# What the cache of decoded objects holds at most: directory entries and file chunks, about 330 and 150 bytes each,
# so 80 MB at most (bounded by objects instead, 4,096 versions of a directory of 10,000 files, each a file changed,
# took the server past 1.7 GB, and larger directories to any size)
CACHE_ENTRIES = 250_000
PAGE = 512  # entries of a page of a large directory, on average: a page ends after a name whose hash is 0 mod PAGE...
PAGE_MIN, PAGE_MAX = PAGE // 4, 8 * PAGE  # ...once it holds PAGE_MIN, or at PAGE_MAX
PAGED_FROM = 4 * PAGE  # entries a directory holds at most in one tree object
PAGES_READ = 16  # pages of a directory a listing reads in one query


@dataclass(frozen=True)
class _Pages:
    """A paged directory's tree object: each page's first name, address, entry count and size, in name order."""

    first: tuple[str, ...]
    pages: tuple[tuple[bytes, int, int], ...]

    def __len__(self) -> int:  # what the cache counts it for
        return len(self.first)


def _intact(addr: bytes, data: bytes) -> bytes:
    """DATA, read from the store as object ADDR; DataLoss if its bytes are not that object's (changed on the disk:
    SQLite keeps no checksums), rather than a file renamed or a size wrong."""
    if address(data) != addr:
        raise DataLoss(f"object {addr.hex()} does not match its address: the metadata is damaged (pfs check says "
                       "which commits it breaks)")
    return data


def _loaded(addr: bytes, data: bytes | None, decode):
    """Object ADDR, as read from the store (None: not there), decoded."""
    if data is None:
        raise NotFound(f"object {addr.hex()} is missing")
    return decode(_intact(addr, data))


def _chunk_refs(data: bytes) -> tuple[ChunkRef, ...]:
    """A file object's chunks (not a paged file's: see _file_pages)."""
    return tuple(itertools.starmap(ChunkRef, _CHUNK_REF.iter_unpack(data)))


def _file_pages(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """The (address, chunks, size) of each page of a paged file's object; None for a file object of chunks."""
    if len(data) % _CHUNK_REF.size == 0 or not data.startswith(_FILE_PAGES):
        return None
    return list(_PAGE_REF.iter_unpack(data[len(_FILE_PAGES):]))


def _packed(chunks: Sequence[ChunkRef]) -> bytes:
    return b"".join(_CHUNK_REF.pack(c.address, c.size) for c in chunks)


def unchanged(entry: Entry, old: Entry | None) -> bool:
    """Whether ENTRY is what OLD was: the same kind of entry, of the same object."""
    return old is not None and old.is_dir == entry.is_dir and old.address == entry.address


def _entries(value: dict | tuple | _Pages | int) -> int:
    """What a cached value counts for: a directory's entries, a file's chunks, a paged directory's pages (each some
    hundreds of bytes), or 1."""
    return len(value) if isinstance(value, (dict, tuple, _Pages)) else 1


def _tree(data: bytes) -> dict[str, Entry] | _Pages:
    """A tree object: its entries by name, or a paged directory's pages."""
    rows = json.loads(data)
    if isinstance(rows, dict):
        pages = rows["pages"]
        return _Pages(tuple(p[0] for p in pages), tuple((bytes.fromhex(p[1]), p[2], p[3]) for p in pages))
    return {n: Entry(n, d, bytes.fromhex(a), s) for n, d, a, s in rows}


def _cuts(names: list[str]) -> Iterator[tuple[int, int]]:
    """Where NAMES (a directory's, in order) are cut into pages, as their names say (see PAGE): each page's start
    and end."""
    start = 0
    for i, name in enumerate(names):
        held = i + 1 - start
        if held >= PAGE_MAX or (held >= PAGE_MIN and xxhash.xxh3_64_intdigest(name.encode()) % PAGE == 0):
            yield start, i + 1
            start = i + 1
    if start < len(names):
        yield start, len(names)


def _row(e: Entry) -> list:
    return [e.name, e.is_dir, e.address.hex(), e.size]


def _touched(changed: list[str], low: str, high: str | None) -> bool:
    """Whether a name of CHANGED (in order) lies from LOW up to HIGH (None: on to the end)."""
    i = bisect.bisect_left(changed, low)
    return i < len(changed) and (high is None or changed[i] < high)


class Trees:
    """Reads and writes file and tree objects through a transaction, caching decoded trees and the sizes of
    changes between them."""

    def __init__(self, cache_entries: int = CACHE_ENTRIES) -> None:
        # objects by address; a directory's changed size by (address, earlier address, diff)
        self._cache: OrderedDict[object, dict[str, Entry] | tuple[ChunkRef, ...] | int] = OrderedDict()
        self._cache_entries = cache_entries
        self._cached_entries = 0  # of what the cache holds: a directory's entries, a file's chunks, or 1
        self._lock = threading.Lock()  # the server's calls run in threads

    # -- objects

    def put_file(self, tx: Tx, chunks: list[ChunkRef], extended: Entry | None = None) -> Entry:
        """Stores a file object (paged, past FILE_PAGE chunks); returns an unnamed entry for it. EXTENDED: a stored
        file whose chunks CHUNKS begins with (an append to it), whose full pages are CHUNKS' first, kept as they
        are: an append packs and stores its last page, however long the file. A paged file's chunks are cached
        as file_chunks would read them back: the next append starts from them."""
        if len(chunks) <= FILE_PAGE:
            return Entry("", False, self._put_object(tx, _packed(chunks)), sum(c.size for c in chunks))
        pages = self._full_pages(tx, extended)
        for i in range(len(pages) * FILE_PAGE, len(chunks), FILE_PAGE):
            page = chunks[i : i + FILE_PAGE]
            pages.append((self._put_object(tx, _packed(page)), len(page), sum(c.size for c in page)))
        addr = self._put_object(tx, _FILE_PAGES + b"".join(_PAGE_REF.pack(*p) for p in pages))
        self._keep(addr, tuple(chunks))
        return Entry("", False, addr, sum(size for _, _, size in pages))

    @staticmethod
    def _full_pages(tx: Tx, entry: Entry | None) -> list[tuple[bytes, int, int]]:
        """The full pages of a stored paged file, first to last (none for None, or a file of one chunk list)."""
        pages = _file_pages(_loaded(entry.address, tx.get_object(entry.address), bytes)) if entry else None
        return [p for p in pages or () if p[1] == FILE_PAGE]

    @staticmethod
    def _put_object(tx: Tx, data: bytes) -> bytes:
        addr = address(data)
        tx.put_object(addr, data)
        return addr

    def file_chunks(self, tx: Tx, entry: Entry) -> tuple[ChunkRef, ...]:
        return self._decoded(tx, entry.address, lambda data: self._chunks(tx, data))

    def _chunks(self, tx: Tx, data: bytes) -> tuple[ChunkRef, ...]:
        """The chunks of a file object's DATA: a paged file's pages read in one query."""
        pages = _file_pages(data)
        if pages is None:
            return _chunk_refs(data)
        addresses = [a for a, _, _ in pages]
        found = self._many(tx, addresses, _chunk_refs, keep=False)
        return tuple(itertools.chain.from_iterable(found[a] for a in addresses))

    def loading_files(self, tx: Tx, entries: Iterable[Entry]) -> Iterator[Entry]:
        """ENTRIES, in order, with what file_chunks gives for their files cached LOAD_BATCH at a time before they
        come: those not cached are read in one query, where a directory of small files would cost one for each."""
        entries = iter(entries)
        while batch := list(itertools.islice(entries, LOAD_BATCH)):
            self._many(tx, [e.address for e in batch if not e.is_dir], lambda data: self._chunks(tx, data))
            yield from batch

    def entries(self, tx: Tx, tree: bytes | None) -> dict[str, Entry]:
        """The entries of a directory object (None or b"" is the empty directory)."""
        if not tree:
            return {}
        found = self._decoded(tx, tree, _tree)
        if isinstance(found, dict):
            return found

        def merged() -> dict[str, Entry]:  # the pages read in one query, and not cached apart
            addresses = [a for a, _, _ in found.pages]
            pages = self._many(tx, addresses, _tree, keep=False)
            entries: dict[str, Entry] = {}
            for a in addresses:
                entries.update(pages[a])
            return entries
        return self._cached(("all", tree), merged)

    def listed(self, tx: Tx, tree: bytes | None) -> Iterator[Entry]:
        """The entries of a directory object in name order: a paged directory's read PAGES_READ pages at a time, as
        the listing reaches them, so the first come at once however large it is. Its pages are cached only where
        it takes a small part of the cache: a listing of one larger would push out all else, and then itself."""
        if not tree:
            return
        found = self._decoded(tx, tree, _tree)
        if isinstance(found, dict):
            yield from sorted(found.values(), key=lambda e: e.name)
            return
        keep = sum(n for _, n, _ in found.pages) <= self._cache_entries // 4
        for i in range(0, len(found.pages), PAGES_READ):
            addresses = [a for a, _, _ in found.pages[i : i + PAGES_READ]]
            pages = self._many(tx, addresses, _tree, keep)
            for a in addresses:
                yield from sorted(pages[a].values(), key=lambda e: e.name)

    def child(self, tx: Tx, tree: bytes, name: str) -> Entry | None:
        """The entry NAME of a directory object, or None: in a paged directory, only the page that may hold it is
        read."""
        if not tree:
            return None
        found = self._decoded(tx, tree, _tree)
        if isinstance(found, dict):
            return found.get(name)
        with self._lock:
            whole = self._cache.get(("all", tree))  # listed whole lately
        if whole is not None:
            return whole.get(name)
        at = bisect.bisect_right(found.first, name) - 1
        return None if at < 0 else self._decoded(tx, found.pages[at][0], _tree).get(name)

    def _decoded(self, tx: Tx, addr: bytes, decode):
        """An object, decoded, from the cache or the store."""
        return self._cached(addr, lambda: _loaded(addr, tx.get_object(addr), decode))

    def _many(self, tx: Tx, addresses: Sequence[bytes], decode, keep: bool = True) -> dict:
        """Objects ADDRESSES, decoded, by address: those cached from the cache, the others read in one query (and
        cached where KEEP); NotFound for one that is missing."""
        with self._lock:
            found = {a: self._cache.get(a) for a in addresses}
        missing = [a for a, value in found.items() if value is None]
        data = tx.get_objects(missing) if missing else {}
        for a in missing:
            found[a] = _loaded(a, data.get(a), decode)
            if keep:
                self._keep(a, found[a])
        return found

    def _cached(self, key: object, compute):
        """What COMPUTE gives for KEY, computed once while it stays among the most recently used (what is
        derived from objects never changes, as they never do, so caching is safe)."""
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        return self._keep(key, compute())

    def _keep(self, key: object, value):
        with self._lock:
            old = self._cache.pop(key, None)
            self._cached_entries += _entries(value) - (0 if old is None else _entries(old))
            self._cache[key] = value
            while self._cached_entries > self._cache_entries and len(self._cache) > 1:
                self._cached_entries -= _entries(self._cache.popitem(last=False)[1])
        return value

    # -- changes

    def added_chunks(self, tx: Tx, entry: Entry, old: Entry | None, diff: bool) -> tuple[ChunkRef, ...]:
        """What the file ENTRY holds that it did not as OLD (None: it was not there): under DIFF, the chunks
        added at its end where OLD is a file it only appends to; else all of its chunks."""
        chunks = self.file_chunks(tx, entry)
        if diff and old is not None and not old.is_dir:
            before = self.file_chunks(tx, old)
            if chunks[: len(before)] == before:
                return chunks[len(before):]
        return chunks

    def changed_size(self, tx: Tx, entry: Entry, old: Entry | None, diff: bool) -> int:
        """The bytes of ENTRY (a file, or a directory with all it holds) that changed since it was OLD (None:
        it was not there): those a listing since then shows, by added_chunks for each file that changed."""
        if unchanged(entry, old):
            return 0
        if not entry.is_dir:
            return sum(c.size for c in self.added_chunks(tx, entry, old, diff))
        if old is None or not old.is_dir:  # all it holds is new
            return entry.size

        def walk() -> int:
            olds = self.entries(tx, old.address)
            news = self.entries(tx, entry.address).values()
            return sum(self.changed_size(tx, e, olds.get(e.name), diff) for e in news)
        return self._cached((entry.address, old.address, diff), walk)

    def _put_tree(self, tx: Tx, entries: dict[str, Entry], before: "_Pages | None" = None,
                  changed: Sequence[str] = ()) -> Entry:
        """Stores a directory of ENTRIES. Paged: a page of BEFORE (the pages of the directory it was) that starts
        where a new one does, holds as many entries and no name of CHANGED (those written or deleted since) is kept
        as it is, unencoded: it holds the same entries, so the same bytes."""
        names = sorted(entries)
        size = sum(e.size for e in entries.values())
        if len(names) <= PAGED_FROM:
            return Entry("", True, self._put_rows(tx, [_row(entries[n]) for n in names]), size)
        kept = dict(zip(before.first, before.pages)) if before is not None else {}
        changed = sorted(changed)
        pages = []
        for start, end in _cuts(names):
            first, old = names[start], kept.get(names[start])
            upto = names[end] if end < len(names) else None  # the next page's first name
            if old is not None and old[1] == end - start and not _touched(changed, first, upto):
                pages.append([first, old[0].hex(), old[1], old[2]])
                continue
            rows = [_row(entries[n]) for n in names[start:end]]
            pages.append([first, self._put_rows(tx, rows).hex(), end - start, sum(r[3] for r in rows)])
        addr = self._put_rows(tx, {"pages": pages})
        self._keep(("all", addr), entries)  # as entries() would read it back: the next change starts from it
        return Entry("", True, addr, size)

    def _put_rows(self, tx: Tx, rows: list | dict) -> bytes:
        return self._put_object(tx, json.dumps(rows, separators=(",", ":")).encode())

    # -- paths

    def lookup(self, tx: Tx, root: Entry, path: str) -> Entry | None:
        """The entry at a normalized PATH below the directory ROOT ('' is ROOT itself), or None."""
        node: Entry | None = root
        for name in paths.components(path):
            if node is None or not node.is_dir:
                return None
            node = self.child(tx, node.address, name)
        return node

    def apply(self, tx: Tx, root: bytes | None, edit: Edit, where: str = "") -> Entry:
        """Applies EDIT to the directory ROOT; returns the new directory's entry (EMPTY_TREE's if it holds
        nothing)."""
        entries = {} if edit.fresh else dict(self.entries(tx, root))
        for name, change in edit.children.items():
            path = paths.join(where, name)
            old = entries.get(name)
            if change is None:
                entries.pop(name, None)
            elif isinstance(change, Entry):
                if old is not None and old.is_dir:
                    raise FailedPrecondition(f"cannot write file {path!r}: it is a directory")
                entries[name] = Entry(name, False, change.address, change.size)
            else:
                if old is not None and not old.is_dir:
                    raise FailedPrecondition(f"cannot write below {path!r}: it is a file")
                sub = self.apply(tx, old.address if old else None, change, path)
                entries[name] = Entry(name, True, sub.address, sub.size)
        before = self._decoded(tx, root, _tree) if root and not edit.fresh else None
        return self._put_tree(tx, entries, before if isinstance(before, _Pages) else None, list(edit.children))


def references(data: bytes, is_dir: bool) -> tuple[list[Entry], list[bytes]]:
    """What an object refers to, read-only, for walks over every object (server/reach.py): a tree's entries, or
    the chunk addresses of a file. The pages of a paged directory or file are entries without names of their own."""
    if is_dir:
        tree = _tree(data)
        if isinstance(tree, _Pages):
            return [Entry("", True, a, s) for a, _, s in tree.pages], []
        return list(tree.values()), []
    pages = _file_pages(data)
    if pages is not None:
        return [Entry("", False, a, s) for a, _, s in pages], []
    return [], [a for a, _ in _CHUNK_REF.iter_unpack(data)]
