"""Shard views: across workers 0..N-1 every byte is seen exactly once (map, reduce) or by all (global), and
map gives each worker its N-th of the bytes, to within one block."""

import io
import random

import pytest

from conftest import put_commit
from pfs.client.upload import into_commit
from pfs.core.errors import InvalidArgument
from pfs.core.model import ChunkRef, CommitRef
from pfs.core.shard import Shard
from pfs.vfs import tree as tree_module
from pfs.vfs.tree import RepoTree, View


def test_parse_and_validate():
    assert Shard.parse("2/5", "map") == Shard("map", 2, 5)
    for bad in ("5/2", "x", "1/0", "-1/3"):
        with pytest.raises(InvalidArgument):
            Shard.parse(bad, "map")
    with pytest.raises(InvalidArgument):
        Shard("sideways", 0, 1)


def random_layout(r: random.Random) -> list[list[ChunkRef]]:
    """A commit's files in path order as chunk lists: some empty, some of one chunk, chunks of very different
    sizes (a few empty, as a client may send), often fewer chunks in all than workers."""
    files, k = [], 0
    for _ in range(r.randint(0, 12)):
        chunks = []
        for _ in range(r.choice([0, 1, 1, 2, r.randint(3, 40)])):
            size = r.choice([0, 1, r.randint(1, 100), r.randint(100, 5000), r.randint(5000, 100_000)])
            chunks.append(ChunkRef(k.to_bytes(32, "big"), size))  # each chunk its own address, to tell them apart
            k += 1
        files.append(chunks)
    return files


@pytest.mark.parametrize("seed", range(300))
def test_map_gives_every_block_to_one_worker_and_each_its_share_of_the_bytes(seed):
    r = random.Random(seed)
    files, n = random_layout(r), r.choice([1, 2, 2, 3, 4, 5, 7, 8, 16, 100])
    total = sum(c.size for f in files for c in f)
    biggest = max((c.size for f in files for c in f), default=0)
    parts: list[list[list[ChunkRef]]] = [[] for _ in files]  # each file's parts, by worker
    for i in range(n):
        start = share = 0
        for f, chunks in enumerate(files):
            seen = Shard("map", i, n).blocks(chunks, start, total)
            parts[f].append(seen)
            share += sum(c.size for c in seen)
            start += sum(c.size for c in chunks)
        assert abs(share - total / n) <= biggest, (i, share, total / n, biggest)  # within one block of T/N
    for chunks, by_worker in zip(files, parts):
        assert [c for part in by_worker for c in part] == chunks  # every block once: the file, in worker order


def test_map_gives_a_block_to_the_worker_whose_share_holds_its_middle():
    def owners(sizes: list[int], n: int, start: int = 0, total: int = 0) -> list[int]:
        chunks = [ChunkRef(bytes([k]) * 32, size) for k, size in enumerate(sizes)]
        total = total or start + sum(sizes)
        return [next(i for i in range(n) if c in Shard("map", i, n).blocks(chunks, start, total)) for c in chunks]

    assert owners([100] * 4, 2) == [0, 0, 1, 1]
    assert owners([1, 1, 100], 2) == [0, 0, 1]  # 2 bytes and 100: the best whole blocks allow
    assert owners([100, 1, 1], 3) == [1, 2, 2]  # a worker may get none where one block is more than a share
    assert owners([10] * 10, 4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]  # middles 5, 15, .., 95 in shares of 25
    assert owners([10, 10], 2, start=90, total=200) == [0, 1]  # the file is placed in its commit: middles 95, 105
    assert owners([0, 0], 3) == [0, 0]  # a commit of empty chunks only
    assert owners([5, 5, 0], 2) == [0, 1, 1]  # an empty chunk at the very end


def lines(r: random.Random, count: int) -> bytes:
    return b"".join(b"%d %s\n" % (j, b"x" * r.randint(0, 200)) for j in range(count))


def random_files(seed: int) -> dict[str, bytes]:
    r = random.Random(seed)
    files = {}
    for i in range(40):
        top = r.choice(["a", "b", "c", "d", "e", ""])
        path = f"{top}/sub{i % 3}/f{i}" if top else f"f{i}"
        files[path] = lines(r, r.choice([0, r.randint(0, 400)]))
    return files


