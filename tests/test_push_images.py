"""`create-pipeline --push-images` / `update-pipeline --push-images`: the manifest's image pushed with
podman to a real registry (Debian's docker-registry on a free loopback port), and the pipeline
pinned to the pushed digest. Skipped only where podman or docker-registry cannot be installed."""

import faulthandler
import json
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import urllib.request
import uuid

import pytest

from conftest import Server, assert_one_line_error, needs, stop_process, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = "docker.io/library/debian:bookworm-slim"  # made by .ci/podman-setup, no registry needed
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
RUN = uuid.uuid4().hex[:8]  # in image names, so runs of this module at the same time do not meet
DIGEST_REF = re.compile(r"(?P<registry>[^/]+)/(?P<name>[^@]+)@(?P<digest>sha256:[0-9a-f]{64})")

# a cold setup installs packages (as root) and debootstraps the base image
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), needs(root=True)]


def tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args: str, timeout: float = 120) -> str:
    p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"podman {' '.join(args)}: {p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def tools(containers_conf) -> None:
    """podman (as CONTAINERS.md says, with the base image) and docker-registry, installed where missing."""
    # The ini's faulthandler_timeout (170 s) would dump every stack in the middle of a cold setup;
    # the module's own timeout still applies.
    faulthandler.cancel_dump_traceback_later()
    steps = [[str(ROOT / ".ci" / "podman-setup")], [str(ROOT / ".ci" / "apt-install"), "docker-registry"]]
    runs = [subprocess.run(step, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            for step, timeout in zip(steps, (400, 150))]  # within the module's 600 s
    missing = [tool for tool in ("podman", "docker-registry") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} could not be installed: "
                    + "; ".join(f"{pathlib.Path(step[0]).name} exited {p.returncode}: {tail(p.stdout + p.stderr, 3)}"
                                for step, p in zip(steps, runs)))
    for step, p in zip(steps, runs):
        assert p.returncode == 0, f"{' '.join(step)} failed:\n{tail(p.stdout + p.stderr, 20)}"


@pytest.fixture(scope="module")
def registry(tools, tmp_path_factory) -> str:
    """A docker-registry serving plain HTTP on a free loopback port, with its own storage; its host:port."""
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text("version: 0.1\n"
                      "log:\n  level: warn\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
                      f"http:\n  addr: {address}\n")
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 30)
        yield address
    finally:
        stop_process(proc, signal.SIGTERM, 10)


@pytest.fixture
def images(tools, tmp_path):
    """Builds test images FROM the base (a label each, so each has its own id); removes them, with every
    name the test gave them (pushed tags, pulled digests), afterwards."""
    built = []

    def build(name: str) -> str:
        context = tmp_path / f"image-{len(built)}"
        context.mkdir()
        (context / "Containerfile").write_text(f"FROM {BASE}\nLABEL pfs-test={uuid.uuid4().hex}\n")
        podman("build", "-q", "-t", name, str(context))
        built.append(podman("image", "inspect", "--format", "{{.Id}}", name).strip())
        return name

    yield build
    for image_id in built:
        subprocess.run(["podman", "rmi", "-f", "-i", image_id], capture_output=True, timeout=120)


@pytest.fixture
def registry_server(registry, tmp_path):
    (tmp_path / "registry-server").mkdir()  # beside conftest's server, whose data dir is tmp_path/data
    s = Server(tmp_path / "registry-server" / "data", args=("--registry", registry))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def write_manifest(tmp_path: pathlib.Path, image: str) -> str:
    path = tmp_path / f"manifest-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"pipeline": {"name": "p"}, "transform": {"image": image, "cmd": ["true"]},
                                "inputs": [{"repo": {"name": "data"}}]}))
    return str(path)


def pipeline_image(server: Server) -> str:
    return json.loads(server.pfs("inspect-pipeline", "p", "--raw").text)["spec"]["transform"]["image"]


