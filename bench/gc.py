"""Garbage collection and check benchmark: `pfs garbage-collect` and `pfs check` next to `borg compact` / `borg
check` and `restic prune` / `restic check`, on the same data in the same run.

The store: FILES small text files (1-4 KiB, each its own bytes) in COMMITS commits of FILES / COMMITS files each
(pfs: each commit on a branch of its own; borg: an archive each; restic: a snapshot each). Then every other
commit (archive, snapshot) is deleted, so half of the store is garbage, and each tool frees it:
`pfs garbage-collect`, `borg compact`, `restic prune`. Then each checks what is left: `pfs check`, `borg check`,
`restic check` (metadata and that the data is there), and with the data read: `pfs check --read-data`,
`borg check --verify-data`, `restic check --read-data`.

Each timed command runs alone, by wall clock, after a sync; its peak memory is the largest resident set of its
process (for pfs, of the CLI plus its server's, restarted just before so the peak is the command's own). The full
size of issue 18 is `--files 100000 --commits 100`; the default is a fifth of it, a few minutes in all.

Run from the repo root:  .venv/bin/python bench/gc.py [--files 20000] [--commits 20] [--keep]
"""

import argparse
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import PFS, SEED, Borg, Pfs, Restic, csv_lines, print_machine, run, scratch  # noqa: E402

from pfs.client.upload import into_commit  # noqa: E402
from pfs.core.model import CommitRef  # noqa: E402

MiB = 1 << 20


def write_batches(root: Path, files: int, commits: int) -> list[Path]:
    """COMMITS directories of FILES / COMMITS text files each."""
    rng = random.Random(SEED)
    batches = []
    for k in range(commits):
        d = root / f"c{k:03d}"
        for i in range(files // commits):
            sub = d / f"d{i % 10}"
            sub.mkdir(parents=True, exist_ok=True)
            size = rng.randint(1024, 4096)
            (sub / f"f{i:05d}.csv").write_bytes(csv_lines(rng, (k * files + i) * 100, size // 30 + 1).encode()[:size])
        batches.append(d)
    return batches


def measured(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, int, str]:
    """Runs CMD: its wall time, its peak resident set (bytes) and its stdout's last line; SystemExit if it fails.

    The peak is the process's VmHWM, read as it runs: that of its own image since exec (the rusage of a child
    counts the parent's pages it had before exec, here this process's)."""
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, hwm(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}): {err.read().decode().strip()}")
        lines = out.read().decode().strip().splitlines()
    return seconds, peak, lines[-1] if lines else ""


def hwm(pid: int) -> int:
    """The peak resident set (bytes) of the running process PID so far (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def bench_pfs(store: Path, batches: list[Path]) -> dict[str, tuple[float, int, str]]:
    pfs = Pfs(store)
    log = store.with_name("pfs.log")
    with pfs:
        with pfs.client() as c:
            for k, batch in enumerate(batches):
                commit = c.start_commit("bench", f"b{k}")
                with into_commit(c, CommitRef("bench", commit.id)) as up:
                    for path in sorted(batch.rglob("*.csv")):
                        up.put(str(path.relative_to(batch)), io.BytesIO(path.read_bytes()))
                c.finish_commit(CommitRef("bench", commit.id))
            for k in range(0, len(batches), 2):
                c.delete_commit(CommitRef("bench", f"b{k}"))
        results = {}
        # the grace (an hour by default) would keep what was just written: this server forgets after a second
        for name, cmd in (("gc", [PFS, "garbage-collect"]), ("check", [PFS, "check"]),
                          ("check --read-data", [PFS, "check", "--read-data"])):
            pfs.server.terminate()
            pfs.server.wait(timeout=30)
            pfs.start_server(log, "--gc-grace", "1")
            seconds, cli, out = measured(cmd, pfs.env)
            results[name] = (seconds, cli + hwm(pfs.server.pid), out)
        return results


def bench_borg(store: Path, data: Path, batches: list[Path]) -> dict[str, tuple[float, int, str]]:
    with Borg(store) as borg:
        for k, batch in enumerate(batches):
            run(["borg", "create", f"{store}::c{k}", batch.name], borg.env, cwd=data)
        run(["borg", "delete", str(store), *(f"c{k}" for k in range(0, len(batches), 2))], borg.env)
        return {"gc": measured(["borg", "compact", str(store)], borg.env),
                "check": measured(["borg", "check", str(store)], borg.env),
                "check --read-data": measured(["borg", "check", "--verify-data", str(store)], borg.env)}


def bench_restic(store: Path, data: Path, batches: list[Path]) -> dict[str, tuple[float, int, str]]:
    with Restic(store) as restic:
        for k, batch in enumerate(batches):
            run(["restic", "-r", str(store), "backup", "-q", "--tag", f"c{k}", batch.name], restic.env, cwd=data)
        forget = [a for k in range(0, len(batches), 2) for a in ("--tag", f"c{k}")]
        run(["restic", "-r", str(store), "forget", "-q", *forget], restic.env)
        return {"gc": measured(["restic", "-r", str(store), "prune", "-q"], restic.env),
                "check": measured(["restic", "-r", str(store), "check", "-q"], restic.env),
                "check --read-data": measured(["restic", "-r", str(store), "check", "-q", "--read-data"],
                                              restic.env)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=20_000)
    p.add_argument("--commits", type=int, default=20)
    p.add_argument("--keep", action="store_true", help="keep the data and the stores (their path is printed)")
    args = p.parse_args()
    print_machine(["borg", "--version"], ["restic", "version"])
    with scratch("pfs-gc-bench-", args.keep) as work:
        data = work / "data"
        batches = write_batches(data, args.files, args.commits)
        print(f"\n{args.files} files of 1-4 KiB in {args.commits} commits; every other commit deleted, then:\n")
        results = {"pfs": bench_pfs(work / "pfs", batches)}
        for name, fn in (("borg", bench_borg), ("restic", bench_restic)):
            if shutil.which(name):
                results[name] = fn(work / name, data, batches)
            else:
                print(f"{name}: not installed, skipped")
        names = {"gc": ("garbage-collect", "compact", "prune"), "check": ("check", "check", "check"),
                 "check --read-data": ("check --read-data", "check --verify-data", "check --read-data")}
        print(f"{'':20} {'pfs':>22} " + " ".join(f"{t:>22}" for t in results if t != "pfs") + "   ratios (tool / pfs)")
        for what in ("gc", "check", "check --read-data"):
            seconds, peak, _ = results["pfs"][what]
            row = [f"{seconds:7.2f} s {peak / MiB:7.0f} MiB"]
            ratios = []
            for tool in (t for t in results if t != "pfs"):
                s, m, _ = results[tool][what]
                row.append(f"{s:7.2f} s {m / MiB:7.0f} MiB")
                ratios.append(f"{tool} {s / seconds:.2f}x time, {m / peak:.2f}x memory")
            print(f"{what:20} " + " ".join(f"{c:>22}" for c in row) + "   " + "; ".join(ratios))
        print("\npfs said:")
        for what in ("gc", "check", "check --read-data"):
            print(f"  {names[what][0]}: {results['pfs'][what][2]}")


if __name__ == "__main__":
    main()
