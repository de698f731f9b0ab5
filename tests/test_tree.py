"""The tree a mount shows (pfs.vfs.tree) over a real server: how its listings are fetched."""

import pytest

from conftest import put_commit
from pfs.client import Client
from pfs.core.errors import DataLoss, NotFound
from pfs.vfs import tree as vfs_tree
from pfs.vfs.tree import ROOT_INODE, RepoTree

FILES = {f"d{i % 4}/s{i % 3}/f{i:02d}": b"%d\n" % i for i in range(36)} | {"top": b"top\n"}


class CountingClient(Client):
    """The real client, noting each directory it lists: (path, recursive)."""

    def __init__(self, address: str, token: str | None) -> None:
        super().__init__(address, token)
        self.listed: list[tuple[str, bool]] = []
        self.commits_listed = 0

    def list_files(self, ref, path="", *args, recursive=False, **kwargs):
        self.listed.append((path, recursive))
        return super().list_files(ref, path, *args, recursive=recursive, **kwargs)

    def list_commits(self, *args, **kwargs):
        self.commits_listed += 1
        return super().list_commits(*args, **kwargs)


@pytest.fixture
def client(server):
    client = CountingClient(server.address, server.token)
    client.create_repo("r")
    put_commit(client, "r", FILES)
    client.listed.clear()
    yield client
    client.close()


def walk(tree: RepoTree, inode: int) -> dict[str, bytes]:
    """Every file below the directory INODE, looked up by name as the kernel does, and read."""
    out = {}
    for child in tree.readdir(inode):
        found = tree.lookup(inode, child.name)
        if found.is_dir:
            out |= walk(tree, found.inode)
        else:
            out[found.path] = bytes(tree.read(found.inode, 0, found.size))
    return out


def test_one_call_lists_every_directory_of_a_commit(client):
    tree = RepoTree(client)
    ref = tree.lookup(tree.lookup(ROOT_INODE, "r").inode, "master")
    assert walk(tree, ref.inode) == FILES
    assert client.listed == [("", True)]
    assert walk(tree, ref.inode) == FILES
    assert client.listed == [("", True)]  # kept
    tree.cache.close()


def test_listings_kept_are_bounded_and_fetched_again_when_needed(client, monkeypatch):
    monkeypatch.setattr(vfs_tree, "MAX_LISTED", 10)  # the commit's 5 entries and one more directory's
    tree = RepoTree(client)
    ref = tree.lookup(tree.lookup(ROOT_INODE, "r").inode, "master")
    assert walk(tree, ref.inode) == FILES
    first = len(client.listed)
    assert walk(tree, ref.inode) == FILES
    assert len(client.listed) > first
    tree.cache.close()


def test_directories_a_cut_off_call_stopped_in_are_listed_when_looked_at(client, monkeypatch):
    # the first call stops at d0/s1/f16: d0/s0 came whole; the commit, d0 and d0/s1 did not
    monkeypatch.setattr(vfs_tree, "PREFETCH_ENTRIES", 8)
    tree = RepoTree(client)
    ref = tree.lookup(tree.lookup(ROOT_INODE, "r").inode, "master")
    assert walk(tree, ref.inode) == FILES
    assert client.listed[:2] == [("", True), ("", False)]  # the commit's own entries at once
    assert ("d0", True) in client.listed and ("d0/s1", True) in client.listed
    assert not [call for call in client.listed if call[0] == "d0/s0"]
    tree.cache.close()


def test_a_branch_directory_is_listed_again_when_its_head_moves_only(client, monkeypatch):
    monkeypatch.setattr(vfs_tree, "LISTING_TTL", 0.0)  # repos and branches are listed anew at every look
    tree = RepoTree(client)
    repo = tree.lookup(ROOT_INODE, "r")
    master = tree.lookup(repo.inode, "master")
    assert tree.lookup(master.inode, "top").size == 4
    assert tree.lookup(repo.inode, "master").commit == master.commit
    assert tree.lookup(master.inode, "top").size == 4
    assert client.listed == [("", True)]  # the same head: the same listing

    new = put_commit(client, "r", {"new": b"new\n"})
    assert tree.lookup(repo.inode, "master").commit == new
    assert tree.lookup(master.inode, "new").size == 4
    assert client.listed == [("", True), ("", True)]
    tree.cache.close()


