"""Real FUSE mounts of a real server: listings, byte-identical reads, shards, EROFS, restarts."""

import contextlib
import errno
import gzip
import hashlib
import json
import os
import pathlib
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PFS, Result, Server, assert_one_line_error, needs, on_every_storage, stop_process, stored_chunks, wait_for
from pfs.core import compression
from pfs.core.chunking import MAX_AVG_SIZE
from pfs.core.model import CommitRef, FileWrite
from pfs.core.ready import spawn, wait_ready
from pfs.fuse.mount import mounts
from pfs.fuse.ops import DROP_BEHIND, STORED_AT_OPEN

pytestmark = [pytest.mark.slow, needs("fusermount3", fuse=True)]  # real mounts (test_fuse_ops: the handlers alone)


@contextlib.contextmanager
def mounted(server, mountpoint, *args):
    """`pfs mount` in the background; always unmounted afterwards."""
    mountpoint.mkdir(exist_ok=True)
    log = open(mountpoint.parent / f"mount-{mountpoint.name}.log", "wb")
    proc, ready = spawn([PFS, "mount", str(mountpoint), *args], stdout=log, stderr=log,
                        env={**os.environ, **server.env})
    try:
        said = wait_ready(ready, 30)
        assert said == {"mountpoint": str(mountpoint)}, (mountpoint.parent / f"mount-{mountpoint.name}.log").read_text()
        assert os.path.ismount(mountpoint)
        yield proc
    finally:
        stop_process(proc, signal.SIGINT, 15)
        unmount_leftover(mountpoint)
        log.close()


def unmount_leftover(mountpoint):
    """A mount a failed test left behind, even one whose process is gone (ismount cannot see those)."""
    if str(mountpoint) in mounts():
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def put(server, repo, path, data):
    server.pfs("put-file", repo, "master", path, "-c", "-f", "-", input=data)


@on_every_storage
def test_reads_are_byte_identical_at_any_offset(server, tmp_path):
    r = random.Random(5)
    files = {
        "text.csv": b"".join(b"%d,%f\n" % (i, r.random()) for i in range(30_000)),
        "dir/binary.bin": r.randbytes(700_000),
        "dir/sub/empty": b"",
        "one": b"1",
    }
    server.pfs("create-repo", "data")
    for path, data in files.items():
        put(server, "data", path, data)
    head = server.client().inspect_commit(CommitRef("data", "master")).id
    mnt = tmp_path / "mnt"
    with mounted(server, mnt):
        assert os.listdir(mnt) == ["data"]
        assert set(os.listdir(mnt / "data")) >= {"master", head}
        assert sorted(os.listdir(mnt / "data" / "master")) == ["dir", "one", "text.csv"]
        for ref in ("master", head):
            for path, data in files.items():
                p = mnt / "data" / ref / path
                assert os.stat(p).st_size == len(data)
                assert p.read_bytes() == data
                with open(p, "rb") as f:
                    for _ in range(50):
                        off, size = r.randrange(len(data) + 10), r.randrange(1, 300_000)
                        f.seek(off)
                        assert f.read(size) == data[off : off + size]
        st = os.stat(mnt / "data" / "master" / "one")
        assert oct(st.st_mode & 0o777) == oct(0o444)
        assert abs(st.st_mtime - server.client().inspect_commit(CommitRef("data", head)).finished) < 1
        assert os.statvfs(mnt).f_bsize > 0


def test_reads_are_the_same_after_the_kernel_forgets_every_inode(server, tmp_path):
    files = {f"d{i % 3}/f{i}": b"%d\n" % i * (i + 1) for i in range(30)}
    server.pfs("create-repo", "data")
    for path, data in files.items():
        put(server, "data", path, data)
    root = tmp_path / "mnt" / "data" / "master"
    with mounted(server, tmp_path / "mnt"):
        assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} == set(files)  # readdirplus
        with open(root / "d0" / "f0", "rb") as kept:  # a file open throughout
            for _ in range(2):
                pathlib.Path("/proc/sys/vm/drop_caches").write_text("2\n")  # dentries and inodes: FORGET
                for path, data in files.items():
                    assert (root / path).read_bytes() == data
            assert kept.read() == files["d0/f0"]


