"""Ingest benchmark: pfs put-file next to cp, borg create and restic backup.

What it measures, in one run on the same machine and the same data:

1. Throughput (MB/s, 1 MB = 1e6 bytes) of putting one large "mixed" file
   (default 1 GiB: blocks of random bytes interleaved with CSV-like text, so it
   compresses partly and has line ends), with `pfs put-file -c`, `cp`,
   `borg create` and `restic backup`.
2. Throughput (files/s and MB/s) of putting a tree of many small files
   (default 10,000 files of 1-4 KiB in 100 directories), with `pfs put-file -r -c`,
   `cp -r`, `borg create` and `restic backup`.
3. For the large file, a second, slightly changed version (a few bytes changed
   near the start, 100 bytes inserted in the middle, written over the original
   at the same path): the time to ingest it, each store's size (`du -sb`)
   after the first and the second version, the growth, and the dedup ratio
   (bytes ingested over both versions / store size after the second).
4. How zstd's levels trade time for size on the large file's chunks (a sample,
   on one core): what pfs's compression.LEVEL was chosen by.
5. The goals (the large file at 2x borg's speed, the small files at 1.5x): the
   median, over the rounds, of each round's borg time ÷ pfs time; and
   for each the floor of pfs on this machine: the CPU time of the stages a
   put-file cannot do without (cut, hash, compress, and the server's check of
   each chunk; for the large file, sending each chunk over loopback TCP and
   storing it in a file of its own too; for small files, listing and reading
   them), measured in this process on one core and spread over every core (see
   Stages). A goal that borg's time ÷ the floor misses is out of reach of this
   storage model here, however well its stages overlap; CPU time, unlike a wall
   clock, is hardly moved by what else the machine runs (but for the store
   stage: fresh page-cache pages cost this VM from 0.3 to 1.1 s per GiB).

How: the data is generated deterministically (seeded) in a temporary directory
under /tmp, read once before each phase so every tool starts with a warm page
cache, and `sync`ed (untimed) before each timed command so no tool pays for
another's unflushed writes. Each command is timed alone by wall clock, from
process start to exit, and its CPU time counted (for pfs, its server's
too); pfs, borg and restic flush their data durably before they exit, cp
does not. Every tool writes to its own store, one per dataset, on
the same filesystem as the data; pfs gets a fresh server (`--port 0`) per
dataset, started before and stopped after the timed commands. A baseline tool
that is not installed is skipped with a message.

The first version of each dataset is ingested in rounds (--rounds, default 3),
each into fresh stores, the tools in turn, in reverse order every other round:
a single run here moves by up to a third with what the VM's host does with
its memory, and a drift weighs on each tool alike. Each round's times are
printed; the tables show each tool's median round, and the goals the median
ratio. The second version is ingested once, into the last round's stores.

Run from the repo root:
  .venv/bin/python bench/ingest.py [--size-mib 1024] [--files 10000] [--rounds 3] [--keep]
"""

import argparse
import mmap
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from pfs.client import Client
from pfs.client.auth import read_token
from pfs.core import compression, frames
from pfs.core.chunking import DEFAULT_AVG_SIZE, Chunker
from pfs.core.hashing import address
from pfs.core.memory import keep_freed_memory, write_all
from pfs.cli.sources import sources
from pfs.core.ready import spawn, wait_ready

BIN = Path(sys.executable).parent
PFS = str(BIN / "pfs")
SEED = 20240101
MB = 1e6
BIG_NAME = "big.bin"
TREE_NAME = "tree"
TREE_DIRS = 100
CHANGE_AT = 4096          # where a few bytes are changed near the start
CHANGED = b"CHANGED!"
INSERTED = bytes(range(100))  # inserted in the middle
COPY_BLOCK = 8 << 20
SERVER_START_TIMEOUT = 30.0
CITIES = ["Amsterdam", "Berlin", "Cairo", "Delhi", "Lima", "Oslo", "Quito", "Seoul", "Tokyo", "Zurich"]


