"""Read benchmark: files read through `pfs mount`, next to the local disk and `borg mount`.

What it measures, in one run on the same machine and the same data (the data of
bench/ingest.py: one large "mixed" file, default 1 GiB, and a tree of small
files, default 10,000 files of 1-4 KiB in 100 directories):

1. Sequential read throughput (MB/s, 1 MB = 1e6 bytes) of the large file,
   `cat FILE > /dev/null`, from the local disk ("native"), through `pfs mount`
   and through `borg mount`, cold and then warm; and through each fresh mount
   with its store in the page cache (the first read the 3x goal is about).
2. Time to `stat` every small file, and time to read every small file
   (files/s), native, through pfs and through borg, cold and then warm.
3. The floor of a read through pfs on this machine: the large file's stored
   chunks read and unpacked straight from the store, cold (and again from the
   page cache), on the mount's fetch threads, with no FUSE and no reader
   (printed with the goals).
4. What FUSE alone costs: as many bytes read cold through a pyfuse3 file
   system that serves them from memory (bench/memfs.py). A read through the
   mount does both works, so on this machine's cores it takes at least the
   CPU seconds of the two over the number of cores, and at least as long as
   the two run side by side (each as it runs alone, the floor's on a thread
   while FUSE alone's is read), where they also slow each other down: the
   bound printed with the goals, and how near pfs comes to it.

How: the data is generated deterministically and put, untimed, into a pfs
server (`pfs put-file -c`, repo `bench`, branch master) and into a borg
repository (`borg create`, one archive, no encryption). pfs is mounted with
`pfs mount` and borg with `borg mount -f`, both in the foreground, each in its
own process. Every measurement runs "cold" first, then "warm": the best of
three re-reads at once on the same mount (the first re-read of a file also pays
the kernel for moving its pages to the active list, 4 KiB at a time through
FUSE, in large folios on the local disk). Before each cold run the mounts are made anew (pfs:
its server restarted too, so neither the mount's chunk cache nor the server's
caches are warm; borg: its caches live in the mount process) and the kernel's
page, dentry and inode caches are dropped (`echo 3 > /proc/sys/vm/drop_caches`,
as root), so native reads are cold too. The time a mount takes to come up is
shown apart and is not in the figures. The large file is timed by wall clock
around `cat`; the small files by a Python loop in a subprocess (`os.stat`, or
open and read to the end, of each file in path order, from a list made
beforehand, so no directory is listed) that times itself, so interpreter start
is left out for all three alike. A tool that is not installed, or a `borg
mount` that cannot mount (no FUSE support in borg), is skipped with a message.

Goals (from the issues): the first read of the large file through a fresh
mount, with the store in the page cache (kernel caches dropped, then every file
of the store read once), at least 3x as fast through pfs as through borg; a
cold read at least 0.8x as fast as its floor; a cold read of every small file
no slower than borg; a warm re-read through pfs within 2x the time of native
`cat`; a warm `stat` of every small file through pfs within 3x the time of
native. For the first two, the bound the floor and FUSE set is printed too.

The cold and warm reads, and the first reads, run in rounds (--rounds, default
3), the sources in reverse order every other round: a single run here moves
by up to a third with what the VM's host does with its memory. Each round's
times are printed; the tables and goals use each source's median (of cold
times, of warm times, of first reads). The floors and FUSE alone are measured
once, after the rounds (the two side by side 3 times, their median).

Run from the repo root, as root:
  .venv/bin/python bench/read.py [--size-mib 1024] [--files 10000] [--rounds 3] [--keep]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import (  # noqa: E402  (bench/ is not a package)
    BIG_NAME, MB, PFS, TREE_DIRS, TREE_NAME, Dataset, Pfs, at_least_one, children_cpu, print_machine, process_cpu,
    run, timed, warm, write_big_file, write_tree,
)
from pfs.core.model import ChunkRef, CommitRef  # noqa: E402
from pfs.core.ready import spawn, wait_ready  # noqa: E402
from pfs.vfs.chunks import FETCH_THREADS  # noqa: E402
from pfs.vfs.local_chunks import LocalChunks  # noqa: E402

REPO = "bench"
BRANCH = "master"
ARCHIVE = "a"
MOUNT_TIMEOUT = 120.0  # borg reads the archive's whole file list before it mounts
STOP_TIMEOUT = 15.0
AT_ONCE_RUNS = 3  # of the floor's work and FUSE's at once: a single run moves by a third here
WARM_RUNS = 3  # the first re-read also moves the pages to the kernel's active list; the best is the steady state
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"

# Run as `python -I -c SCRIPT ROOT LIST`: stats (or reads) ROOT/<each line of LIST>, prints its own seconds.
SMALL_FILES_SCRIPT = """
import os, sys, time
root, names = sys.argv[1], open(sys.argv[2]).read().splitlines()
paths = [os.path.join(root, n) for n in names]
start = time.perf_counter()
for p in paths:
    {body}
