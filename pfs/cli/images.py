"""Pushing a pipeline's image (`create-pipeline --push-images`): to a registry, pinned to its digest.

As Pachyderm 1.x did with its in-cluster registry: the image goes to the registry its reference
names, or, where it names none, to the one the server was started with (`pfs server --registry`);
the pipeline then runs exactly what was pushed, `REGISTRY/NAME@sha256:...`, whatever later
happens to the tag. The work is done by podman, or docker where there is no podman.
"""

import pathlib
import re
import subprocess
import tempfile

from pfs.core import image_ref, tools
from pfs.core.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

LOCAL_TIMEOUT = 60  # s, for inspect and tag, which touch local storage only
PUSH_TIMEOUT = 900  # s: loopback pushes take seconds, a large image over a slow link may take minutes
# How the engines say that a registry cannot be reached (Go's net errors).
UNREACHABLE = re.compile(r"connection refused|no such host|i/o timeout|network is unreachable|no route to host"
                         r"|connection reset", re.IGNORECASE)


def push(image: str, default_registry: str) -> str:
    """Pushes IMAGE (to the registry it names, else DEFAULT_REGISTRY); returns REGISTRY/NAME@sha256:DIGEST."""
    registry, name, tag = image_ref.parse(image)
    if not registry:
        if not default_registry:
            raise InvalidArgument(f"--push-images: image {image} names no registry and the server has none "
                                  "(start it with pfs server --registry HOST:PORT, or name one: HOST:PORT/NAME:TAG)")
        registry = default_registry
    target = f"{registry}/{name}:{tag}"
    engine = _engine()
    _run([engine, "image", "inspect", "--format", "{{.Id}}", image], LOCAL_TIMEOUT, NotFound,
         f"--push-images: image {image} is not among {engine}'s local images "
         f"(build it first: {engine} build -t {image} DIR)")
    if target != image:
        _run([engine, "tag", image, target], LOCAL_TIMEOUT, FailedPrecondition,
             f"--push-images: {engine} could not tag {image} as {target}")
    failed = f"--push-images: {engine} could not push {target}"
    if engine == "podman":
        with tempfile.TemporaryDirectory(prefix="pfs-push-") as tmp:
            digest_file = pathlib.Path(tmp) / "digest"
            tls = ["--tls-verify=false"] if image_ref.is_loopback(registry) else []  # plain HTTP there
            _run(["podman", "push", *tls, "--digestfile", str(digest_file), target], PUSH_TIMEOUT, None, failed)
            digest = digest_file.read_text().strip()
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise FailedPrecondition(f"{failed}: podman wrote an unexpected digest {digest!r}")
    else:
        # docker prints "TAG: digest: sha256:... size: N" for the manifest it pushed.
        out = _run(["docker", "push", target], PUSH_TIMEOUT, None, failed)
        found = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
        if not found:
            raise FailedPrecondition(f"{failed}: docker push printed no digest")
        digest = found.group(1)
    return f"{registry}/{name}@{digest}"


def _engine() -> str:
    """podman if installed, else docker if its daemon answers."""
    try:
        engine = pathlib.Path(tools.require("engine")).name
    except FailedPrecondition as err:
        raise FailedPrecondition(f"--push-images: {err}") from None
    unanswered = tools.engine_unanswered(engine, LOCAL_TIMEOUT)
    if unanswered:
        raise FailedPrecondition(f"--push-images: {unanswered}")
    return engine


def _run(args: list[str], timeout: float, error: type | None, message: str) -> str:
    """ARGS' stdout; on failure ERROR(MESSAGE: the engine's last line of stderr).

    ERROR None: Unavailable where the engine says a registry cannot be reached, else FailedPrecondition.
    """
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{message}: {args[0]} {args[1]} took longer than {timeout} s") from None
    if p.returncode == 0:
        return p.stdout
    lines = p.stderr.strip().splitlines()
    last = lines[-1].strip().removeprefix("Error: ") if lines else f"{args[0]} exited {p.returncode}"
    if error is None:
        error = Unavailable if UNREACHABLE.search(last) else FailedPrecondition
    raise error(f"{message}: {last}")
