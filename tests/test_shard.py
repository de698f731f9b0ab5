"""Shard views: across workers 0..N-1 every byte is seen exactly once (map, reduce) or by all (global)."""

import random

import pytest

from conftest import put_commit
from pfs.core.errors import InvalidArgument
from pfs.core.shard import Shard
from pfs.vfs.tree import RepoTree


def test_parse_and_validate():
    assert Shard.parse("2/5", "map") == Shard("map", 2, 5)
    for bad in ("5/2", "x", "1/0", "-1/3"):
        with pytest.raises(InvalidArgument):
            Shard.parse(bad, "map")
    with pytest.raises(InvalidArgument):
        Shard("sideways", 0, 1)


@pytest.fixture(scope="module")
def commit_files():
    r = random.Random(11)
    files = {}
    for i in range(40):
        top = r.choice(["a", "b", "c", "d", "e", ""])
        path = f"{top}/sub{i % 3}/f{i}" if top else f"f{i}"
        files[path] = b"".join(b"%d %s\n" % (j, b"x" * r.randint(0, 200)) for j in range(r.randint(0, 400)))
    return files


@pytest.fixture(scope="module")
def tree_of(shared_server, commit_files):
    """Puts the files in a commit (once: the tests only read it) and returns a function giving the vfs tree for
    a shard."""
    with shared_server.client() as client:
        client.create_repo("r")
        put_commit(client, "r", commit_files)
        yield lambda shard: RepoTree(client, shard)


def read_all(tree: RepoTree) -> dict[str, bytes]:
    """Every file the tree shows under r/master, read through the vfs."""
    out = {}
    repo = tree.lookup(1, "r")
    ref = tree.lookup(repo.inode, "master")
    stack = [ref]
    while stack:
        node = stack.pop()
        for child in tree.readdir(node.inode):
            child = tree.lookup(node.inode, child.name)  # as the kernel does before it uses an inode
            if child.is_dir:
                stack.append(child)
            else:
                data = tree.read(child.inode, 0, child.size + 10)
                assert len(data) == child.size
                out[child.path] = bytes(data)  # read() gives a view of the cached chunk
    tree.cache.close()
    return out


@pytest.mark.parametrize("n", range(1, 9))
def test_reduce_gives_each_top_level_entry_to_one_worker(tree_of, commit_files, n):
    seen: dict[str, list[int]] = {}  # path -> the workers that showed it
    for i in range(n):
        for path, data in read_all(tree_of(Shard("reduce", i, n))).items():
            assert data == commit_files[path]  # whole files
            seen.setdefault(path, []).append(i)
    assert sorted(seen) == sorted(commit_files)  # every file, below every top-level entry
    owners: dict[str, set[int]] = {}
    for path, workers in seen.items():
        assert len(workers) == 1, (path, workers)  # each file by exactly one worker
        owners.setdefault(path.split("/")[0], set()).update(workers)
    for top, workers in owners.items():
        assert len(workers) == 1, top  # a directory goes whole to one worker


@pytest.mark.parametrize("n", range(1, 9))
def test_map_splits_every_file_into_line_aligned_blocks_seen_once(tree_of, commit_files, n):
    seen: dict[str, list[bytes]] = {p: [] for p in commit_files}
    for i in range(n):
        shown = read_all(tree_of(Shard("map", i, n)))
        assert set(shown) == set(commit_files)  # every file, in every shard
        for path, data in shown.items():
            assert data == b"" or data.endswith(b"\n")  # no record is cut
            seen[path].append(data)
    for path, data in commit_files.items():
        assert sorted(b"".join(seen[path]).splitlines(keepends=True)) == sorted(data.splitlines(keepends=True))
        assert sum(map(len, seen[path])) == len(data)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_global_shows_everything_to_every_worker(tree_of, commit_files, n):
    for i in range(n):
        assert read_all(tree_of(Shard("global", i, n))) == commit_files