print(time.perf_counter() - start)
"""
STAT_BODY = "os.stat(p)"
READ_BODY = "with open(p, 'rb', buffering=0) as f: f.readall()"


# ---------------------------------------------------------------- caches


def drop_caches() -> None:
    """Drops the kernel's page, dentry and inode caches, so the next read comes from disk (or the store)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise SystemExit(f"cannot drop the page cache ({e.strerror}); run as root for cold figures") from None


def fuse_mounts_under(root: Path) -> list[str]:
    """Mount points under ROOT, from /proc/mounts."""
    with open("/proc/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


# ---------------------------------------------------------------- sources


@dataclass
class Source:
    """Where the benchmark reads the data from: the local disk here, or a mount (subclasses)."""

    name = "native"
    root: Path  # the data directory, or where it appears in a mount

    @property
    def big(self) -> Path:
        return self.root / BIG_NAME

    @property
    def tree(self) -> Path:
        return self.root / TREE_NAME

    def fresh(self) -> float | None:
        """Makes every cache of this source cold but the kernel's; returns the seconds spent mounting."""
        return None

    def store(self) -> Path | None:
        """Where the data is stored, read through to serve it (a mount's repository); None for the local disk."""
        return None

    def close(self) -> None:
        pass


@dataclass
class FuseMount(Source):
    """A FUSE filesystem served by a foreground process that we start, and unmount when done."""

    point: Path = Path()
    log_dir: Path = Path()
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen | None = None
    mounts: int = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def mount(self) -> float:
        """Starts the mount process and waits until the mount point is mounted; returns the seconds it took."""
        self.mounts += 1
        log = self.log_dir / f"mount-{self.name}-{self.mounts}.log"
        start = time.perf_counter()
        with open(log, "w") as out:
            self.start(out)
        self.wait_mounted(log)
        return time.perf_counter() - start

    def start(self, out: TextIO) -> None:
        """Starts the mount process, its output to OUT."""
        self.proc = subprocess.Popen(self.command(), env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def wait_mounted(self, log: Path) -> None:
        """Watches the mount table: `borg mount` tells no other process when it is up."""
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.point):
            if self.proc.poll() is not None:
                raise MountFailed(f"{self.name} mount exited ({self.proc.returncode}): {log.read_text().strip()}")
            if time.monotonic() > deadline:
                raise MountFailed(f"{self.name} did not mount within {MOUNT_TIMEOUT:.0f} s (log: {log})")
            time.sleep(0.01)

    def unmount(self) -> None:
        """Unmounts (fusermount -u, lazily if busy) and waits for the mount process to exit."""
        if os.path.ismount(self.point):
            if subprocess.run([FUSERMOUNT, "-u", str(self.point)], capture_output=True).returncode != 0:
                subprocess.run([FUSERMOUNT, "-u", "-z", str(self.point)], capture_output=True)
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def fresh(self) -> float:
        self.unmount()
        return self.mount()

    def close(self) -> None:
        self.unmount()


class MountFailed(Exception):
    pass


@dataclass
class PfsMount(FuseMount):
    name = "pfs"
    server: "PfsServer | None" = None

    ready: int = -1  # the read end of the mount's ready pipe

    def command(self) -> list[str]:
        return [PFS, "mount", str(self.point)]

    def start(self, out: TextIO) -> None:
        self.proc, self.ready = spawn(self.command(), env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def wait_mounted(self, log: Path) -> None:
        """Waits for the mount's ready line."""
        try:
            said = wait_ready(self.ready, MOUNT_TIMEOUT)
        except TimeoutError:
            raise MountFailed(f"{self.name} did not mount within {MOUNT_TIMEOUT:.0f} s (log: {log})") from None
        if said is None:
            raise MountFailed(f"{self.name} mount exited ({self.proc.wait()}): {log.read_text().strip()}")

    def fresh(self) -> float:
        self.unmount()
        self.server.restart()
        self.env["PFS_ADDRESS"] = self.server.env["PFS_ADDRESS"]
        return self.mount()

    def store(self) -> Path:
        return self.server.store


@dataclass
class MemFsMount(FuseMount):
    name = "memfs"
    size: int = 0

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("memfs.py")), str(self.point), BIG_NAME, str(self.size)]


