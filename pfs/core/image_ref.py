"""Image references as docker reads them: [REGISTRY/]NAME[:TAG][@DIGEST]."""

import ipaddress

from pfs.core.errors import InvalidArgument

DOCKER_HUB = ("docker.io", "index.docker.io")  # docker's default: an image naming it counts as naming none


def parse(image: str) -> tuple[str, str, str]:
    """(registry or '', repository path, tag) of a reference, as docker reads it.

    The first path component is a registry if it has a '.' or a ':' or is 'localhost'; Docker Hub
    counts as none (`docker.io/library/debian` is `debian`). The tag defaults to latest; a
    digest in the reference is dropped (the push makes its own).
    """
    ref = image.split("@", 1)[0]
    first, slash, rest = ref.partition("/")
    registry = ""
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, ref = first, rest
    if registry in DOCKER_HUB:
        registry = ""
    name, colon, tag = ref.partition(":")
    if not colon:
        tag = "latest"
    if name.startswith("library/") and name.count("/") == 1:
        name = name.removeprefix("library/")
    if not name or not tag:
        raise InvalidArgument(f"invalid image reference {image!r}")
    return registry, name, tag


def is_loopback(registry: str) -> bool:
    """Whether REGISTRY (host[:port]) is on this machine's loopback: localhost, 127.0.0.0/8, [::1]."""
    host = registry[1:registry.find("]")] if registry.startswith("[") else registry.split(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
