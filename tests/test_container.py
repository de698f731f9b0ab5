"""The worker image: `make shim-image` builds Dockerfile.shim with podman (on a base image made with
debootstrap, so no registry is needed), and a container from it runs one shard of a job against
a real `pfs server` on the host. Skipped only where podman cannot be installed."""

import faulthandler
import json
import os
import pathlib
import shutil
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from conftest import PFS, Server, assert_one_line_error, needs, run_pfs, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMAGE = "pfs/job-shim:latest"
FUSE = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"]

# a cold build (apt, debootstrap, wheels) takes minutes; podman-setup installs packages
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), needs(root=True, fuse=True)]


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Podman:
    env: dict

    def run(self, *args: str, timeout: float = 300, name: str | None = None) -> subprocess.CompletedProcess:
        """`podman run --rm ...`; a container still running at the timeout is removed."""
        name = name or f"pfs-test-{uuid.uuid4().hex[:12]}"
        try:
            return subprocess.run(["podman", "run", "--rm", "--name", name, *args], capture_output=True,
                                  text=True, env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, env=self.env)
            raise


@pytest.fixture(scope="module")
def podman(containers_conf) -> Podman:
    """Podman set up as CONTAINERS.md says, and the image built once for this module."""
    # The ini's faulthandler_timeout (170 s) would dump every thread's stack in the middle of a
    # cold build; this test's own timeout (900 s, pytest-timeout) still applies.
    faulthandler.cancel_dump_traceback_later()
    env = dict(os.environ)  # the real HOME: module fixtures run before each test's isolated one
    setup = subprocess.run([str(ROOT / ".ci" / "podman-setup")], capture_output=True, text=True, env=env,
                           timeout=600, stdin=subprocess.DEVNULL)
    if shutil.which("podman") is None:
        pytest.skip(f"podman could not be installed (.ci/podman-setup exited {setup.returncode}): "
                    f"{tail(setup.stdout + setup.stderr, 5)}")
    assert setup.returncode == 0, f".ci/podman-setup failed:\n{tail(setup.stdout + setup.stderr)}"
    build = subprocess.run(["make", "-C", str(ROOT), "shim-image", "CONTAINER_ENGINE=podman", f"SHIM_IMAGE={IMAGE}"],
                           capture_output=True, text=True, env=env, timeout=840, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, f"make shim-image failed:\n{tail(build.stdout + build.stderr, 40)}"
    return Podman(env)


def test_image_has_job_shim_and_pfs_on_path(podman):
    host_version = run_pfs("version", "--client-only").text.strip()
    r = podman.run("--network", "host", IMAGE, "sh", "-c",
                   "job-shim --help && pfs version --client-only && "
                   "for c in job-shim pfs python3; do command -v $c; done",
                   timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: job-shim" in r.stdout
    out = r.stdout.splitlines()
    assert host_version in out  # the image holds this checkout's pfs
    # The commands come from the venv at /opt/pfs; the image's own python3 stays Debian's.
    assert out[-3:] == ["/usr/local/bin/job-shim", "/usr/local/bin/pfs", "/usr/bin/python3"], out
    # The CLI in the image is this checkout's, not some other build of the same version.
    host_help = subprocess.run([PFS, "--help"], capture_output=True, text=True, check=True).stdout
    r = podman.run("--network", "host", IMAGE, "pfs", "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == host_help
    size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE], capture_output=True,
                          text=True, env=podman.env, check=True).stdout
    assert int(size) < 400e6, f"the image grew to {int(size) / 1e6:.0f} MB"


def test_container_runs_a_shard_against_the_host_server(podman, server, tmp_path):
    data = b"".join(b"line %05d of the input, read through /pfs/data\n" % i for i in range(2000))  # ~100 KB
    local = tmp_path / "f.txt"
    local.write_bytes(data)
    server.pfs("create-repo", "data")
    server.pfs("put-file", "data", "master", "f.txt", "-c", "-f", str(local))
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({
        "transform": {"cmd": ["sh", "-c", "cp -r /pfs/data/. /pfs/out/"]},
        "parallelism": 1,
        "inputs": [{"repo": "data", "commit": "master", "method": "map"}],
        "output_repo": "out",
    }))
    job = server.pfs("create-job", "-f", str(job_file), "--address", server.address).text.strip()
    assert job and len(job.splitlines()) == 1, job

    with_token = Podman({**podman.env, "PFS_TOKEN": server.token})  # passed by name, as the container runner does
    r = with_token.run(*FUSE, "--network", "host", "-e", "PFS_TOKEN", IMAGE,
                       "job-shim", "--address", server.address, "--job", job, "--shard", "0")
    assert r.returncode == 0, f"job-shim exited {r.returncode}:\n{r.stdout}\n{r.stderr}"

    def finished():
        info = json.loads(server.pfs("inspect-job", job, "--address", server.address, "--raw").stdout)
        return info if info["state"] in ("success", "failure") else None

    info = wait_for(finished, 30)
    assert info["state"] == "success", info
    assert server.pfs("get-file", "out", "master", "f.txt", "--address", server.address).stdout == data