@dataclass
class BorgMount(FuseMount):
    name = "borg"
    repo: Path = Path()

    def command(self) -> list[str]:
        return ["borg", "mount", "-f", f"{self.repo}::{ARCHIVE}", str(self.point)]

    def store(self) -> Path:
        return self.repo


def stop(proc: subprocess.Popen) -> None:
    """Waits for PROC to exit; SIGTERM, then SIGKILL, if it does not."""
    try:
        proc.wait(timeout=STOP_TIMEOUT)
        return
    except subprocess.TimeoutExpired:
        proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class PfsServer(Pfs):
    """bench/ingest.py's pfs server with repo `bench`, restartable on the same data dir (for cold reads)."""

    starts = 0

    def __enter__(self) -> "PfsServer":
        self.start()
        run([PFS, "create-repo", REPO], self.env)
        return self

    def start(self) -> None:
        self.starts += 1
        self.start_server(self.store.with_name(f"{self.store.name}-{self.starts}.log"))

    def restart(self) -> None:
        super().__exit__()
        self.start()


# ---------------------------------------------------------------- setup


def make_data(data_dir: Path, size: int, files: int) -> tuple[Dataset, Dataset, list[str]]:
    """The large file and the tree, and the tree's files as paths relative to it, in path order."""
    print(f"generating {size / MB:.1f} MB mixed file and {files} small files ...", flush=True)
    write_big_file(data_dir / BIG_NAME, size)
    nbytes = write_tree(data_dir / TREE_NAME, files)
    names = sorted(str(p.relative_to(data_dir / TREE_NAME)) for p in (data_dir / TREE_NAME).rglob("*") if p.is_file())
    return Dataset(BIG_NAME, size, 1), Dataset(TREE_NAME, nbytes, files), names


def setup_pfs(work: Path, data_dir: Path, datasets: list[Dataset], stack: ExitStack) -> PfsMount:
    server = stack.enter_context(PfsServer(work / "pfs"))
    for data in datasets:
        start = time.perf_counter()
        run(server.command(data, 1), server.env, data_dir)
        print(f"  pfs put-file {data.name}: {time.perf_counter() - start:.1f} s", flush=True)
    point = work / "mnt-pfs"
    point.mkdir()
    mnt = PfsMount(point / REPO / BRANCH, point, work, dict(server.env), server=server)
    stack.callback(mnt.close)
    return mnt