def test_writes_fail_with_erofs(server, tmp_path):
    server.pfs("create-repo", "r")
    put(server, "r", "f", b"x\n")
    with mounted(server, tmp_path / "mnt"):
        d = tmp_path / "mnt" / "r" / "master"
        for attempt in (lambda: open(d / "f", "w"), lambda: open(d / "new", "w"), lambda: os.mkdir(d / "x"),
                        lambda: os.unlink(d / "f"), lambda: os.rename(d / "f", d / "g")):
            with pytest.raises(OSError) as err:
                attempt()
            assert err.value.errno == errno.EROFS
        assert (d / "f").read_bytes() == b"x\n"


def test_new_repos_commits_and_moving_branches_appear(server, tmp_path):
    server.pfs("create-repo", "r")
    put(server, "r", "f", b"one\n")
    mnt = tmp_path / "mnt"
    with mounted(server, mnt):
        f = mnt / "r" / "master" / "f"
        assert f.read_bytes() == b"one\n"
        first = server.client().inspect_commit(CommitRef("r", "master")).id
        put(server, "r", "f", b"two\n")
        wait_for(lambda: f.read_bytes() == b"one\ntwo\n")  # the branch follows its head
        assert (mnt / "r" / first / "f").read_bytes() == b"one\n"  # a commit never changes
        open_commit = server.pfs("start-commit", "r").text.strip()
        server.pfs("put-file", "r", open_commit, "f", "-f", "-", input=b"three\n")
        server.pfs("create-repo", "later")
        wait_for(lambda: "later" in os.listdir(mnt))
        assert open_commit not in os.listdir(mnt / "r")  # open commits are not shown
        assert f.read_bytes() == b"one\ntwo\n"
        server.pfs("finish-commit", "r", open_commit)
        wait_for(lambda: open_commit in os.listdir(mnt / "r"))
        wait_for(lambda: f.read_bytes() == b"one\ntwo\nthree\n")


def test_a_directory_of_100000_files_lists_fully(server, tmp_path):
    client = server.client()
    client.create_repo("many")
    c = client.start_commit("many")
    from pfs.client.upload import into_commit
    import io

    with into_commit(client, CommitRef("many", c.id)) as up:
        up.put("seed", io.BytesIO(b"same\n"))
    chunk = client.inspect_file(CommitRef("many", c.id), "seed").chunks
    names = [f"f{i:06d}" for i in range(100_000)]
    for i in range(0, len(names), 10_000):
        client.put_files(CommitRef("many", c.id), [FileWrite(f"big/{n}", chunk) for n in names[i : i + 10_000]])
    client.finish_commit(CommitRef("many", c.id))
    with mounted(server, tmp_path / "mnt"):
        listed = os.listdir(tmp_path / "mnt" / "many" / "master" / "big")
        assert sorted(listed) == names
        assert (tmp_path / "mnt" / "many" / "master" / "big" / "f099999").read_bytes() == b"same\n"


def test_server_restart_under_a_mounted_reader(server, tmp_path, monkeypatch):
    # a chunk stream gRPC left hanging when its server was killed (seen under load) is given up in 5 s
    monkeypatch.setenv("PFS_READ_TIMEOUT", "5")
    server.pfs("create-repo", "r")
    put(server, "r", "a", b"alpha\n" * 1000)
    put(server, "r", "other/b", os.urandom(50_000))  # another directory: not fetched along with a
    mnt = tmp_path / "mnt"
    with mounted(server, mnt, "--no-direct"):  # every chunk over gRPC
        d = mnt / "r" / "master"
        assert (d / "a").read_bytes() == b"alpha\n" * 1000
        os.stat(d / "other" / "b")  # known, but its data never read
        server.kill()
        with pytest.raises(OSError) as err:
            (d / "other" / "b").read_bytes()
        assert err.value.errno == errno.EIO
        server.start()

        def readable():
            try:
                return len((d / "other" / "b").read_bytes()) == 50_000
            except OSError:
                return False

        wait_for(readable, 10)  # recovered, no remount


