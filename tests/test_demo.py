"""The demos, run as `make demo` and `make demo-cluster` run them (the venv's bin first on PATH): examples/demo.sh on
one embedded server, examples/demo-cluster.sh on a PostgreSQL, a SeaweedFS and two pfs servers, one of them killed
mid-demo. The totals they print are the sales' own, and nothing they started is left behind (no process, mount,
file or weed socket), also after a Ctrl-C."""

import collections
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile

import pytest

from conftest import BIN, needs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              needs("fusermount3", "setpriv", root=True, fuse=True)]  # the pipelines' real workers

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
RUN_LIMIT = 300  # seconds: the cluster demo takes about 20 here


def big_sales_totals() -> dict[str, int]:
    """What the demo's totals pipeline makes of its first commit (the sales the demo generates, 900 or more, added
    up by product): worked out here from the same rule as the demo's data."""
    totals: collections.Counter[str] = collections.Counter()
    for i in range(1, 20001):
        if i * 37 % 1000 >= 900:
            totals[f"widget-{i % 7}"] += i * 37 % 1000
    return dict(totals)


@pytest.fixture
def scratch():
    """The demo's TMPDIR: every dir it makes (and so every process it starts names one) is under it. Under /tmp and
    reachable by others, as the postgres user must reach its own dir in it (pytest's temp dirs are root's alone)."""
    dir = pathlib.Path(tempfile.mkdtemp(prefix="pfs-test-demo-"))
    dir.chmod(0o711)
    yield dir
    dir.rmdir()  # a demo that left files in it fails here


def start(script: str, scratch: pathlib.Path) -> subprocess.Popen:
    """SCRIPT running in a session of its own (so that a Ctrl-C can be sent to all of it), its output piped."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TMPDIR": str(scratch)}
    return subprocess.Popen([EXAMPLES / script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def finish(demo: subprocess.Popen, output: str = "") -> str:
    """All DEMO printed (after OUTPUT, what was read of it already), once it has ended; Ctrl-C to it if it takes
    more than RUN_LIMIT seconds."""
    try:
        rest, _ = demo.communicate(timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate()
        raise AssertionError(f"{demo.args[0]} still running after {RUN_LIMIT} s: {output + rest}") from None
    return output + rest


def totals_printed(output: str, ref: str = "master") -> list[dict[str, int]]:
    """What each `pfs get-file totals REF totals` the demo ran printed, in order."""
    printed, lines = [], output.splitlines()
    for n, line in enumerate(lines):
        if line.startswith(f"$ pfs get-file totals {ref} totals"):
            block = []
            for row in lines[n + 1:]:
                if row.startswith(("$ ", "== ")):
                    break
                product, total = row.split()
                block.append((product, int(total)))
            printed.append(dict(block))
    return printed


def assert_demo_steps(output: str) -> None:
    """The steps both demos run: the first commit's totals, then with the second commit's two gizmo sales (999 and
    950), and the first still there as master^."""
    first = big_sales_totals()
    assert totals_printed(output)[:2] == [first, {**first, "gizmo": 1949}], output
    assert totals_printed(output, "master^") == [first], output


def assert_nothing_left(scratch: pathlib.Path, output: str) -> None:
    """No process with SCRATCH in its command line (servers, workers, postgres, weed), no mount under it, nothing
    in it; no weed gRPC socket in /tmp and nothing listening on PostgreSQL's or weed's ports, as the demo printed
    them."""
    running = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or gone
            continue
        if str(scratch) in cmdline:
            running.append(f"{proc.name}: {cmdline}")
    assert not running, running
    mounts = [line for line in pathlib.Path("/proc/self/mounts").read_text().splitlines() if str(scratch) in line]
    assert not mounts, mounts
    assert not list(scratch.iterdir())
    weed_ports = [int(p) for p in re.findall(r" -(?:s3|master|volume|filer|admin)\.port=(\d+)", output)]
    sockets = [s for p in weed_ports for s in pathlib.Path("/tmp").glob(f"seaweedfs-*-grpc-{p + 10000}.sock")]
    assert not sockets, sockets
    for port in weed_ports + [int(p) for p in re.findall(r"PostgreSQL 15 on 127\.0\.0\.1:(\d+)", output)]:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on port {port}"


def test_demo(scratch):
    output = finish(start("demo.sh", scratch))
    assert_demo_steps(output)
    assert_nothing_left(scratch, output)


def test_demo_cluster(scratch):
    """The same steps on the cluster; then the pipeline's next job after its controller's server was killed is run
    by the other server."""
    output = finish(start("demo-cluster.sh", scratch))
    assert_demo_steps(output)
    killed = re.search(r"^\$ kill -9 \d+   # the pfs server (\S+), running totals's controller$", output, re.M)
    assert killed, output
    after = output[killed.end():]
    # the commit made after the kill (a gizmo sale of 901) is in the totals
    assert totals_printed(after) == [{**big_sales_totals(), "gizmo": 1949 + 901}], output
    controller = re.search(r"^Controller: (\S+)$", after, re.M)
    assert controller and controller[1] != killed[1], output
    assert_nothing_left(scratch, output)


def test_demo_cluster_ctrl_c(scratch):
    """A Ctrl-C while the pipelines run stops everything the cluster demo started."""
    demo = start("demo-cluster.sh", scratch)
    output = ""
    while not output.endswith("$ pfs flush-commit sales/master\n"):  # workers, servers, weed and postgres all up
        line = demo.stdout.readline()
        assert line, f"the demo ended early: {output}"
        output += line
    os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C at a terminal does: the whole foreground group
    output = finish(demo, output)
    assert demo.returncode != 0, output
    assert_nothing_left(scratch, output)
