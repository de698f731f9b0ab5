"""A directory of many entries, and a file of many chunks, is stored in pages (server/trees.py): a change rewrites
its page and the list of pages, not every entry, and everything that reads trees and files (listings, lookups, the
collector, the check) reads pages."""

import sqlite3

from conftest import documents, put_commit
from pfs.core.model import CommitRef, FileWrite
from server.trees import FILE_PAGE, PAGED_FROM

FILES = 10_000  # over PAGED_FROM: about 16 pages


def object_bytes(server) -> int:
    """What the tree and file objects of the server's metadata take."""
    with sqlite3.connect(f"file:{server.data_dir / 'meta.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM objects").fetchone()[0]


def test_a_change_to_a_large_directory_rewrites_one_page_and_every_reader_reads_pages(server):
    assert FILES > PAGED_FROM
    client = server.client()
    client.create_repo("r")
    files = {f"d/f{i:05d}": b"%d\n" % i for i in range(FILES)}
    first = put_commit(client, "r", files)
    whole = object_bytes(server)
    server.pfs("put-file", "r", "master", "d/f04999b", input=b"new\n")  # a commit of its own
    added = object_bytes(server) - whole
    # a page (some 640 entries of 90 bytes), the list of pages and the root, where the whole directory, 950 KB,
    # was written again before
    assert added < 120_000, added
    server.pfs("delete-file", "r", "master", "d/f00001")
    ref = CommitRef("r", "master")
    names = [f.path for f in client.list_files(ref, "d")]
    assert names == sorted({*files, "d/f04999b"} - {"d/f00001"})  # every page, in order
    for path in ("d/f00000", "d/f04999", "d/f04999b", "d/f09999"):  # a lookup reads the one page that holds it
        assert server.pfs("get-file", "r", "master", path).stdout == files.get(path, b"new\n")
    assert server.pfs("inspect-file", "r", "master", "d/f00001", check=False).returncode == 1
    changed = [f["path"] for f in documents(server.pfs("list-file", "r", "master", "d", "--raw").text)
               if f["path"] not in files]
    assert changed == ["d/f04999b"]
    since = [f.path for f in client.list_files(ref, "d", since=first, recursive=True)]
    assert since == ["d/f04999b"]  # what changed, found page by page
    checked = server.pfs("check")
    assert "no problems" in checked.text, checked.text
    with server.client() as c:  # the collector walks pages: it frees none that a commit holds
        list(c.garbage_collect(False, 0.0))
    assert [f.path for f in client.list_files(ref, "d")] == names
    assert server.pfs("get-file", "r", first, "d/f00001").stdout == b"1\n"
    server.pfs("delete-commit", "r", "master")  # the deletion's commit: its page and page list are no one's now
    before = object_bytes(server)
    with server.client() as c:
        freed = list(c.garbage_collect(False, 0.0))[-1]
    assert 0 < freed.objects and object_bytes(server) < before
    assert [f.path for f in client.list_files(ref, "d")] == sorted([*files, "d/f04999b"])
    assert "no problems" in server.pfs("check").text


def test_a_directory_that_shrinks_below_pages_is_one_object_again(server):
    client = server.client()
    client.create_repo("r")
    put_commit(client, "r", {f"d/f{i:05d}": b"x\n" for i in range(PAGED_FROM + 2)})
    commit = client.start_commit("r", "master")
    for i in range(3):
        client.delete_file(CommitRef("r", commit.id), f"d/f{i:05d}")
    client.finish_commit(CommitRef("r", commit.id))
    assert len(list(client.list_files(CommitRef("r", "master"), "d"))) == PAGED_FROM - 1
    assert "no problems" in server.pfs("check").text


def test_a_large_directory_stored_whole_before_pages_reads_and_changes_into_pages(tmp_path, monkeypatch):
    """A store written before pages holds a large directory as one tree object: it reads as it did, and its first
    change stores it in pages."""
    from pfs.core import compression
    from pfs.core.hashing import address
    from pfs.core.model import ChunkRef, FileWrite
    from server import trees
    from server.meta.sqlite import SqliteMetaStore
    from server.storage.local import LocalChunkStore
    from server.store import Store

    meta, chunks = SqliteMetaStore(tmp_path / "meta.db"), LocalChunkStore(tmp_path)
    store = Store(chunks, meta, 1 << 20)
    try:
        data = b"x\n"
        store.put_chunks([[(address(data), compression.compress(data))]])
        chunk = (ChunkRef(address(data), len(data)),)
        store.create_repo("r")

        def commit(writes):
            ref = CommitRef("r", store.start_commit("r").id)
            store.put_files(ref, writes)
            store.finish_commit(ref)

        monkeypatch.setattr(trees, "PAGED_FROM", 10**9)  # as before pages
        commit([FileWrite(f"d/f{i:05d}", chunk) for i in range(FILES)])
        monkeypatch.undo()
        assert isinstance(_stored(store, "d"), dict)  # one object of every entry
        assert [f.path for f in store.list_files(CommitRef("r", "master"), "d")][-1] == f"d/f{FILES - 1:05d}"
        commit([FileWrite("d/new", chunk)])
        assert isinstance(_stored(store, "d"), trees._Pages)
        assert len(list(store.list_files(CommitRef("r", "master"), "d"))) == FILES + 1
    finally:
        chunks.close()
        meta.close()


