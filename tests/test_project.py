"""Project rules a test can hold: generated code in sync, layer directions."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_protos_are_in_sync(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)], check=True)
    generated = sorted((tmp_path / "pfs" / "proto").glob("*_pb2*.py"))
    assert generated
    for path in generated:
        committed = ROOT / "pfs" / "proto" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `make protos`"


def imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str):
    for path in (ROOT / package).rglob("*.py"):
        yield path, imports(path)


def test_layer_directions():
    """pfs.core imports no other layer; server/ never imports the client side; pfs/ and shim/ never server/."""
    rules = {
        "pfs/core": ("pfs.client", "pfs.cli", "pfs.proto", "pfs.vfs", "pfs.fuse", "server", "shim", "grpc"),
        "server": ("pfs.client", "pfs.cli", "pfs.vfs", "pfs.fuse", "shim"),
        "pfs": ("server", "shim"),
        "shim": ("server",),
    }
    for package, forbidden in rules.items():
        for path, names in modules(package):
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), f"{path} imports {name}"


def test_only_the_client_and_servicers_import_the_protos():
    allowed = ("pfs/client", "pfs/proto", "server/rpc", "server/main.py")
    for package in ("pfs", "server", "shim"):
        for path, names in modules(package):
            rel = path.relative_to(ROOT).as_posix()
            if any(n.startswith("pfs.proto") for n in names):
                assert rel.startswith(allowed), f"{rel} imports the generated protos"