def setup_borg(work: Path, data_dir: Path, datasets: list[Dataset], stack: ExitStack) -> BorgMount | None:
    if not shutil.which("borg"):
        print("skipping borg: borg is not installed")
        return None
    repo, point = work / "borg", work / "mnt-borg"
    env = dict(os.environ) | {
        "BORG_BASE_DIR": str(work / "borg.home"),
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
    }
    run(["borg", "init", "-e", "none", str(repo)], env)
    start = time.perf_counter()
    run(["borg", "create", f"{repo}::{ARCHIVE}", *(d.name for d in datasets)], env, data_dir)
    print(f"  borg create: {time.perf_counter() - start:.1f} s", flush=True)
    point.mkdir()
    mnt = BorgMount(point, point, work, env, repo=repo)  # paths relative to data_dir are kept as they are
    stack.callback(mnt.close)
    try:
        mnt.mount()
    except MountFailed as e:
        print(f"skipping borg mount: {e}")
        return None
    return mnt


def check_sizes(sources: list[Source], big: Dataset) -> None:
    """The large file must look the same size everywhere, or the figures compare different things."""
    for s in sources:
        size = s.big.stat().st_size
        if size != big.nbytes:
            raise SystemExit(f"{s.name}: {s.big} is {size} bytes, expected {big.nbytes}")


# ---------------------------------------------------------------- measuring


@dataclass
class Timing:
    cold: float
    warm: float
    mount: float | None  # seconds to mount before the cold run; None for the local disk


def cold_then_warm(source: Source, measure) -> Timing:
    """MEASURE(source) once cold (fresh mount, dropped kernel caches), then warm: the best of WARM_RUNS re-reads."""
    mount = source.fresh()
    drop_caches()
    cold = measure(source)
    warm = min(measure(source) for _ in range(WARM_RUNS))
    return Timing(cold, warm, mount)


def first_reads(sources: list[Source], rounds: int) -> dict[str, float]:
    """Seconds of the first read of the large file through each fresh mount, with its store in the page cache
    (the kernel's caches dropped, then every file of the store read once): the issue's 3x-borg case. The median of
    ROUNDS rounds, the sources' order reversed every other round."""
    runs = [first_reads_once(sources if r % 2 else sources[::-1], f"round {r} of {rounds}")
            for r in range(1, rounds + 1)]
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def first_reads_once(sources: list[Source], title: str) -> dict[str, float]:
    print(f"first read of {BIG_NAME}, the store in the page cache, {title}:", flush=True)
    results = {}
    for s in sources:
        if s.store() is None:
            continue
        s.fresh()
        drop_caches()
        warm(s.store())
        results[s.name] = read_big(s)
        print(f"  {s.name:<7} {results[s.name]:8.3f} s", flush=True)
    return results


def read_big(source: Source) -> float:
    return timed(["sh", "-c", 'cat "$1" > /dev/null', "sh", str(source.big)], dict(os.environ), Path("/"))


def unpack_big(server: Pfs, warm_store: bool = False, repo: str = REPO) -> tuple[float, float]:
    """Seconds, and CPU seconds, to read and unpack, cold (or WARM_STORE: from the page cache), every stored chunk
    of the large file (in REPO, on BRANCH) straight from the store.

    The mount's own work (LocalChunks.read_many of each chunk alone, as read-ahead
    asks for them, on as many threads as its chunk cache has) with no FUSE, no
    kernel page cache of the file and no reader: the floor of a cold read through
    the mount on this machine.
    """
    chunks = big_chunks(server, repo)
    drop_caches()
    if warm_store:
        warm(server.store)
    return unpack(server.store, chunks)


def big_chunks(server: Pfs, repo: str = REPO) -> list[ChunkRef]:
    with server.client() as client:
        return client.inspect_file(CommitRef(repo, BRANCH), BIG_NAME).chunks


def unpack(store_dir: Path, chunks: list[ChunkRef]) -> tuple[float, float]:
    """Seconds, and CPU seconds, to read and unpack CHUNKS from the store at STORE_DIR as the mount does."""
    store = LocalChunks(str(store_dir))
    try:
        start, cpu = time.perf_counter(), own_cpu()
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            for [data] in pool.map(lambda ref: list(store.read_many([ref])), chunks):
                if data is None:
                    raise SystemExit(f"a chunk of {BIG_NAME} is missing or corrupt in {store_dir}")
        return time.perf_counter() - start, own_cpu() - cpu
    finally:
        store.close()