def test_a_stalled_server_fails_a_mounted_read_instead_of_hanging_it(server, tmp_path, monkeypatch):
    """A server that stops answering (SIGSTOP: its connection stays open and nothing comes back, which neither TCP
    nor gRPC notices) costs a reader PFS_READ_TIMEOUT, then EIO; once it answers again the same read works."""
    server.pfs("create-repo", "r")
    data = os.urandom(50_000)
    put(server, "r", "b", data)
    monkeypatch.setenv("PFS_READ_TIMEOUT", "soon")
    assert_one_line_error(server.pfs("list-repo", check=False), "PFS_READ_TIMEOUT='soon'")
    monkeypatch.setenv("PFS_READ_TIMEOUT", "2")
    mnt = tmp_path / "mnt"
    with mounted(server, mnt, "--no-direct"):  # every chunk over gRPC
        f = mnt / "r" / "master" / "b"
        os.stat(f)  # known, its data never read
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            stalled = subprocess.run(["cat", str(f)], capture_output=True, timeout=60)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert stalled.returncode != 0 and b"Input/output error" in stalled.stderr
        assert f.read_bytes() == data  # recovered, no remount
    assert "sent nothing for 2 s" in (tmp_path / "mount-mnt.log").read_text()


def test_a_stalled_server_fails_a_listing_instead_of_hanging_it(server, tmp_path, monkeypatch):
    """As a read: a repo's branches (unary calls) and a directory's entries (ListFile, a stream) fetched through a
    mount each give up after PFS_READ_TIMEOUT, on the connection the mount has open, so their callers get EIO (a
    process waiting on a FUSE request it sent cannot even be killed); once the server answers, both work."""
    for repo in ("r", "q"):
        server.pfs("create-repo", repo)
        put(server, repo, "d/x", b"x\n")
    commit = server.pfs("list-commit", "r").text.splitlines()[1].split()[2]
    monkeypatch.setenv("PFS_READ_TIMEOUT", "2")
    mnt = tmp_path / "mnt"
    with mounted(server, mnt, "--no-direct"):
        held = os.open(mnt / "r" / commit, os.O_PATH)  # looked up, not opened: its entries are not fetched yet
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            stalled = [subprocess.run(["ls", path], capture_output=True, timeout=60, pass_fds=(held,))
                       for path in (mnt / "q", f"/proc/self/fd/{held}")]  # that is reached with no lookup
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
            os.close(held)
        for ls in stalled:
            assert ls.returncode != 0 and b"Input/output error" in ls.stderr
        assert os.listdir(mnt / "q" / "master" / "d") == os.listdir(mnt / "r" / commit / "d") == ["x"]
    log = (tmp_path / "mount-mnt.log").read_text()
    assert "the call was given up" in log and "the read was given up" in log


