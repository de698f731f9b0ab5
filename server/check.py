"""The store's check (`pfs check`): walks every commit's trees and says which repo, commit and path reach an
object that is missing or whose bytes do not match its address, or a chunk that is missing and, when reading the
data, a chunk whose bytes do not match its address.

Each distinct object is read once however many commits share it (server/reach.py), each chunk looked up once;
only when something is wrong are the commits walked by path, and then only into the trees that lead to it.
"""

import time
from collections.abc import Iterator

from pfs.core import frames, paths
from pfs.core.errors import DataLoss, InvalidArgument
from pfs.core.model import CheckProblem, CheckSummary, Progress
from server.meta import MetaStore
from server.reach import walk
from server.storage import ChunkStore

READ_BATCH = 256  # chunks read at once with the data


def check(meta: MetaStore, chunks: ChunkStore, read_data: bool) -> Iterator[Progress | CheckProblem | CheckSummary]:
    """Yields progress, then each problem found, then the summary."""
    started = time.time()
    with meta.transaction() as tx:
        commits = tx.commit_roots()
    seen: set[bytes] = set()

    trees: dict[bytes, list] = {}
    files: dict[bytes, list[bytes]] = {}
    wrong_objects: dict[bytes, str] = {}
    for n, reached in enumerate(walk(meta, [tree for _, _, tree in commits], seen), 1):
        if reached.wrong:
            wrong_objects[reached.address] = reached.wrong
        elif reached.is_dir:
            trees[reached.address] = reached.entries
        else:
            files[reached.address] = reached.chunks
        if n % 10_000 == 0:
            yield Progress("objects", n, 0)
    reachable = {a for chunk_list in files.values() for a in chunk_list}
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

    broken: dict[bytes, bool] = {}  # whether an object, or anything below it, is wrong

    def wrong(address: bytes, is_dir: bool) -> bool:
        if address not in broken:
            if address in wrong_objects:
                broken[address] = True
            elif is_dir:
                broken[address] = any([wrong(e.address, e.is_dir) for e in trees[address]])
            else:
                broken[address] = any(a in bad for a in files[address])
        return broken[address]

    def problems(repo: str, commit: str, where: str, address: bytes, is_dir: bool) -> Iterator[CheckProblem]:
        if not wrong(address, is_dir):
            return
        if address in wrong_objects:
            kind = "tree" if is_dir else "file"
            yield CheckProblem(repo, commit, where or "/", f"{kind} object {address.hex()} {wrong_objects[address]}")
        elif is_dir:
            for e in trees[address]:
                yield from problems(repo, commit, paths.join(where, e.name), e.address, e.is_dir)
        else:
            for what in dict.fromkeys(bad[a] for a in files[address] if a in bad):
                yield CheckProblem(repo, commit, where, what)

    count = 0
    for repo, commit, tree in commits:
        for problem in problems(repo, commit, "", tree, True):
            count += 1
            yield problem
    yield CheckSummary(len(commits), len(seen), len(reachable), read, count, time.time() - started)


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
