"""shim/oom.py against the real kernel: a command killed by the OOM killer in a memory cgroup of the test's own, as a
container's limit kills one, and a command that failed by itself; and where a container finds its count."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs, wait_for

# runs in CGROUP (argv[1]): a Watch over a command that allocates far past the limit, then over one that fails
SCRIPT = """
import subprocess, sys
from pathlib import Path
from shim import oom
Path(sys.argv[1], "cgroup.procs").write_text(str(__import__("os").getpid()))
for command in ("bytearray(1 << 30)", "raise SystemExit(3)"):
    watch = oom.Watch()
    code = subprocess.run([sys.executable, "-c", command]).returncode
    print(code, watch.struck())
"""


@pytest.fixture
def memory_cgroup():
    """A memory cgroup of 64 MiB made for the test (cgroup v1, or v2 with its memory controller), removed after."""
    name = f"pfs-test-{secrets.token_hex(4)}"
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    if (v1 / "memory.limit_in_bytes").exists():
        path, limit = v1 / name, "memory.limit_in_bytes"
    elif "memory" in _read(v2 / "cgroup.subtree_control").split():
        path, limit = v2 / name, "memory.max"
    else:
        pytest.skip("needs a memory cgroup to make one in (cgroup v1's memory hierarchy, or v2 with memory on)")
    path.mkdir()
    try:
        (path / limit).write_text(str(64 << 20))
        yield path
    finally:
        wait_for(lambda: not _read(path / "cgroup.procs").strip(), 10)
        path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@needs(root=True)
def test_a_command_killed_for_memory_is_told_from_one_that_failed(memory_cgroup):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(memory_cgroup)], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).parent.parent, env={**os.environ, "PYTHONPATH": "."})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["-9 True", "3 False"], result.stderr


def test_in_a_container_the_count_is_its_own_cgroups_at_the_mount(tmp_path):
    """A container sees its own cgroup at the hierarchy's mount, while /proc/self/cgroup names it as the host does
    (cgroup v1 without a cgroup namespace: this machine's pods); with no count to read, nothing is said."""
    from shim import oom

    membership = tmp_path / "cgroup"
    membership.write_text("4:memory:/kubepods/pod1/worker\n0::/\n")
    assert not oom.Watch(tmp_path, membership).struck()
    counter = tmp_path / "memory" / "memory.oom_control"
    counter.parent.mkdir()
    counter.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    watch = oom.Watch(tmp_path, membership)
    assert not watch.struck()
    counter.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert watch.struck()