def assert_in_registry(ref: str) -> None:
    """REF (REGISTRY/NAME@sha256:...) is in the registry: its manifest by digest, and podman pulls it."""
    m = DIGEST_REF.fullmatch(ref)
    assert m, ref
    request = urllib.request.Request(f"http://{m['registry']}/v2/{m['name']}/manifests/{m['digest']}",
                                     headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == m["digest"]
    podman("pull", "-q", "--tls-verify=false", ref)  # the images fixture removes it with its image


def test_push_to_server_registry_and_pin_digest(registry_server, registry, images, tmp_path):
    image = images(f"pfs-test/tiny-{RUN}:latest")
    registry_server.pfs("create-repo", "data")  # no commits: no job runs
    r = registry_server.pfs("create-pipeline", "-f", write_manifest(tmp_path, image), "--push-images")
    pinned = pipeline_image(registry_server)
    assert re.fullmatch(rf"{re.escape(registry)}/pfs-test/tiny-{RUN}@sha256:[0-9a-f]{{64}}", pinned), pinned
    assert f"pushed {image} as {pinned}" in r.stderr
    assert_in_registry(pinned)

    # update-pipeline pushes the new image and pins the pipeline to its digest.
    newer = images(f"pfs-test/tiny-{RUN}:v2")
    registry_server.pfs("update-pipeline", "-f", write_manifest(tmp_path, newer), "--push-images")
    repinned = pipeline_image(registry_server)
    assert repinned.startswith(f"{registry}/pfs-test/tiny-{RUN}@sha256:") and repinned != pinned, (pinned, repinned)
    assert_in_registry(repinned)


def test_push_to_registry_the_image_names(server, registry, images, tmp_path):
    image = images(f"{registry}/other/tiny-{RUN}:v1")
    server.pfs("create-repo", "data")
    server.pfs("create-pipeline", "-f", write_manifest(tmp_path, image), "--push-images")  # server: no --registry
    pinned = pipeline_image(server)
    assert re.fullmatch(rf"{re.escape(registry)}/other/tiny-{RUN}@sha256:[0-9a-f]{{64}}", pinned), pinned
    assert_in_registry(pinned)


def test_push_errors_are_one_line(server, registry_server, images, tmp_path):
    image = images(f"pfs-test/tiny-{RUN}:latest")
    for s in (server, registry_server):
        s.pfs("create-repo", "data")

    # An image without a registry, and a server without one.
    r = server.pfs("create-pipeline", "-f", write_manifest(tmp_path, image), "--push-images", check=False)
    assert_one_line_error(r, image, "names no registry", "pfs server --registry HOST:PORT")
    assert r.returncode == 1

    # An image podman does not have.
    missing = f"pfs-test/missing-{uuid.uuid4().hex[:8]}:latest"
    r = registry_server.pfs("create-pipeline", "-f", write_manifest(tmp_path, missing), "--push-images", check=False)
    assert_one_line_error(r, missing, "build it first")
    assert r.returncode == 1

    # A registry nobody listens on.
    unreachable = images(f"127.0.0.1:1/x/y-{RUN}:z")
    r = server.pfs("create-pipeline", "-f", write_manifest(tmp_path, unreachable), "--push-images", check=False)
    assert_one_line_error(r, unreachable, "connection refused")
    assert r.returncode == 1

    for s in (server, registry_server):  # no pipeline was made
        assert_one_line_error(s.pfs("inspect-pipeline", "p", check=False), "pipeline 'p' not found")


def test_the_container_runner_runs_a_pushed_image_from_a_loopback_registry(registry, tmp_path):
    """The 1.x flow: --push-images puts the worker image in the server's registry, and every worker pulls it
    from there by digest (plain HTTP on loopback)."""
    build = subprocess.run(["make", "-C", str(ROOT), "shim-image", "CONTAINER_ENGINE=podman"], capture_output=True,
                           text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, tail(build.stdout + build.stderr, 20)
    image = f"pfs-test/worker-{uuid.uuid4().hex[:8]}:latest"
    context = tmp_path / "worker-image"
    context.mkdir()
    (context / "Containerfile").write_text(f"FROM pfs/job-shim:latest\nLABEL pfs-test={uuid.uuid4().hex}\n")
    podman("build", "-q", "-t", image, str(context))
    image_id = podman("image", "inspect", "--format", "{{.Id}}", image).strip()
    server = Server(tmp_path / "data", args=("--runner", "container", "--registry", registry))
    server.start()
    try:
        server.pfs("create-repo", "words")
        server.pfs("put-file", "words", "master", "w.txt", "-c", "-f", "-", input=b"b\na\nc\n")
        manifest = tmp_path / "sorted.json"
        manifest.write_text(json.dumps({"pipeline": {"name": "sorted"}, "inputs": [{"repo": {"name": "words"}}],
                                        "transform": {"image": image, "cmd": ["sh", "-c",
                                                      "sort /pfs/words/w.txt > /pfs/out/w.txt"]}}))
        server.pfs("create-pipeline", "-f", str(manifest), "--push-images")
        pinned = json.loads(server.pfs("inspect-pipeline", "sorted", "--raw").text)["spec"]["transform"]["image"]
        assert pinned.startswith(f"{registry}/pfs-test/worker-") and "@sha256:" in pinned
        assert "success" in server.pfs("flush-commit", "words/master").text
        assert server.pfs("get-file", "sorted", "master", "w.txt").stdout == b"a\nb\nc\n"
    finally:
        server.stop()
        subprocess.run(["podman", "rmi", "-f", "-i", image_id], capture_output=True, timeout=120)