def _stored(store, path: str):
    """The tree object of directory PATH at r@master, as stored: its entries, or its pages."""
    from server import store as stores
    from server import trees

    with store.meta.transaction() as tx:
        entry = store.trees.lookup(tx, stores._root(store._resolve(tx, CommitRef("r", "master"))), path)
        return trees._tree(tx.get_object(entry.address))


def test_a_page_kept_unencoded_is_what_encoding_it_again_gives(tmp_path):
    """A change to a paged directory keeps its untouched pages as they were, unencoded: after random writes,
    deletions and changes below, the directory stored is byte for byte the one a whole encoding gives."""
    import random

    from pfs.core import compression
    from pfs.core.hashing import address
    from pfs.core.model import ChunkRef, FileWrite
    from server import trees
    from server.meta.sqlite import SqliteMetaStore
    from server.storage.local import LocalChunkStore
    from server.store import Store

    meta, chunks = SqliteMetaStore(tmp_path / "meta.db"), LocalChunkStore(tmp_path)
    store = Store(chunks, meta, 1 << 20)
    try:
        blobs = [b"%d\n" % i for i in range(3)]
        store.put_chunks([[(address(b), compression.compress(b)) for b in blobs]])
        refs = [(ChunkRef(address(b), len(b)),) for b in blobs]
        store.create_repo("r")
        rnd = random.Random(7)
        names = {f"f{i:05d}" for i in range(FILES)}
        ref = CommitRef("r", store.start_commit("r").id)
        store.put_files(ref, [FileWrite(f"d/{n}", refs[0]) for n in sorted(names)])
        store.finish_commit(ref)
        for _ in range(12):
            ref = CommitRef("r", store.start_commit("r").id)
            writes = [FileWrite(f"d/f{rnd.randrange(2 * FILES):05d}", rnd.choice(refs), overwrite=True)
                      for _ in range(rnd.randrange(1, 40))]
            writes += [FileWrite(f"d/sub{rnd.randrange(3)}/x", refs[1])]  # a change below: an entry changed
            store.put_files(ref, writes)
            for gone in rnd.sample(sorted(names), rnd.randrange(0, 20)):
                store.delete_file(ref, f"d/{gone}")
                names.discard(gone)
            names |= {w.path[2:] for w in writes if "/" not in w.path[2:]}
            store.finish_commit(ref)
            with meta.transaction() as tx:
                stored = store.trees.lookup(tx, _root_of(store, tx), "d")
                whole = trees.Trees()._put_tree(tx, store.trees.entries(tx, stored.address))  # every page encoded
            assert isinstance(_stored(store, "d"), trees._Pages) and stored.address == whole.address
        assert {f.path for f in store.list_files(CommitRef("r", "master"), "d")} >= {f"d/{n}" for n in names}
    finally:
        chunks.close()
        meta.close()


def _root_of(store, tx):
    from server import store as stores

    return stores._root(store._resolve(tx, CommitRef("r", "master")))


def test_an_append_to_a_file_of_many_chunks_stores_its_last_page_and_every_reader_reads_pages(server):
    """A file of many chunks (2.4 pages of one line's chunk), then appended to a line a commit: each append stores
    the last page and the list of pages, not the whole list of chunks again."""
    client = server.client()
    client.create_repo("r")
    first = put_commit(client, "r", {"line": b"x\n"})
    [chunk] = client.inspect_file(CommitRef("r", first), "line").chunks
    count = FILE_PAGE * 2 + FILE_PAGE // 2
    made = client.start_commit("r", "master")
    client.put_files(CommitRef("r", made.id), [FileWrite("big", (chunk,) * count)])
    client.finish_commit(CommitRef("r", made.id))
    whole = object_bytes(server)
    server.pfs("put-file", "r", "master", "big", input=b"x\n")  # an append, in a commit of its own
    added = object_bytes(server) - whole
    assert added < 10_000 + FILE_PAGE * 40 // 2, added  # the last page, the page list and the root: not all again
    server.pfs("put-file", "r", "master", "big", input=b"y\n")
    ref = CommitRef("r", "master")
    assert server.pfs("get-file", "r", "master", "big").stdout == b"x\n" * (count + 1) + b"y\n"
    assert len(client.inspect_file(ref, "big").chunks) == count + 2
    [listed] = [f for f in client.list_files(ref, "", with_chunks=True) if f.path == "big"]  # read in a batch
    assert listed.chunks == (chunk,) * (count + 1) + listed.chunks[-1:] and len(listed.chunks) == count + 2
    since = list(client.list_files(ref, "", since=made.id, with_chunks=True))
    assert [(f.path, f.size_bytes) for f in since] == [("big", 4)]  # the two appended lines, found past the pages
    assert server.pfs("get-file", "r", made.id, "big").stdout == b"x\n" * count
    assert "no problems" in server.pfs("check").text
    with server.client() as c:  # the collector walks a file's pages: it frees none that a commit holds
        list(c.garbage_collect(False, 0.0))
    assert server.pfs("get-file", "r", "master", "big").stdout == b"x\n" * (count + 1) + b"y\n"
    assert server.pfs("get-file", "r", made.id, "big").stdout == b"x\n" * count
    server.pfs("put-file", "r", "master", "big", "-o", input=b"z\n")  # one chunk again: a file object of chunks
    server.pfs("delete-commit", "r", "master")
    assert "no problems" in server.pfs("check", "--read-data").text