def test_a_branch_or_commit_is_looked_up_alone_as_the_repo_s_listing_shows_it(client, monkeypatch):
    """A name in a repo whose listing is out of date is looked up alone, not by listing every commit of the repo
    again (0.2-0.4 s at 10,000 commits): a branch is its newest finished commit, a finished commit is there by id;
    an open commit, an ancestor's name and what is not there are not."""
    monkeypatch.setattr(vfs_tree, "LISTING_TTL", 0.0)  # out of date at once
    first = put_commit(client, "r", {"new": b"new\n"})
    open_ = client.start_commit("r").id
    tree = RepoTree(client)
    repo = tree.lookup(ROOT_INODE, "r")
    master = tree.lookup(repo.inode, "master")
    assert (master.commit, master.branch, tree.lookup(repo.inode, first).commit) == (first, "master", first)
    for absent in (open_, "master^", "nope", "bad name"):
        with pytest.raises(NotFound):
            tree.lookup(repo.inode, absent)
    assert client.commits_listed == 0
    assert {n.name for n in tree.readdir(repo.inode)} >= {"master", first} and open_ not in {
        n.name for n in tree.readdir(repo.inode)}
    assert master.inode == next(n.inode for n in tree.readdir(repo.inode) if n.name == "master")
    tree.cache.close()


def test_a_node_is_known_by_inode_until_the_kernel_forgets_it_as_often_as_it_was_given(client):
    tree = RepoTree(client)
    ref = tree.lookup(tree.lookup(ROOT_INODE, "r").inode, "master")
    top = tree.lookup(ref.inode, "top")
    assert tree.lookup_cached(ref.inode, "top").inode == top.inode  # given twice
    tree.forget(top.inode, 1)
    assert tree.read(top.inode, 0, 10) == b"top\n"
    tree.forget(top.inode, 1)
    with pytest.raises(NotFound):
        tree.getattr(top.inode)
    assert tree.read(tree.lookup(ref.inode, "top").inode, 0, 10) == b"top\n"  # given again
    tree.forget(ROOT_INODE, 1)
    assert tree.getattr(ROOT_INODE).kind == "root"
    tree.cache.close()


class ShortClient(Client):
    """The real client, whose chunk replies lose their last chunk: a server that answers short."""

    def read_chunks(self, chunks):
        return iter(list(super().read_chunks(chunks))[:-1])


def test_a_short_reply_of_chunks_is_data_loss(server, client):
    short = ShortClient(server.address, server.token)
    tree = RepoTree(short)  # no local chunks: every chunk over gRPC
    ref = tree.lookup(tree.lookup(ROOT_INODE, "r").inode, "master")
    top = tree.lookup(ref.inode, "top")
    with pytest.raises(DataLoss, match="the server sent fewer chunks than the 1 asked for"):
        tree.read(top.inode, 0, 10)
    tree.close()
    short.close()


def test_reads_starting_or_ending_at_chunk_boundaries_give_exactly_their_bytes(client):
    data = b"".join(b"%d,%s\n" % (i, b"x" * (i % 50)) for i in range(3000))  # about 20 chunks of 4 KiB
    client.create_repo("b")
    put_commit(client, "b", {"lines": data})
    tree = RepoTree(client)
    node = tree.lookup(tree.lookup(tree.lookup(ROOT_INODE, "b").inode, "master").inode, "lines")
    assert node.size == len(data) and len(node.offsets) > 10
    edges = [*node.offsets, len(data)]
    for edge in edges:
        for start in (edge - 1, edge, edge + 1):
            if start < 0:
                continue
            for end in {start + 1, *edges[1:4], *(e + d for e in edges for d in (-1, 0, 1) if e > start),
                        len(data) + 100}:
                if end > start:
                    assert bytes(tree.read(node.inode, start, end - start)) == data[start:end], (start, end)
    assert tree.read(node.inode, len(data), 10) == b""
    tree.close()