# commits the tests read: random trees; names that sort apart from their paths ("a-b" before "a/", "a.txt"
# after "a-b"; each directory's entries in name order, in it); one of a single block, fewer than the workers
TREES = {
    "r": random_files(11),
    "s": random_files(12),
    "names": {p: lines(random.Random(p), 300) for p in ("a/b/c.txt", "a/b-c", "a-b", "a.txt", "ab/x", "b", "e/0")},
    "one": {"f": b"one line\n"},
}


@pytest.fixture(scope="module")
def tree_of(shared_server):
    """Puts each of TREES in a commit of its repo (once: the tests only read them) and returns a function giving
    the vfs tree for a shard, with the size of the largest block of each repo."""
    with shared_server.client() as client:
        biggest = {}
        for repo, files in TREES.items():
            client.create_repo(repo)
            put_commit(client, repo, files)
            listed = client.list_files(CommitRef(repo, "master"), recursive=True, with_chunks=True)
            biggest[repo] = max(c.size for f in listed for c in f.chunks)
        yield lambda shard: RepoTree(client, View(shard)), biggest


def walk(tree: RepoTree, top: int) -> dict[str, tuple[int, bytes | None]]:
    """Every directory (None) and file (its bytes, read through the vfs) the tree shows below the inode TOP,
    with the size it shows."""
    out = {}
    stack = [tree.getattr(top)]
    while stack:
        node = stack.pop()
        for child in tree.readdir(node.inode):
            child = tree.lookup(node.inode, child.name)  # as the kernel does before it uses an inode
            if child.is_dir:
                stack.append(child)
                out[child.path] = (child.size, None)
            else:
                data = tree.read(child.inode, 0, child.size + 10)
                assert len(data) == child.size
                out[child.path] = (child.size, bytes(data))  # read() gives a view of the cached chunk
    tree.cache.close()
    return out


def read_all(tree: RepoTree, repo: str = "r") -> dict[str, bytes]:
    """Every file the tree shows under REPO/master, read through the vfs."""
    ref = tree.lookup(tree.lookup(1, repo).inode, "master")
    return {path: data for path, (_, data) in walk(tree, ref.inode).items() if data is not None}


@pytest.mark.parametrize("n", range(1, 9))
def test_reduce_gives_each_top_level_entry_to_one_worker(tree_of, n):
    commit_files = TREES["r"]
    seen: dict[str, list[int]] = {}  # path -> the workers that showed it
    for i in range(n):
        for path, data in read_all(tree_of[0](Shard("reduce", i, n))).items():
            assert data == commit_files[path]  # whole files
            seen.setdefault(path, []).append(i)
    assert sorted(seen) == sorted(commit_files)  # every file, below every top-level entry
    owners: dict[str, set[int]] = {}
    for path, workers in seen.items():
        assert len(workers) == 1, (path, workers)  # each file by exactly one worker
        owners.setdefault(path.split("/")[0], set()).update(workers)
    for top, workers in owners.items():
        assert len(workers) == 1, top  # a directory goes whole to one worker


@pytest.mark.parametrize("prefetch", [tree_module.PREFETCH_ENTRIES, 5])  # 5: listings cut short, directories
@pytest.mark.parametrize("repo", TREES)                                 # listed again as they are looked at
@pytest.mark.parametrize("n", range(1, 9))
def test_map_gives_each_worker_its_share_of_the_bytes_in_line_aligned_blocks_once(tree_of, repo, n, prefetch,
                                                                                   monkeypatch):
    monkeypatch.setattr(tree_module, "PREFETCH_ENTRIES", prefetch)
    tree_for, biggest = tree_of
    commit_files = TREES[repo]
    total = sum(map(len, commit_files.values()))
    seen: dict[str, list[bytes]] = {p: [] for p in commit_files}
    for i in range(n):
        shown = read_all(tree_for(Shard("map", i, n)), repo)
        assert set(shown) == set(commit_files)  # every file, in every shard
        for path, data in shown.items():
            assert data == b"" or data.endswith(b"\n")  # no record is cut
            seen[path].append(data)
        share = sum(map(len, shown.values()))
        assert abs(share - total / n) <= biggest[repo], (i, share, total / n)  # within one block of T/N
    for path, data in commit_files.items():
        assert b"".join(seen[path]) == data  # every block once: the file, its shards read in worker order