# ---------------------------------------------------------------- data


def csv_lines(rng: random.Random, first_row: int, count: int) -> str:
    """`count` CSV-like lines (id, city, hex key, amount), numbered from `first_row`."""
    raw = rng.randbytes(count * 8)
    return "".join(
        f"{first_row + i},{CITIES[raw[8 * i] % len(CITIES)]},{raw[8 * i + 1:8 * i + 5].hex()},"
        f"{int.from_bytes(raw[8 * i + 5:8 * i + 8], 'big') / 100:.2f}\n"
        for i in range(count)
    )


def mixed_blocks(size: int, seed: int) -> Iterator[bytes]:
    """Exactly `size` bytes, as alternating blocks (64-512 KiB) of random bytes and CSV text."""
    rng = random.Random(seed)
    produced, row, text = 0, 0, False
    while produced < size:
        n = min(rng.randint(64 << 10, 512 << 10), size - produced)
        if text:
            lines = n // 30 + 1  # lines are 30-40 bytes: a little more than n, then cut
            block = csv_lines(rng, row, lines).encode()[:n]
            row += lines
        else:
            block = rng.randbytes(n)
        yield block
        produced += n
        text = not text


def write_big_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for block in mixed_blocks(size, SEED):
            f.write(block)


def write_tree(root: Path, files: int) -> int:
    """`files` text files of 1-4 KiB in TREE_DIRS subdirectories; returns their total size."""
    rng = random.Random(SEED + 1)
    total = 0
    for i in range(files):
        d = root / f"d{i % TREE_DIRS:03d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 4096)
        data = csv_lines(rng, i * 1000, size // 30 + 1).encode()[:size]
        (d / f"f{i:05d}.csv").write_bytes(data)
        total += len(data)
    return total


def write_changed_version(path: Path) -> int:
    """Overwrite `path` with a slightly changed copy of itself; returns the new size."""
    size = path.stat().st_size
    middle = size // 2
    tmp = path.with_name(path.name + ".v2")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        copy_bytes(src, dst, CHANGE_AT)
        src.seek(len(CHANGED), os.SEEK_CUR)
        dst.write(CHANGED)
        copy_bytes(src, dst, middle - CHANGE_AT - len(CHANGED))
        dst.write(INSERTED)
        copy_bytes(src, dst, size - middle)
    tmp.replace(path)
    return size + len(INSERTED)


def copy_bytes(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    while n > 0:
        block = src.read(min(n, COPY_BLOCK))
        dst.write(block)
        n -= len(block)


def warm(path: Path) -> None:
    """Read every file under `path` once, so it is in the page cache."""
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in paths:
        with open(p, "rb") as f:
            while f.read(COPY_BLOCK):
                pass


@dataclass(frozen=True)
class Dataset:
    name: str      # a file or directory name in the data directory
    nbytes: int
    nfiles: int

    @property
    def is_tree(self) -> bool:
        return self.nfiles > 1


# ---------------------------------------------------------------- processes


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    """Run `cmd` to completion; its stdout, or SystemExit with its stderr if it fails."""
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {e.returncode}): {e.stderr.strip()}") from None


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    os.sync()
    start = time.perf_counter()
    run(cmd, env, cwd)
    return time.perf_counter() - start


def children_cpu() -> float:
    """CPU seconds (user and system) of the child processes waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def du(path: Path) -> int:
    return int(run(["du", "-sb", str(path)], dict(os.environ)).split()[0])


def first_line(cmd: list[str]) -> str:
    if not shutil.which(cmd[0]):
        return "not installed"
    return run(cmd, dict(os.environ)).splitlines()[0]


# ---------------------------------------------------------------- tools


@dataclass
class Tool:
    """One tool writing one dataset into its own store (a directory)."""

    store: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    name = "?"
    binary = "?"

    def __enter__(self) -> "Tool":
        """Untimed setup: make the store."""
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def command(self, data: Dataset, version: int) -> list[str]:
        """The timed command that ingests `data` (relative to the data directory) as `version`."""
        raise NotImplementedError

    def daemon_cpu(self) -> float:
        """CPU seconds used so far by the tool's own long-running process (a server), if it has one."""
        return 0.0


class Cp(Tool):
    name = binary = "cp"

    def __enter__(self) -> "Cp":
        self.store.mkdir()
        return self

    def command(self, data: Dataset, version: int) -> list[str]:
        return ["cp", "-r", data.name, str(self.store / f"v{version}")]


class Pfs(Tool):
    name = "pfs"
    binary = PFS
    server: subprocess.Popen | None = None

    def __enter__(self) -> "Pfs":
        self.start_server(self.store.with_name(self.store.name + ".log"))
        run([PFS, "create-repo", "bench"], self.env)
        return self

    def start_server(self, log: Path, *options: str) -> None:
        """Starts `pfs server` on the store, on a free port, with OPTIONS; its address from its ready line."""
        with open(log, "w") as out:
            self.server, ready = spawn([PFS, "server", "--data-dir", str(self.store), "--port", "0", *options],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out)
        try:
            said = wait_ready(ready, SERVER_START_TIMEOUT)
        except TimeoutError:
            self.server.kill()
            raise SystemExit(f"pfs server did not start within {SERVER_START_TIMEOUT:.0f} s (log: {log})") from None
        if said is None:
            self.server.wait()
            raise SystemExit(f"pfs server exited: {log.read_text().strip()}")
        self.env["PFS_ADDRESS"] = said["address"]
        self.env["PFS_TOKEN_FILE"] = said["token_file"]  # the path only: the token never leaves its file

    def client(self) -> Client:
        """A client of this server, with its token."""
        return Client(self.env["PFS_ADDRESS"], read_token(Path(self.env["PFS_TOKEN_FILE"])))

    def __exit__(self, *exc: object) -> None:
        if self.server is None:
            return
        self.server.terminate()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()

    def daemon_cpu(self) -> float:
        return process_cpu(self.server.pid)

    def command(self, data: Dataset, version: int) -> list[str]:
        flags = ["-r"] * data.is_tree + ["-c"] + ["-o"] * (version > 1)
        return [PFS, "put-file", "bench", "master", data.name, *flags, "-f", data.name]


class Borg(Tool):
    name = binary = "borg"

    def __enter__(self) -> "Borg":
        self.env |= {
            "BORG_BASE_DIR": str(self.store.with_name(self.store.name + ".home")),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }
        run(["borg", "init", "-e", "none", str(self.store)], self.env)
        return self

    def command(self, data: Dataset, version: int) -> list[str]:
        return ["borg", "create", f"{self.store}::v{version}", data.name]


class Restic(Tool):
    name = binary = "restic"

    def __enter__(self) -> "Restic":
        self.env |= {
            "RESTIC_PASSWORD": "bench",
            "RESTIC_CACHE_DIR": str(self.store.with_name(self.store.name + ".cache")),
        }
        run(["restic", "init", "-q", "-r", str(self.store)], self.env)
        return self

    def command(self, data: Dataset, version: int) -> list[str]:
        return ["restic", "-r", str(self.store), "backup", "-q", data.name]


TOOLS: list[type[Tool]] = [Pfs, Cp, Borg, Restic]


def available_tools() -> list[type[Tool]]:
    found = []
    for tool in TOOLS:
        if shutil.which(tool.binary):
            found.append(tool)
        else:
            print(f"skipping {tool.name}: {tool.binary} is not installed")
    if Pfs not in found:
        raise SystemExit(f"pfs not found at {PFS}; run `make setup`")
    return found


# ---------------------------------------------------------------- measuring


@dataclass
class Result:
    seconds: float
    stored: int
    cpu: float  # CPU seconds of the command and of the tool's server


def ingest_all(tools: list[Tool], data: Dataset, data_dir: Path, version: int) -> dict[str, Result]:
    """Time every tool ingesting `data` as `version`, in the order of TOOLS; store sizes afterwards."""
    warm(data_dir / data.name)
    results = {}
    for tool in tools:
        cpu = children_cpu() + tool.daemon_cpu()
        seconds = timed(tool.command(data, version), tool.env, data_dir)
        cpu = children_cpu() + tool.daemon_cpu() - cpu
        results[tool.name] = Result(seconds, du(tool.store), cpu)
        print(f"  {data.name} v{version}: {tool.name:<7} {seconds:8.2f} s  cpu {cpu:6.2f} s", flush=True)
    return results


def ingest_rounds(kinds: list[type[Tool]], stores: Path, data: Dataset, data_dir: Path, rounds: int,
                  then: Callable[[list[Tool]], None] = lambda tools: None) -> list[dict[str, Result]]:
    """Each tool's times of ingesting DATA as version 1, in ROUNDS rounds, each into fresh stores under STORES (the
    earlier rounds' removed), the tools' order reversed every other round; THEN(tools) after the last round."""
    runs = []
    for r in range(1, rounds + 1):
        print(f"  round {r} of {rounds}", flush=True)
        with ExitStack() as stack:
            tools = open_tools(kinds, stores / f"round-{r}", stack)
            runs.append(ingest_all(tools if r % 2 else tools[::-1], data, data_dir, 1))
            if r == rounds:
                then(tools)
        if r < rounds:
            shutil.rmtree(stores / f"round-{r}")
    return runs


def median_round(runs: list[dict[str, Result]]) -> dict[str, Result]:
    """Each tool's result of its median round (by time; of an even number, the faster of the middle two)."""
    return {name: sorted((run[name] for run in runs), key=lambda r: r.seconds)[(len(runs) - 1) // 2]
            for name in runs[0]}


@dataclass(frozen=True)
class Stages:
    """CPU seconds, on one core, of each stage of a put-file that pfs cannot do without, measured in this process
    (no gRPC, no server). However well a put-file's stages overlap, it takes at least their sum spread
    over every core: the floor of pfs on this machine, and unlike a wall clock, hardly moved by other work."""

    seconds: dict[str, float]

    @property
    def floor(self) -> float:
        return sum(self.seconds.values()) / len(os.sched_getaffinity(0))

    def __str__(self) -> str:
        return " + ".join(f"{name} {s:.2f}" for name, s in self.seconds.items())


class StageClock:
    """Adds up this thread's CPU time per stage: lap(name) charges the time since the last lap to NAME."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.thread_time()

    def lap(self, name: str) -> None:
        now = time.thread_time()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


def stages_big(path: Path, new: bool = True) -> Stages:
    """The large file's stages: cut (read, content-defined cuts, each chunk copied out), hash (BLAKE3), compress
    (compression.compress), check (what the server does to each chunk it receives: decompress and hash), send (each
    frame through a loopback TCP connection, both ends: the server is another process) and store (each frame
    written to a file of its own beside PATH, as the server keeps a large chunk, all made durable at the end). With
    NEW false, the file's chunks are taken to be the server's already (a copy's): cut and hash only, what it takes
    to find out that none is to be sent."""
    clock = StageClock()
    with open(path, "rb") as f, Sink(path.parent) if new else nullcontext() as sink:
        chunks = Chunker(DEFAULT_AVG_SIZE, "line").split(f)
        while (chunk := next(chunks, None)) is not None:
            clock.lap("cut")
            frame = _chunk_stages(clock, chunk, new)
            if sink is not None:
                sink.send(frame)
                clock.lap("send")
                sink.store(frame)
                clock.lap("store")
        if sink is not None:
            sink.sync()
            clock.lap("store")
    if sink is not None:
        clock.seconds["send"] += sink.received_cpu()
    return Stages(clock.seconds)


class Sink:
    """Where stages_big sends and stores frames: a loopback TCP connection drained by a thread of its own (whose
    CPU seconds received_cpu() gives once the connection is closed), and a temporary directory in DIRECTORY."""

    def __init__(self, directory: Path) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="pfs-bench-store-", dir=directory))
        with socket.create_server(("127.0.0.1", 0)) as listener:
            self._out = socket.create_connection(listener.getsockname())
            self._in, _ = listener.accept()
        self._cpu = 0.0
        self._receiver = threading.Thread(target=self._receive, name="bench-receive")
        self._receiver.start()
        self._stored = 0

    def send(self, frame: bytes) -> None:
        self._out.sendall(frame)

    def store(self, frame: bytes) -> None:
        self._stored += 1
        with open(self._dir / str(self._stored), "wb") as f:
            write_all(f, frame)  # as the server writes a chunk file

    def sync(self) -> None:
        os.sync()

    def received_cpu(self) -> float:
        return self._cpu

    def _receive(self) -> None:
        start, buffer = time.thread_time(), bytearray(1 << 20)
        while self._in.recv_into(buffer):
            pass
        self._cpu = time.thread_time() - start

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *_: object) -> None:
        self._out.close()
        self._receiver.join()
        self._in.close()
        shutil.rmtree(self._dir)


def stages_tree(root: Path) -> Stages:
    """The small files' stages: list (put-file's own listing), read (open, read, close), hash, compress, check."""
    clock = StageClock()
    todo = sources(str(root), root.name, True)
    clock.lap("list")
    for src in todo:
        if src.directory:  # made on the server, no bytes to read
            continue
        with open(src.origin, "rb") as f:
            data = f.read()
        clock.lap("read")
        _chunk_stages(clock, data)
    return Stages(clock.seconds)


def _chunk_stages(clock: StageClock, chunk: bytes, new: bool = True) -> bytes | None:
    """Times what becomes of one chunk: hash, and if it is NEW to the server, compress and the server's check;
    returns its frame (None if not NEW)."""
    addr = address(chunk)
    clock.lap("hash")
    if not new:
        return None
    frame = compression.compress(chunk)
    clock.lap("compress")
    frames.check(addr, frame)
    clock.lap("check")
    return frame


LEVELS = (3, 1, -1, -3, -7)
LEVEL_SAMPLE = 64  # chunks


def level_table(path: Path) -> list[tuple[int, float, float, float]]:
    """For each of LEVELS: seconds per GiB to compress a sample of PATH's chunks on one core (zstd alone, as
    compression.compress does for a chunk that compresses), seconds per GiB to check them as the server does
    (decompress and hash), and their compressed size ÷ plain size."""
    with open(path, "rb") as f:
        chunks = list(Chunker(DEFAULT_AVG_SIZE, "line").split(f))
    sample = chunks[:: max(1, len(chunks) // LEVEL_SAMPLE)][:LEVEL_SAMPLE]
    plain = sum(map(len, sample))
    rows = []
    for level in LEVELS:
        zstd = zstandard.ZstdCompressor(level=level, write_checksum=True)
        start = time.thread_time()
        packed = [(address(c), zstd.compress(c)) for c in sample]
        compress = time.thread_time() - start
        start = time.thread_time()
        for addr, frame in packed:
            frames.check(addr, frame)
        check = time.thread_time() - start
        rows.append((level, compress * (1 << 30) / plain, check * (1 << 30) / plain,
                     sum(len(f) for _, f in packed) / plain))
    return rows


def print_levels(data: Dataset, rows: list[tuple[int, float, float, float]]) -> None:
    print(f"\nzstd levels on {LEVEL_SAMPLE} of {data.name}'s chunks, one core (pfs uses level {compression.LEVEL}):")
    print(f"  {'level':>5} {'compress s/GiB':>15} {'check s/GiB':>12} {'stored÷plain':>13}")
    for level, compress, check, ratio in rows:
        print(f"  {level:5d} {compress:15.2f} {check:12.2f} {ratio:13.3f}")


def open_tools(kinds: list[type[Tool]], stores: Path, stack: ExitStack) -> list[Tool]:
    stores.mkdir(parents=True)
    return [stack.enter_context(kind(stores / kind.name)) for kind in kinds]


# ---------------------------------------------------------------- printing


def speed(data: Dataset, seconds: float) -> str:
    per_s = f"{data.nfiles / seconds:10.0f} files/s  " if data.is_tree else ""
    return f"{per_s}{data.nbytes / MB / seconds:8.1f} MB/s"


def print_throughput(title: str, data: Dataset, results: dict[str, Result]) -> None:
    pfs = results["pfs"].seconds
    print(f"\n{title}: {data.nbytes / MB:.1f} MB in {data.nfiles} file(s)")
    print("  pfs speed ÷ tool speed: above 1 means pfs is faster; stored = du -sb of the store;")
    print("  cpu = CPU seconds of the command, and of its server (pfs)")
    for name, r in results.items():
        print(f"  {name:<7} {r.seconds:8.2f} s  {speed(data, r.seconds)}"
              f"   pfs÷tool {r.seconds / pfs:6.2f}   stored {r.stored / MB:9.1f} MB   cpu {r.cpu:6.2f} s")


def print_second_version(data: Dataset, v2_bytes: int, v1: dict[str, Result], v2: dict[str, Result]) -> None:
    ingested = data.nbytes + v2_bytes
    print(f"\nsecond version of {data.name}: {len(CHANGED)} bytes changed at offset {CHANGE_AT}, "
          f"{len(INSERTED)} bytes inserted in the middle, written over the original")
    print("  dedup ratio = bytes ingested over both versions ÷ store size after v2")
    print(f"  {'tool':<7} {'v2 s':>8} {'v2 MB/s':>8} {'after v1 MB':>12} {'after v2 MB':>12}"
          f" {'growth bytes':>14} {'growth %':>9} {'dedup':>7}")
    for name, r in v2.items():
        growth = r.stored - v1[name].stored
        print(f"  {name:<7} {r.seconds:8.2f} {v2_bytes / MB / r.seconds:8.1f} {v1[name].stored / MB:12.1f}"
              f" {r.stored / MB:12.1f} {growth:14,d} {100 * growth / data.nbytes:8.2f}%"
              f" {ingested / r.stored:7.2f}")


@contextmanager
def scratch(prefix: str, keep: bool) -> Iterator[Path]:
    """A directory under /tmp for one run, removed at the end unless KEEP (then its path is printed)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield work
    finally:
        if keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work)