def test_mount_errors_and_unmount(server, tmp_path):
    missing = tmp_path / "nope"
    result = server.pfs("mount", str(missing), check=False)
    assert_one_line_error(result, "does not exist", f"mkdir {missing}")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(server.pfs("mount", str(tmp_path / "file"), check=False), "is not a directory")
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", input=b"x\n")
    assert_one_line_error(server.pfs("mount", str(tmp_path / "nope"), "--commit", "r@master", "--since", "bogus",
                                     check=False), "no commit or branch 'bogus'")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    assert_one_line_error(server.pfs("mount", str(busy), check=False), "not empty")
    assert_one_line_error(server.pfs("unmount", str(tmp_path), check=False), "not mounted")
    assert_one_line_error(server.pfs("mount", str(tmp_path / "x"), "--shard", "5/2", check=False), "invalid shard")
    mnt = tmp_path / "mnt"
    with mounted(server, mnt) as proc:
        assert_one_line_error(server.pfs("mount", str(mnt), check=False), "already a mount point")
        server.pfs("unmount", str(mnt))
        assert proc.wait(15) == 0
        assert not os.path.ismount(mnt)
    assert_one_line_error(server.pfs("unmount", check=False), "give a mount point DIR, or -a")
    with mounted(server, mnt) as proc:  # a mount whose process was killed: still in the table, not a directory
        proc.kill()
        proc.wait(15)
        assert_one_line_error(server.pfs("mount", str(mnt), check=False), "already a mount point",
                              f"pfs unmount {mnt}")
        server.pfs("unmount", str(mnt))
        assert str(mnt) not in mounts()


@needs("unshare", "mknod", "setpriv", root=True)
def test_a_mount_without_fuse_access_says_in_one_line_what_a_container_needs(server, tmp_path):
    """What a container or pod without FUSE access gets, made here without one: a /dev/fuse it cannot open (a node
    on a nodev mount, bound over /dev/fuse in a mount namespace of its own: EACCES, where a container's device
    list gives EPERM), and no CAP_SYS_ADMIN (mount(2) and fusermount3 refused)."""
    def mount(*prefix: str, script: str = "") -> Result:
        (tmp_path / "mnt").mkdir(exist_ok=True)
        p = subprocess.run([*prefix, "sh", "-c", f'{script}exec "$@"', "sh", PFS, "mount", str(tmp_path / "mnt")],
                           capture_output=True, env={**os.environ, **server.env}, timeout=60)
        return Result(p.returncode, p.stdout, p.stderr.decode())

    needs = "privileged, or the /dev/fuse device and CAP_SYS_ADMIN"
    (tmp_path / "dev").mkdir()
    unopenable = mount("unshare", "--mount", script=(
        f"mount --make-rprivate / && mount -t tmpfs -o nodev,size=64k none {tmp_path / 'dev'} && "
        f"mknod {tmp_path / 'dev/fuse'} c 10 229 && mount --bind {tmp_path / 'dev/fuse'} /dev/fuse && "))
    assert_one_line_error(unopenable, "cannot open /dev/fuse: Permission denied;", needs)
    no_capability = mount("setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin")
    assert_one_line_error(no_capability, f"cannot mount at {tmp_path / 'mnt'}: ", "Operation not permitted", needs)
    assert not os.path.ismount(tmp_path / "mnt")


@needs("unshare", root=True)
def test_unmount_all(server, tmp_path):
    """`pfs unmount -a` (pachctl unmount -a): every pfs mount, one with a space in its path too.

    It runs in a private mount namespace, so it cannot touch mounts outside the test.
    """
    first, second = tmp_path / "one", tmp_path / "two words"
    first.mkdir()
    second.mkdir()
    script = f"""
        "{PFS}" mount "{first}" 2>"{tmp_path}/one.log" &
        "{PFS}" mount "{second}" 2>"{tmp_path}/two.log" &
        for i in $(seq 600); do mountpoint -q "{first}" && mountpoint -q "{second}" && break; sleep 0.05; done
        "{PFS}" unmount -a
        for i in $(seq 300); do [ -z "$(jobs -rp)" ] && break; sleep 0.05; done  # mounts exit once unmounted
        [ -z "$(jobs -rp)" ] && ! mountpoint -q "{first}" && ! mountpoint -q "{second}" && echo all gone
        kill $(jobs -rp) 2>/dev/null
        true
    """
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          env={**os.environ, **server.env}, capture_output=True, text=True,
                          timeout=120)
    assert f"unmounted {first}\n" in done.stdout and f"unmounted {second}\n" in done.stdout
    assert done.stdout.endswith("all gone\n")