@pytest.mark.parametrize("n", [1, 3, 8])
def test_global_shows_everything_to_every_worker(tree_of, n):
    for i in range(n):
        assert read_all(tree_of[0](Shard("global", i, n))) == TREES["r"]


@pytest.fixture(scope="module")
def changes(shared_server):
    """Repo inc: a commit, then one that appends to files, adds files and directories, rewrites and deletes
    one; the client and the two commits."""
    with shared_server.client() as client:
        client.create_repo("inc")
        r = random.Random(5)
        files = random_files(13)
        first = put_commit(client, "inc", files)
        c = client.start_commit("inc")
        with into_commit(client, CommitRef("inc", c.id)) as up:
            for path in sorted(files)[::3]:
                up.put(path, io.BytesIO(lines(r, r.randint(1, 300))))  # appended
            up.put(sorted(files)[1], io.BytesIO(lines(r, 200)), overwrite=True)
            for k in range(8):
                up.put(f"{r.choice(['a', 'new', 'a/sub1', ''])}/added{k}", io.BytesIO(lines(r, r.randint(0, 300))))
        client.delete_file(CommitRef("inc", c.id), sorted(files)[2])
        second = client.finish_commit(CommitRef("inc", c.id))
        yield client, first, second


@pytest.mark.parametrize("incremental", ["diff", "full"])
@pytest.mark.parametrize("n", range(1, 6))
def test_map_since_an_earlier_commit_gives_each_worker_its_share_of_what_changed_once(changes, incremental, n):
    client, first, second = changes

    def shown(shard: Shard) -> dict[str, tuple[int, bytes | None]]:
        return walk(RepoTree(client, View(shard, first, incremental), commit=second), 1)

    changed = shown(Shard())  # everything that changed, as one worker sees it
    files = {path: data for path, (_, data) in changed.items() if data is not None}
    for path in changed.keys() - files.keys():  # a directory's size is that of all it shows
        assert changed[path][0] == sum(len(d) for p, d in files.items() if p.startswith(f"{path}/")), path
    total = sum(map(len, files.values()))
    assert 0 < total < second.size_bytes  # "diff" shows what was appended only, "full" whole files that changed
    listed = client.list_files(CommitRef("inc", second.id), recursive=True, with_chunks=True, since=first,
                               incremental=incremental)
    biggest = max(c.size for f in listed for c in f.chunks)
    seen: dict[str, list[bytes]] = {p: [] for p in files}
    for i in range(n):
        mine = {p: d for p, (_, d) in shown(Shard("map", i, n)).items() if d is not None}
        assert set(mine) == set(files)
        for path, data in mine.items():
            seen[path].append(data)
        share = sum(map(len, mine.values()))
        assert abs(share - total / n) <= biggest, (i, share, total / n)
    for path, data in files.items():
        assert b"".join(seen[path]) == data


@pytest.mark.parametrize("caps, parallelism, moduli", [
    ([10, 10], 4, [2, 2]),  # balanced where that gives the workers asked for
    ([10, 10], 8, [4, 2]),
    ([10, 10], 5, [5, 1]),  # 2 x 2 would be 4 of the 5 workers asked for
    ([10, 10], 7, [7, 1]),
    ([1, 10], 5, [1, 5]),  # an input of one part (global, one entry) is not cut
    ([10, 3], 9, [3, 3]),
    ([10, 10, 10], 5, [5, 1, 1]),
    ([2, 2], 5, [2, 2]),  # no more parts than the inputs have
])
def test_a_job_of_several_inputs_has_as_many_shards_as_its_parallelism_where_they_allow(caps, parallelism, moduli):
    from server.pps.jobs import shard_moduli

    assert shard_moduli(caps, parallelism) == moduli