def test_a_docker_whose_daemon_does_not_answer_is_named_at_start_and_refuses_pipelines(tmp_path):
    """docker's client without its daemon fails every worker (exit 125): the server says so when it starts, and
    create-pipeline is refused in that line, as for a missing engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    server = Server(tmp_path / "data", 4096, ("--runner", "container"),
                    process_env={**os.environ, "PATH": str(bin_dir)})  # no podman: the first engine looked for
    server.start()
    try:
        assert "pipelines cannot run here: the container runner cannot run containers: docker's daemon does not " \
               "answer" in server.log.read_text()
        server.pfs("create-repo", "in")
        manifest = tmp_path / "p.json"
        manifest.write_text(json.dumps({"pipeline": {"name": "p"}, "transform": {"image": IMAGE, "cmd": ["true"]},
                                        "inputs": [{"repo": {"name": "in"}, "method": "map"}]}))
        assert_one_line_error(server.pfs("create-pipeline", "-f", str(manifest), check=False),
                              "docker's daemon does not answer")
    finally:
        server.stop()


def test_the_container_runner_runs_pipeline_workers_in_the_pipelines_image(podman, tmp_path):
    server = Server(tmp_path / "data", 4096, ("--runner", "container"))
    server.start()
    try:
        data = b"".join(b"%05d,%d\n" % (i, i % 7) for i in range(3000))  # several 4 KiB blocks
        server.pfs("create-repo", "nums")
        server.pfs("put-file", "nums", "master", "n.csv", "-c", "-f", "-", input=data)
        manifest = tmp_path / "p.json"
        manifest.write_text(json.dumps({
            "pipeline": {"name": "sevens"},
            "transform": {"image": IMAGE, "cmd": ["sh", "-c", "grep ',6$' /pfs/nums/n.csv > /pfs/out/sixes || true"]},
            "parallelism": 2,
            "inputs": [{"repo": {"name": "nums"}, "method": "map"}],
        }))
        server.pfs("create-pipeline", "-f", str(manifest))
        table = server.pfs("flush-commit", "nums/master").text
        assert "success" in table, table
        got = server.pfs("get-file", "sevens", "master", "sixes").stdout
        assert sorted(got.splitlines()) == [line for line in data.splitlines() if line.endswith(b",6")]
        with server.client() as c:
            [job] = c.list_jobs("sevens")
            assert len(job.shards) == 2
        assert "not used" not in server.pfs("inspect-pipeline", "sevens").text
        # a user's pipeline: its command runs in the container as a user that is not root, reading its mounts
        with server.client() as root:
            alice = root.create_token("alice")[0]
            root.set_role("nums", "alice", "reader")
        manifest.write_text(json.dumps({
            "pipeline": {"name": "hers"}, "inputs": [{"repo": {"name": "nums"}, "method": "global"}],
            "transform": {"image": IMAGE, "cmd": ["sh", "-c", "id -u > /pfs/out/uid; wc -l < /pfs/nums/n.csv > "
                                                                "/pfs/out/lines"]}}))
        run_pfs("create-pipeline", "-f", str(manifest), env={"PFS_ADDRESS": server.address, "PFS_TOKEN": alice})
        server.pfs("flush-commit", "nums/master")
        assert [server.pfs("get-file", "hers", "master", f).stdout.strip() for f in ("uid", "lines")] == \
            [b"65534", b"3000"]
        # what is not an image's name never reaches the engine's command line, where it would be an option
        for image in ("--privileged", "-v=/:/host", "Debian:12", f"{IMAGE} --privileged"):
            spec = json.loads(manifest.read_text())
            spec["pipeline"]["name"], spec["transform"]["image"] = "evil", image
            manifest.write_text(json.dumps(spec))
            refused = run_pfs("create-pipeline", "-f", str(manifest), check=False,
                              env={"PFS_ADDRESS": server.address, "PFS_TOKEN": alice})
            assert_one_line_error(refused, "invalid image reference")
        assert "evil" not in server.pfs("list-pipeline").text
    finally:
        server.stop()


def test_job_pod_runs_a_shard_and_leaves_job_shims_status_as_a_kubelet_reads_it(podman, server, tmp_path):
    """The Kubernetes runner's worker entrypoint, in the image, as a pod runs it: the shard from
    JOB_COMPLETION_INDEX, the try from PFS_ATTEMPT, and a file mounted at /dev/termination-log (as the kubelet
    mounts one) where it leaves job-shim's exit status, exiting 0 itself whatever job-shim did."""
    server.pfs("create-repo", "data")
    server.pfs("put-file", "data", "master", "f.txt", "-c", "-f", "-", input=b"one\ntwo\n")
    with_token = Podman({**podman.env, "PFS_TOKEN": server.token})
    for cmd, status, state in ((["sh", "-c", "cp /pfs/data/f.txt /pfs/out/"], "0", "success"),
                               (["sh", "-c", "exit 3"], "1", "failure")):
        job_file = tmp_path / "job.json"
        job_file.write_text(json.dumps({"transform": {"cmd": cmd}, "inputs": [{"repo": "data", "commit": "master"}]}))
        job = server.pfs("create-job", "-f", str(job_file)).text.strip()
        log = tmp_path / f"termination-log-{job}"
        log.touch()
        r = with_token.run(*FUSE, "--network", "host", "-e", "PFS_TOKEN", "-e", f"PFS_ADDRESS={server.address}",
                           "-e", f"PFS_JOB={job}", "-e", "JOB_COMPLETION_INDEX=0",
                           "-v", f"{log}:/dev/termination-log", IMAGE, "job-pod")
        assert r.returncode == 0, f"job-pod exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        assert log.read_text() == f"{status}\n"
        info = json.loads(server.pfs("inspect-job", job, "--raw").stdout)
        assert info["state"] == state, info