@pytest.mark.parametrize("method", ["map", "reduce"])
def test_shards_through_the_mount_cover_every_byte_once(server, tmp_path, method):
    r = random.Random(9)
    files = {f"d{i % 4}/f{i}.txt": b"".join(b"%d %f\n" % (j, r.random()) for j in range(r.randint(0, 3000)))
             for i in range(12)}
    server.pfs("create-repo", "r")
    src = tmp_path / "src"
    for path, data in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    server.pfs("put-file", "r", "master", "", "-r", "-c", "-f", str(src))  # "": at the repo root
    n = 3
    seen: dict[str, list[bytes]] = {p: [] for p in files}
    shares = []
    with contextlib.ExitStack() as workers:  # mounted at once, as the workers of a job
        for i in range(n):
            workers.enter_context(mounted(server, tmp_path / f"mnt{i}", "--shard", f"{i}/{n}", "--method", method))
        for i in range(n):
            root = tmp_path / f"mnt{i}" / "r" / "master"
            shares.append(0)
            for dirpath, _, names in os.walk(root):
                for name in names:
                    path = os.path.join(dirpath, name)
                    with open(path, "rb") as f:
                        data = f.read()
                    assert os.stat(path).st_size == len(data)
                    seen[os.path.relpath(path, root)].append(data)
                    shares[-1] += len(data)
    for path, data in files.items():
        parts = seen[path]
        if method == "reduce":
            assert parts == [data]  # whole, in exactly one shard
        else:
            assert b"".join(parts) == data  # in every shard, every block in one: the file, read in worker order
    if method == "map":  # each worker within one block of its n-th of the bytes
        with server.client() as client:
            biggest = max(c.size for f in client.list_files(CommitRef("r", "master"), recursive=True,
                                                            with_chunks=True) for c in f.chunks)
        total = sum(map(len, files.values()))
        assert all(abs(share - total / n) <= biggest for share in shares), (shares, total, biggest)


def put_big_and_small(server) -> tuple[bytes, bytes]:
    """Repo r with a file of a large chunk, r/big, and one of a small chunk, r/sub/small: their bytes."""
    server.pfs("create-repo", "r")
    big, small = os.urandom(300_000), b"small\n" * 10
    put(server, "r", "big", big)
    put(server, "r", "sub/small", small)
    return big, small


def test_a_mount_beside_its_server_reads_chunks_from_its_disk(big_server, tmp_path):
    """The embedded case: chunks come from the data dir, so known files stay readable with the server down."""
    server = big_server
    big, small = put_big_and_small(server)
    mnt = tmp_path / "mnt"
    with mounted(server, mnt):
        d = mnt / "r" / "master"
        assert "chunks read from" in (tmp_path / "mount-mnt.log").read_text()
        os.stat(d / "big")
        os.stat(d / "sub" / "small")
        server.kill()
        assert list((server.data_dir / "chunks").rglob("*/*"))  # the large chunk is a file
        assert (d / "big").read_bytes() == big  # large chunks: files
        assert (d / "sub" / "small").read_bytes() == small  # small chunks: chunks.db


def test_a_server_that_offers_no_direct_read_is_read_through(tmp_path):
    """A server started with --no-direct-read describes none: its mount, on the same machine, reads over gRPC."""
    server = Server(tmp_path / "data", args=("--no-direct-read",))
    server.start()
    try:
        big, small = put_big_and_small(server)
        mnt = tmp_path / "mnt"
        with mounted(server, mnt):
            d = mnt / "r" / "master"
            assert (d / "sub" / "small").read_bytes() == small
            assert "chunks read from" not in (tmp_path / "mount-mnt.log").read_text()
            os.stat(d / "big")
            server.kill()
            with pytest.raises(OSError) as err:  # the chunks are on this disk, but not offered
                (d / "big").read_bytes()
            assert err.value.errno == errno.EIO
    finally:
        server.stop()


