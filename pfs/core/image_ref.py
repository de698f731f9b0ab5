"""Image references as docker reads them: [REGISTRY/]NAME[:TAG][@DIGEST]."""

import ipaddress
import re

from pfs.core.errors import InvalidArgument

DOCKER_HUB = ("docker.io", "index.docker.io")  # docker's default: an image naming it counts as naming none
# The reference grammar of docker's distribution/reference: [DOMAIN/]PATH[:TAG][@DIGEST]. Nothing else is an image,
# so nothing else reaches a container engine's command line, where a word starting with '-' is an option of its
# own (--privileged, --volume=/:/host) and the image's place goes to the next word.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::\w[\w.-]{{0,127}})?"
                        r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?", re.ASCII)
MAX_REFERENCE = 512  # docker's most: a name of 255, a tag of 128, a digest


def parse(image: str) -> tuple[str, str, str]:
    """(registry or '', repository path, tag) of a reference, as docker reads it.

    The first path component is a registry if it has a '.' or a ':' or is 'localhost'; Docker Hub
    counts as none (`docker.io/library/debian` is `debian`). The tag defaults to latest; a
    digest in the reference is dropped (the push makes its own).
    """
    if len(image) > MAX_REFERENCE or _REFERENCE.fullmatch(image) is None:
        raise InvalidArgument(f"invalid image reference {image[:100]!r}: expected [REGISTRY/]NAME[:TAG][@DIGEST], "
                              "a name in lower case")
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