def deliver_big(work: Path, data: Dataset) -> tuple[float, float]:
    """Seconds, and CPU seconds (the file system's and the reader's), of a cold read of as many bytes through FUSE
    from memory (bench/memfs.py): what a read through the mount costs beyond its floor's work."""
    with memfs_mounted(work, data) as memfs:
        drop_caches()
        cpu = children_cpu() + process_cpu(memfs.proc.pid)  # not its start
        seconds = read_big(memfs)
        return seconds, children_cpu() + process_cpu(memfs.proc.pid) - cpu


def both_at_once(work: Path, server: Pfs, data: Dataset, warm_store: bool = False) -> float:
    """Seconds of the floor's work (unpack_big) and FUSE's alone (deliver_big) run at the same time, each as it
    runs alone: the least a read through the mount, which does both, can take on this machine's cores, where
    the two slow each other down (caches, memory, the host's pages) more than their CPU seconds tell. The median
    of AT_ONCE_RUNS."""
    chunks = big_chunks(server)
    runs = []
    with memfs_mounted(work, data) as memfs, ThreadPoolExecutor(1) as pool:
        for _ in range(AT_ONCE_RUNS):
            drop_caches()
            if warm_store:
                warm(server.store)
            start = time.perf_counter()
            unpacked = pool.submit(unpack, server.store, chunks)
            read_big(memfs)
            unpacked.result()
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


@contextmanager
def memfs_mounted(work: Path, data: Dataset) -> Iterator["MemFsMount"]:
    """bench/memfs.py serving as many bytes as DATA holds, mounted under WORK (at a new mount point each time)."""
    point = Path(tempfile.mkdtemp(prefix="mnt-memfs-", dir=work))
    memfs = MemFsMount(point, point, work, size=data.nbytes)
    try:
        memfs.mount()
        yield memfs
    finally:
        memfs.close()