def print_machine(*tools: list[str]) -> None:
    """The machine's cores and load, how fast it gives new memory, and the versions of pfs, python and TOOLS (each
    a version command)."""
    print(f"nproc {len(os.sched_getaffinity(0))}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    first, again = new_memory(), new_memory()
    print(f"new memory: 1 GiB faulted in {first:.2f} s, at once again {again:.2f} s (a first slower than the"
          " second: this VM's host takes back freed memory, and a run that fills the page cache varies with it)")
    print("; ".join([f"pfs {first_line([PFS, 'version', '--client-only'])}", *(first_line(t) for t in tools),
                     f"python {sys.version.split()[0]}"]))


def new_memory(size: int = 1 << 30) -> float:
    """Seconds to map SIZE bytes of new memory with every page faulted in (and let it go)."""
    start = time.perf_counter()
    mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE).close()
    return time.perf_counter() - start


# ---------------------------------------------------------------- main


@dataclass
class Goal:
    text: str
    data: Dataset
    runs: list[dict[str, Result]]  # each round's
    target: float  # pfs speed ÷ borg speed
    stages: Stages


def print_goals(goals: list[Goal]) -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"\ngoals (pfs speed ÷ borg speed); floor: the CPU seconds of the stages pfs cannot do without, on one core,"
          f" spread over {cores} cores")
    for g in goals:
        if "borg" not in g.runs[0]:
            print(f"  {g.text}: not measured (borg is not installed)")
            continue
        ratios = [run["borg"].seconds / run["pfs"].seconds for run in g.runs]
        ratio = statistics.median(ratios)
        print(f"  {g.text} (goal >= {g.target}): {ratio:.2f}  {'MET' if ratio >= g.target else 'NOT MET'}"
              f"   (median of the rounds' {', '.join(f'{x:.2f}' for x in ratios)})")
        median = median_round(g.runs)
        borg, pfs = median["borg"], median["pfs"]
        print(f"    median rounds: pfs {pfs.seconds:.2f} s using {pfs.cpu:.2f} CPU-s (client and server), borg "
              f"{borg.seconds:.2f} s using {borg.cpu:.2f}")
        floor = g.stages.floor
        print(f"    floor: ({g.stages}) ÷ {cores} = {floor:.2f} s, {' '.join(speed(g.data, floor).split())}: "
              f"borg÷floor {borg.seconds / floor:.2f}{', so the goal is out of reach here' if borg.seconds / floor < g.target else ''}")


