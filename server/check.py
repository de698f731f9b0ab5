"""The store's check (`pfs check`): walks every commit's trees and says which repo, commit and path reach an
object that is missing or whose bytes do not match its address, or a chunk that is missing and, when reading the
data, a chunk whose bytes do not match its address.

Each distinct object is read once however many commits share it (server/reach.py), each chunk looked up once;
only when something is wrong are the commits walked by path, their objects read again, and then only into the
trees that lead to it.
"""

import time
from collections.abc import Iterator

from pfs.core import frames, paths
from pfs.core.errors import DataLoss, InvalidArgument
from pfs.core.model import CheckProblem, CheckSummary, Progress
from server.meta import MetaStore
from server.reach import walk
from server.trees import references
from server.storage import ChunkStore

READ_BATCH = 256  # chunks read at once with the data


def check(meta: MetaStore, chunks: ChunkStore, read_data: bool) -> Iterator[Progress | CheckProblem | CheckSummary]:
    """Yields progress, then each problem found, then the summary."""
    started = time.time()
    with meta.transaction() as tx:
        commits = tx.commit_roots()
    seen: set[bytes] = set()
    reachable: set[bytes] = set()  # the chunks: what the walk keeps of the trees (which may run to gigabytes)
    wrong_objects: dict[bytes, str] = {}
    for n, reached in enumerate(walk(meta, [tree for _, _, tree in commits], seen), 1):
        if reached.wrong:
            wrong_objects[reached.address] = reached.wrong
        reachable.update(reached.chunks)
        if n % 10_000 == 0:
            yield Progress("objects", n, 0)
    yield Progress("objects", len(seen), len(seen))
    stored = set(chunks.stored())
    bad: dict[bytes, str] = {a: f"chunk {a.hex()} is missing" for a in reachable if a not in stored}
    read = 0
    if read_data:
        present = sorted(a for a in reachable if a not in bad)
        for i in range(0, len(present), READ_BATCH):
            batch = present[i : i + READ_BATCH]
            wrong = []
            for address, what, size in _verified(chunks, batch):
                read += size
                if what:
                    bad[address] = what
                    wrong.append(address)
            chunks.set_aside(wrong)  # so that a put of the same data stores it anew (a missing one: nothing to do)
            yield Progress("chunks", i + len(batch), len(present))
    count = 0
    if bad or wrong_objects:
        for problem in _by_path(meta, commits, wrong_objects, bad):
            count += 1
            yield problem
    yield CheckSummary(len(commits), len(seen), len(reachable), read, count, time.time() - started)


def _by_path(meta: MetaStore, commits: list[tuple[str, str, bytes]], wrong_objects: dict[bytes, str],
             bad: dict[bytes, str]) -> Iterator[CheckProblem]:
    """Each problem, by repo, commit and path: the commits' trees read again, each object once, and walked by path
    only into the trees that lead to a wrong object or chunk (only those are kept)."""
    broken: dict[bytes, bool] = {}  # whether an object, or anything below it, is wrong
    kept: dict[bytes, tuple[list, list]] = {}  # what a broken object holds: a tree's entries (or pages), a file's
    # chunks (or pages)

    def wrong(address: bytes, is_dir: bool) -> bool:
        if address not in broken:
            broken[address] = address in wrong_objects or holds_wrong(address, is_dir)
        return broken[address]

    def holds_wrong(address: bytes, is_dir: bool) -> bool:
        """Whether anything the object at ADDRESS holds is wrong; if so, what it holds is kept."""
        with meta.transaction() as tx:
            data = tx.get_object(address)
        if data is None:  # deleted since the walk (a collection ran meanwhile): not this check's to say
            return False
        entries, chunk_list = references(data, is_dir)
        if not (any([wrong(e.address, e.is_dir) for e in entries]) or any(a in bad for a in chunk_list)):
            return False
        kept[address] = entries, chunk_list
        return True

    def problems(repo: str, commit: str, where: str, address: bytes, is_dir: bool) -> Iterator[CheckProblem]:
        if not wrong(address, is_dir):
            return
        if address in wrong_objects:
            kind = "tree" if is_dir else "file"
            yield CheckProblem(repo, commit, where or "/", f"{kind} object {address.hex()} {wrong_objects[address]}")
        else:
            entries, chunk_list = kept[address]
            for e in entries:  # a page has no name: its entries, or its chunks, are the directory's or the file's
                yield from problems(repo, commit, paths.join(where, e.name) if e.name else where, e.address, e.is_dir)
            for what in dict.fromkeys(bad[a] for a in chunk_list if a in bad):
                yield CheckProblem(repo, commit, where, what)

    for repo, commit, tree in commits:
        yield from problems(repo, commit, "", tree, True)


def _verified(chunks: ChunkStore, batch: list[bytes]) -> Iterator[tuple[bytes, str, int]]:
    """Each chunk of BATCH with what is wrong with its bytes ('' if nothing) and their size: read together, or
    one by one where the store refuses the batch for a chunk it finds corrupt itself."""
    try:
        frames_ = list(chunks.get_many(batch))
    except DataLoss:
        for address in batch:
            try:
                frame = chunks.get(address)
            except DataLoss as err:
                yield address, str(err), 0
                continue
            yield address, _wrong(address, frame), len(frame)
        return
    for address, frame in zip(batch, frames_):
        yield address, _wrong(address, frame), len(frame)


def _wrong(address: bytes, frame: bytes) -> str:
    try:
        frames.check(address, frame)
    except (DataLoss, InvalidArgument):
        return (f"chunk {address.hex()} does not match its address (set aside: put its data again, and every "
                "commit that holds it is whole)")
    return ""