def own_cpu() -> float:
    """CPU seconds (user and system) of this process, every thread's."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def small_files(body: str, names_file: Path):
    script = SMALL_FILES_SCRIPT.format(body=body)

    def measure(source: Source) -> float:
        os.sync()
        return float(run([sys.executable, "-I", "-c", script, str(source.tree), str(names_file)], dict(os.environ)))

    return measure


def measure_all(title: str, sources: list[Source], measure) -> dict[str, Timing]:
    print(f"{title}:", flush=True)
    results = {}
    for s in sources:
        results[s.name] = t = cold_then_warm(s, measure)
        print(f"  {s.name:<7} cold {t.cold:8.3f} s   warm {t.warm:8.3f} s", flush=True)
    return results


def measure_rounds(title: str, sources: list[Source], measure, rounds: int) -> dict[str, Timing]:
    """measure_all in ROUNDS rounds, the sources' order reversed every other round: each source's median cold
    time, median warm time and median mount time."""
    runs = [measure_all(f"{title}, round {r} of {rounds}", sources if r % 2 else sources[::-1], measure)
            for r in range(1, rounds + 1)]
    return {s.name: Timing(statistics.median(run[s.name].cold for run in runs),
                           statistics.median(run[s.name].warm for run in runs),
                           None if runs[0][s.name].mount is None else
                           statistics.median(run[s.name].mount for run in runs)) for s in sources}


# ---------------------------------------------------------------- printing


def print_table(title: str, data: Dataset, results: dict[str, Timing]) -> None:
    pfs = results["pfs"]
    unit = "files/s" if data.is_tree else "MB/s"

    def rate(seconds: float) -> float:
        return data.nfiles / seconds if data.is_tree else data.nbytes / MB / seconds

    print(f"\n{title}: {data.nbytes / MB:.1f} MB in {data.nfiles} file(s)")
    print("  pfs÷tool = pfs speed ÷ tool speed (tool time ÷ pfs time): above 1 means pfs is faster")
    print(f"  {'source':<7} {'cold s':>8} {'cold ' + unit:>13} {'warm s':>8} {'warm ' + unit:>13}"
          f" {'pfs÷tool cold':>14} {'warm':>6} {'mount s':>8}")
    for name, t in results.items():
        mount = "-" if t.mount is None else f"{t.mount:.2f}"
        print(f"  {name:<7} {t.cold:8.3f} {rate(t.cold):13.1f} {t.warm:8.3f} {rate(t.warm):13.1f}"
              f" {t.cold / pfs.cold:14.2f} {t.warm / pfs.warm:6.2f} {mount:>8}")


def goal(text: str, value: float | None, met: bool) -> str:
    if value is None:
        return f"  {text}: not measured (borg mount unavailable)"
    return f"  {text}: {value:.2f}  {'MET' if met else 'NOT MET'}"


def print_goals(big: dict[str, Timing], first: dict[str, float], stat: dict[str, Timing],
                reads: dict[str, Timing], data: Dataset, floors: dict[str, tuple[float, float]],
                delivery: tuple[float, float], at_once: dict[str, float]) -> None:
    """FLOORS: the floor's (seconds, CPU seconds) with the store cold ("cold") and in the page cache ("first");
    AT_ONCE: the seconds of the floor's work and FUSE's at the same time, the same two ways."""
    warm = big["pfs"].warm / big["native"].warm
    stat_ratio = stat["pfs"].warm / stat["native"].warm
    print("\ngoals")
    first_ratio = first["borg"] / first["pfs"] if "borg" in first else None
    print(goal("first read, the store in the page cache, pfs speed ÷ borg speed (goal >= 3)", first_ratio,
               first_ratio is not None and first_ratio >= 3))
    print_bound(first["pfs"], first.get("borg"), floors["first"], delivery, at_once["first"], data,
                "from the page cache")
    of_floor = floors["cold"][0] / big["pfs"].cold
    print(goal("cold sequential read, pfs speed ÷ its floor's (goal >= 0.8)", of_floor, of_floor >= 0.8))
    print_bound(big["pfs"].cold, big["borg"].cold if "borg" in big else None, floors["cold"], delivery,
                at_once["cold"], data, "cold")
    small = reads["borg"].cold / reads["pfs"].cold if "borg" in reads else None
    print(goal("cold read of every small file, pfs speed ÷ borg speed (goal >= 1)", small,
               small is not None and small >= 1))
    print(goal("warm re-read, pfs time ÷ native cat time (goal <= 2)", warm, warm <= 2))
    print(goal("warm stat of all small files, pfs time ÷ native time (goal <= 3)", stat_ratio, stat_ratio <= 3))


def print_bound(pfs: float, borg: float | None, floor: tuple[float, float], delivery: tuple[float, float],
                at_once: float, data: Dataset, how: str) -> None:
    """The floor of a read through the mount, what FUSE alone costs, the two at once, and the bound they set on
    this machine."""
    (floor_s, floor_cpu), (deliver_s, deliver_cpu) = floor, delivery
    cores = os.cpu_count() or 1
    # the mount does the floor's work and FUSE's: at best as fast as the two at once, and no faster than their CPU
    # seconds spread over every core
    bound = max(floor_s, deliver_s, (floor_cpu + deliver_cpu) / cores, at_once)
    print(f"    floor: the stored chunks read ({how}) and unpacked alone, no FUSE ({FETCH_THREADS} threads):"
          f" {floor_s:.3f} s, {floor_cpu:.2f} CPU s, {data.nbytes / MB / floor_s:.1f} MB/s")
    print(f"    FUSE alone: the same bytes from memory through a pyfuse3 file system (bench/memfs.py), read cold:"
          f" {deliver_s:.3f} s, {deliver_cpu:.2f} CPU s (the file system's and the reader's)")
    print(f"    both at once: the floor's work and FUSE alone's, run side by side: {at_once:.3f} s"
          f" (median of {AT_ONCE_RUNS})")
    print(f"    bound: max(floor, FUSE, ({floor_cpu:.2f} + {deliver_cpu:.2f}) CPU s ÷ {cores} cores, both at once)"
          f" = {bound:.3f} s: at best {floor_s / bound:.2f}x the floor's speed"
          + (f", {borg / bound:.2f}x borg's" if borg else "") + f"; pfs took {pfs:.3f} s, {pfs / bound:.2f}x the bound")


# ---------------------------------------------------------------- main


def parse_args(doc: str = __doc__, with_rounds: bool = False) -> argparse.Namespace:
    """The options of a bench over the large file and the small files; DOC, the bench's module docstring; WITH_ROUNDS,
    whether it measures in rounds (--rounds)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024, help="size of the large file in MiB (default 1024)")
    p.add_argument("--files", type=int, default=10_000, help="number of small files (default 10000)")
    if with_rounds:
        p.add_argument("--rounds", type=at_least_one, default=3,
                       help="rounds of the cold, warm and first reads (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, stores, logs)")
    return p.parse_args()