def bench_big(kinds: list[type[Tool]], work: Path, data_dir: Path, size: int, rounds: int) -> Goal:
    path = data_dir / BIG_NAME
    print(f"generating {size / MB:.1f} MB mixed file ...", flush=True)
    write_big_file(path, size)
    data = Dataset(BIG_NAME, size, 1)
    warm(path)
    stages = stages_big(path)
    second: list[tuple[int, dict[str, Result]]] = []  # the changed version's bytes, and its ingests
    runs = ingest_rounds(kinds, work / "stores-big", data, data_dir, rounds, then=lambda tools: second.append(
        (write_changed_version(path), ingest_all(tools, data, data_dir, 2))))
    print_throughput(f"large mixed file, first version (each tool's median of {rounds} rounds)", data,
                     median_round(runs))
    [(v2_bytes, v2)] = second
    print_second_version(data, v2_bytes, runs[-1], v2)
    print_levels(data, level_table(path))
    return Goal(f"{data.nbytes / MB:.0f} MB mixed file", data, runs, 2.0, stages)


def bench_tree(kinds: list[type[Tool]], work: Path, data_dir: Path, files: int, rounds: int) -> Goal:
    print(f"\ngenerating {files} small files ...", flush=True)
    nbytes = write_tree(data_dir / TREE_NAME, files)
    data = Dataset(TREE_NAME, nbytes, files)
    warm(data_dir / TREE_NAME)
    stages = stages_tree(data_dir / TREE_NAME)
    runs = ingest_rounds(kinds, work / "stores-tree", data, data_dir, rounds)
    print_throughput(f"tree of {files} small files in {TREE_DIRS} directories (each tool's median of {rounds} "
                     "rounds)", data, median_round(runs))
    return Goal(f"{files} small files", data, runs, 1.5, stages)


def at_least_one(text: str) -> int:
    """A --rounds value: a whole number of at least 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1 round")
    return n


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024, help="size of the large file in MiB (default 1024)")
    p.add_argument("--files", type=int, default=10_000, help="number of small files (default 10000)")
    p.add_argument("--rounds", type=at_least_one, default=3,
                   help="rounds of the first versions' ingests (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, stores, server logs)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    keep_freed_memory()  # as the pfs CLI and server do: the stages measured here are theirs
    with scratch("pfs-bench-", args.keep) as work:
        data_dir = work / "data"
        data_dir.mkdir()
        print_machine(["borg", "--version"], ["restic", "version"], ["cp", "--version"])
        kinds = available_tools()
        print("each dataset is read once before timing (warm page cache) and each timed command runs alone,")
        print("after an untimed sync; pfs, borg and restic flush their data durably before exiting, cp does not")
        goals = [bench_big(kinds, work, data_dir, args.size_mib << 20, args.rounds),
                 bench_tree(kinds, work, data_dir, args.files, args.rounds)]
        print_goals(goals)


if __name__ == "__main__":
    main()
