"""The host tools pfs runs: setpriv, chrt, fusermount, a container engine. One lookup each, one line when missing.

The server's runners, the shim and the CLI all start these; each finds them
here, on PATH, and a missing one is said in one line naming what to install.
Lookups, and one probe: whether docker, whose client may be installed without
its daemon, answers.
"""

import os
import shutil
import subprocess

from pfs.core.errors import FailedPrecondition

# what to install when a tool is missing (Debian packages)
INSTALL = {
    "setpriv": "setpriv is not installed (apt-get install util-linux)",
    "chrt": "chrt is not installed (apt-get install util-linux)",
    "fusermount": "fusermount3 is not installed (apt-get install fuse3)",
    "engine": "neither podman nor docker is installed (apt-get install podman)",
}


def setpriv() -> str | None:
    return shutil.which("setpriv")


def chrt() -> str | None:
    return shutil.which("chrt")


def fusermount() -> str | None:
    """fusermount3 (FUSE 3), or an older fusermount."""
    return shutil.which("fusermount3") or shutil.which("fusermount")


def container_engine() -> str | None:
    """podman where there is one, else docker."""
    return shutil.which("podman") or shutil.which("docker")


def engine_unanswered(engine: str, timeout: float = 60) -> str | None:
    """Why the container ENGINE (a path) cannot run containers, or None: podman needs no daemon; docker's client
    fails every run (exit 125) where its daemon does not answer."""
    if os.path.basename(engine) != "docker":
        return None
    try:
        answers = subprocess.run([engine, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL).returncode == 0
    except subprocess.TimeoutExpired:
        answers = False
    return None if answers else "docker's daemon does not answer (start it, or install podman: apt-get install podman)"


def require(tool: str) -> str:
    """The path of TOOL (a key of INSTALL); FailedPrecondition saying what to install when it is missing."""
    path = {"setpriv": setpriv, "chrt": chrt, "fusermount": fusermount, "engine": container_engine}[tool]()
    if path is None:
        raise FailedPrecondition(INSTALL[tool])
    return path


def die_with_parent(signal: str, required: bool = True) -> list[str]:
    """The prefix that runs a command so that SIGNAL (KILL, TERM) reaches it when its parent dies.

    Where setpriv is missing: FailedPrecondition, or, unless REQUIRED, no prefix (the child may then outlive
    its parent).
    """
    path = require("setpriv") if required else setpriv()
    return [path, "--pdeathsig", signal, "--"] if path else []