def bench(work: Path, size: int, files: int, rounds: int, stack: ExitStack) -> None:
    data_dir = work / "data"
    data_dir.mkdir()
    big, tree, names = make_data(data_dir, size, files)
    names_file = work / "files.txt"
    names_file.write_text("".join(f"{n}\n" for n in names))
    print("storing the data (untimed) ...", flush=True)
    sources: list[Source] = [Source(data_dir), setup_pfs(work, data_dir, [big, tree], stack)]
    borg = setup_borg(work, data_dir, [big, tree], stack)
    sources += [borg] if borg else []
    for s in sources[1:]:
        if not os.path.ismount(s.point):
            s.mount()
    check_sizes(sources, big)
    print("each measurement: cold (fresh mounts, pfs server restarted, kernel caches dropped), then warm at once")
    big_results = measure_rounds(f"sequential read of {BIG_NAME}", sources, read_big, rounds)
    stat_results = measure_rounds(f"stat of {files} small files", sources, small_files(STAT_BODY, names_file), rounds)
    read_results = measure_rounds(f"read of {files} small files", sources, small_files(READ_BODY, names_file), rounds)
    first = first_reads(sources, rounds)
    floors = {"cold": unpack_big(sources[1].server), "first": unpack_big(sources[1].server, warm_store=True)}
    delivery = deliver_big(work, big)
    server = sources[1].server
    at_once = {"cold": both_at_once(work, server, big), "first": both_at_once(work, server, big, warm_store=True)}
    print_table(f"sequential read (cat > /dev/null) of {BIG_NAME}", big, big_results)
    print_table(f"stat of every small file ({TREE_DIRS} directories)", tree, stat_results)
    print_table("read of every small file", tree, read_results)
    print_goals(big_results, first, stat_results, read_results, big, floors, delivery, at_once)


def in_scratch(name: str, keep: bool, run: Callable[[Path, ExitStack], None]) -> None:
    """RUN(work, stack) in a fresh dir /tmp/pfs-bench-NAME-*, with STACK closed (mounts, servers) whatever happens;
    the dir is removed after unless KEEP, or something is still mounted in it."""
    work = Path(tempfile.mkdtemp(prefix=f"pfs-bench-{name}-", dir="/tmp"))
    try:
        with ExitStack() as stack:
            run(work, stack)
    finally:
        left = fuse_mounts_under(work)
        if left:
            print(f"\nstill mounted, not removing {work}: {', '.join(left)}")
        elif keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work)


def main() -> None:
    args = parse_args(with_rounds=True)
    if not Path(PFS).exists():
        raise SystemExit(f"pfs not found at {PFS}; run `make setup`")
    print_machine(["borg", "--version"], ["cat", "--version"])
    in_scratch("read", args.keep, lambda work, stack: bench(work, args.size_mib << 20, args.files, args.rounds, stack))


if __name__ == "__main__":
    main()