def test_a_chunk_corrupted_on_disk_is_an_error_never_wrong_bytes(big_server, tmp_path):
    """Bit rot in a stored chunk: EIO through the mount (the mount stays up), a one-line error from get-file."""
    server = big_server
    server.pfs("create-repo", "r")
    big, other = os.urandom(300_000), os.urandom(300_000)
    put(server, "r", "big", big)
    put(server, "r", "other", other)
    chunk = next(p for p in (server.data_dir / "chunks").rglob("*/*")
                 if p.name == server.client().inspect_file(CommitRef("r", "master"), "big").chunks[0].address.hex())
    frame = bytearray(chunk.read_bytes())
    frame[len(frame) // 2] ^= 0x01
    chunk.write_bytes(frame)
    mnt = tmp_path / "mnt"
    with mounted(server, mnt):
        with pytest.raises(OSError) as err:
            (mnt / "r" / "master" / "big").read_bytes()
        assert err.value.errno == errno.EIO
        assert (mnt / "r" / "master" / "other").read_bytes() == other
    assert_one_line_error(server.pfs("get-file", "r", "master", "big", check=False), "is corrupt")


@pytest.mark.parametrize("direct", [True, False])
def test_chunks_stored_raw_read_through_the_mount(tmp_path, direct):
    """A gzip file, whose chunks are stored in raw zstd blocks (they would not compress), reads byte for byte at
    any offset, from the store's disk and through the server."""
    server = Server(tmp_path / "data", args=() if direct else ("--no-direct-read",))
    server.start()
    try:
        r = random.Random(11)
        data = gzip.compress(b"".join(b"%d,%s\n" % (i, r.randbytes(8).hex().encode()) for i in range(250_000)))
        server.pfs("create-repo", "r")
        put(server, "r", "data.gz", data)
        stored = stored_chunks(server.data_dir)
        at = 0
        for c in server.client().inspect_file(CommitRef("r", "master"), "data.gz").chunks:
            assert stored[c.address.hex()] == compression.raw_frame(data[at : at + c.size])
            at += c.size
        assert at == len(data) and at > (2 << 20)
        mnt = tmp_path / "mnt"
        with mounted(server, mnt):
            assert ("chunks read from" in (tmp_path / "mount-mnt.log").read_text()) == direct
            p = mnt / "r" / "master" / "data.gz"
            assert p.read_bytes() == data
            with open(p, "rb") as f:
                for _ in range(30):
                    off, size = r.randrange(len(data)), r.randrange(1, 3 << 20)
                    f.seek(off)
                    assert f.read(size) == data[off : off + size]
    finally:
        server.stop()


def test_a_file_of_chunks_larger_than_the_read_ahead_allows_reads_through(tmp_path):
    """Chunks of 16 MiB and more (a server's largest --chunk-size, data with no line end and no cut point), each
    at least half the mount's chunk cache: the chunks read and read ahead stay in it however large, and a read
    takes the chunks it waited for as they were fetched. It once waited for ever: the read-ahead evicted each
    chunk before its reader woke to take it."""
    server = Server(tmp_path / "data", chunk_size=MAX_AVG_SIZE)
    server.start()
    try:
        data = bytearray(10 * 4 * MAX_AVG_SIZE)  # zeros, but every 4 KiB a mark of its own: no chunk is another's
        for at in range(0, len(data), 4096):
            data[at : at + 8] = (at // 4096 * 2654435761 | 0x0101010101010101).to_bytes(8, "little").replace(b"\n", b"x")
        server.pfs("create-repo", "r")
        put(server, "r", "big", bytes(data))
        sizes = [c.size for c in server.client().inspect_file(CommitRef("r", "master"), "big").chunks]
        assert len(sizes) >= 9 and min(sizes) >= 4 * MAX_AVG_SIZE  # more than 8 chunks read ahead could hold
        with mounted(server, tmp_path / "mnt"):
            read = subprocess.run(["sha256sum", str(tmp_path / "mnt" / "r" / "master" / "big")], capture_output=True,
                                  text=True, timeout=60)
        assert read.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    finally:
        server.stop()


@needs(root=True)  # only root may set a mount's read-ahead
def test_the_mount_asks_the_kernel_for_large_reads(server, tmp_path):
    """Read-ahead of 1 MiB per request instead of the kernel's 128 KiB: a sequential reader costs fewer trips."""
    mnt = tmp_path / "mnt"
    with mounted(server, mnt):
        dev = os.stat(mnt).st_dev
        setting = pathlib.Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
        wait_for(lambda: setting.read_text().strip() == "1024", 10)


def test_a_mount_stopped_as_soon_as_it_is_up_exits_cleanly(server, tmp_path):
    """SIGTERM the moment a mount says it is up (a worker whose command ends at once): it exits, leaving nothing."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for _ in range(10):
        proc, ready = spawn([PFS, "mount", str(mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **server.env})
        try:
            assert wait_ready(ready, 30) == {"mountpoint": str(mnt)}
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            stop_process(proc, signal.SIGKILL, 5)
            unmount_leftover(mnt)
        assert not os.path.ismount(mnt)


def test_one_mount_serves_a_workers_inputs_each_in_its_own_view(server, tmp_path):
    """`pfs mount --inputs`: each input at DIR/<name> through its own shard, one read from standard input."""
    server.pfs("create-repo", "a")
    server.pfs("create-repo", "b")
    for i in range(4):
        put(server, "a", f"top{i}", b"a%d\n" % i)
    put(server, "b", "only", b"b\n")
    with server.client() as client:
        first = client.inspect_commit(CommitRef("b", "master")).id
    put(server, "b", "later", b"later\n")
    inputs = tmp_path / "inputs.json"
    reduce = [{"name": "a", "commit": "a@master", "method": "reduce", "shard": f"{i}/2"} for i in range(2)]
    seen = []
    for i, shard in enumerate(reduce):
        rows = [shard, {"name": "changed", "commit": "b@master", "since": first, "incremental": "full"},
                {"name": "whole", "commit": "b@master"}]
        inputs.write_text(json.dumps({"inputs": rows}) + "\n")
        with mounted(server, tmp_path / f"mnt{i}", "--inputs", str(inputs)):
            root = tmp_path / f"mnt{i}"
            assert sorted(os.listdir(root)) == ["a", "changed", "whole"]
            seen += os.listdir(root / "a")
            assert os.listdir(root / "changed") == ["later"]
            assert sorted(os.listdir(root / "whole")) == ["later", "only"]
            assert (root / "whole" / "only").read_bytes() == b"b\n"
    assert sorted(seen) == [f"top{i}" for i in range(4)]  # each in exactly one shard


@pytest.mark.parametrize("text, said", [
    ("[]", "not a JSON object of inputs"),
    ('{"inputs": {}}', "inputs is not a list of objects"),
    ('{"inputs": [], "token": 3}', "token is not a string"),
    ('{"inputs": [{"commit": "a@master"}]}', "KeyError: 'name'"),
    ('{"inputs": [{"name": "a", "commit": "a@master", "since": 3}]}', "since is 3, not a string"),
    ('{"inputs": [{"name": "a/b", "commit": "a@master"}]}', "invalid repo name 'a/b'"),
    ('{"inputs": [{"name": "a", "commit": "a@master"}, {"name": "a", "commit": "a@master"}]}', "name 'a' twice"),
    ('{"inputs": [{"name": "a", "commit": "a@nope"}]}', "no commit or branch 'nope'"),
    ('{"inputs": [{"name": "a", "commit": "a@master"}], "token": "wrong"}', "token"),
])
def test_bad_mount_inputs_are_one_line_errors(server, tmp_path, text, said):
    server.pfs("create-repo", "a")
    put(server, "a", "f", b"x")
    (tmp_path / "mnt").mkdir()
    result = server.pfs("mount", str(tmp_path / "mnt"), "--inputs", "-", input=text.encode() + b"\n", check=False)
    assert_one_line_error(result, said)
    assert not os.path.ismount(tmp_path / "mnt")


@pytest.mark.parametrize("streaming", [True, False])
def test_a_workers_mount_drops_the_pages_a_reader_has_read(server, tmp_path, streaming):
    """`pfs mount --inputs` streams: a file read through it leaves at most DROP_BEHIND of its pages in the kernel's
    cache, and reads the same bytes again, also with other readers at once; `pfs mount` keeps them all."""
    data = random.Random(7).randbytes(3 * DROP_BEHIND + (5 << 20))
    server.pfs("create-repo", "a")
    put(server, "a", "big", data)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"inputs": [{"name": "a", "commit": "a@master"}]}) + "\n")
    mnt = tmp_path / "mnt"
    with mounted(server, mnt, *(["--inputs", str(inputs)] if streaming else ["--commit", "a@master"])):
        path = mnt / "a" / "big" if streaming else mnt / "big"
        for _ in range(2):
            assert path.read_bytes() == data
            if streaming:
                wait_for(lambda: _cached(path) <= DROP_BEHIND, 10)
            else:
                assert _cached(path) > 3 * DROP_BEHIND  # (the kernel may let a page or two go)
        with ThreadPoolExecutor(4) as pool:  # each reads the file through, from a place of its own, as drops go on
            assert all(pool.map(lambda start: _read_from(path, start) == data[start:] + data[:start],
                                range(0, len(data), len(data) // 4)))


def test_a_small_file_opened_through_the_mount_is_in_the_page_cache_before_it_is_read(server, tmp_path):
    """A file of up to STORED_AT_OPEN whose chunks the mount holds is put in the kernel's page cache when it is
    opened (the first open starts their fetch), with its very bytes: its reads then cost no request. A larger file
    is left to its reads, and so is one open elsewhere: a store would wait for the pages a read of it holds, and the
    read for the store. (fincore opens the file it looks at.)"""
    rng = random.Random(5)
    files = {"d/tiny": b"x", "d/lines": b"".join(b"%d,row\n" % i for i in range(20_000)),  # of many 4 KiB chunks
             "d/full": rng.randbytes(STORED_AT_OPEN), "d/large": rng.randbytes(STORED_AT_OPEN + 1),
             "e/held": rng.randbytes(5000)}  # alone in its directory: no other file's read fetches its chunks
    server.pfs("create-repo", "r")
    for path, data in files.items():
        put(server, "r", path, data)
    mnt = tmp_path / "mnt"
    with mounted(server, mnt):
        head = mnt / "r" / "master"
        with open(head / "e" / "held", "rb"):  # the first open: its chunks are fetched, not at hand
            for _ in range(20):
                assert _cached(head / "e" / "held") == 0
                time.sleep(0.05)
        for path in ("e/held", "d/tiny", "d/lines", "d/full"):
            wait_for(lambda: _cached(head / path) == -(-len(files[path]) // 4096) * 4096, 10)
            assert (head / path).read_bytes() == files[path]
        large = head / "d" / "large"
        with open(large, "rb") as f:  # its chunks then at hand, and its pages dropped
            assert f.read() == files["d/large"]
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        for _ in range(3):
            assert _cached(large) == 0


def _read_from(path, start):
    """The bytes of PATH from START to its end, then from its start to START."""
    with open(path, "rb") as f:
        f.seek(start)
        tail = f.read()
        f.seek(0)
        return tail + f.read(start)


def _cached(path):
    """Bytes of PATH in the page cache (fincore, util-linux)."""
    said = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], check=True,
                          capture_output=True, text=True).stdout
    return int(said.strip())