def test_a_file_appended_to_and_replaced_at_random_reads_back_its_chunks_past_pages(tmp_path):
    """Appends of 1 to 300 chunks, and replacements, across the paged size and back: each commit's file reads back
    as the chunks written, and its pages are those a whole encoding gives."""
    import random

    from pfs.core import compression
    from pfs.core.hashing import address
    from pfs.core.model import ChunkRef
    from server import trees
    from server.meta.sqlite import SqliteMetaStore
    from server.storage.local import LocalChunkStore
    from server.store import Store

    meta, chunks = SqliteMetaStore(tmp_path / "meta.db"), LocalChunkStore(tmp_path)
    store = Store(chunks, meta, 1 << 20)
    try:
        blobs = [b"%d\n" % i for i in range(5)]
        store.put_chunks([[(address(b), compression.compress(b)) for b in blobs]])
        refs = [ChunkRef(address(b), len(b)) for b in blobs]
        store.create_repo("r")
        rnd = random.Random(11)
        expected: list[ChunkRef] = []
        most = 0
        for _ in range(25):
            added = [rnd.choice(refs) for _ in range(rnd.randrange(1, 300))]
            replace = rnd.random() < 0.15
            expected = added if replace else expected + added
            most = max(most, len(expected))
            ref = CommitRef("r", store.start_commit("r").id)
            store.put_files(ref, [FileWrite("f", tuple(added), overwrite=replace)])
            store.finish_commit(ref)
            assert store.inspect_file(CommitRef("r", "master"), "f").chunks == tuple(expected)
            with meta.transaction() as tx:
                stored = store.trees.lookup(tx, _root_of(store, tx), "f")
                assert stored.address == trees.Trees().put_file(tx, expected).address
                pages, _ = trees.references(tx.get_object(stored.address), False)
            assert len(pages) == (0 if len(expected) <= trees.FILE_PAGE else -(-len(expected) // trees.FILE_PAGE))
        assert most > 2 * trees.FILE_PAGE  # past three pages, and (replaced) back to none
    finally:
        chunks.close()



def test_a_listing_of_a_commit_deleted_and_collected_meanwhile_says_so(tmp_path):
    """A listing reads a large directory's pages as it goes: where its commit is deleted and collected before it
    reads them all, it ends saying so, not that an object is missing."""
    import pytest

    from pfs.core import compression
    from pfs.core.errors import NotFound
    from pfs.core.hashing import address
    from pfs.core.model import ChunkRef
    from server import trees
    from server.gc import Collector
    from server.meta.sqlite import SqliteMetaStore
    from server.storage.local import LocalChunkStore
    from server.store import LIST_READ, Store

    meta, chunks = SqliteMetaStore(tmp_path / "meta.db"), LocalChunkStore(tmp_path)
    store = Store(chunks, meta, 1 << 20)
    try:
        store.put_chunks([[(address(b"x\n"), compression.compress(b"x\n"))]])
        store.create_repo("r")
        ref = CommitRef("r", store.start_commit("r").id)
        entries = 3 * trees.PAGES_READ * trees.PAGE  # pages past the first query's
        store.put_files(ref, [FileWrite(f"d/f{i:05d}", (ChunkRef(address(b"x\n"), 2),)) for i in range(entries)])
        store.finish_commit(ref)
        listing = Store(chunks, meta, 1 << 20).list_files(ref, "d")  # a server's that has not read it yet
        assert len([next(listing) for _ in range(LIST_READ)]) == LIST_READ  # the first batch, read
        store.delete_commit(ref)
        list(Collector(meta, chunks, "me", 0.0).collect())
        with pytest.raises(NotFound, match=f"commit {ref.ref} of 'r' was deleted while it was listed"):
            list(listing)
    finally:
        chunks.close()
