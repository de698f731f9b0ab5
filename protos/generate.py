"""Generates pfs/proto/*_pb2*.py from the .proto files beside this script.

Run `python protos/generate.py` after editing a .proto; a test checks that
the committed code matches what this produces.
"""
import pathlib
import sys

from grpc_tools import protoc

PROTOS = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = PROTOS.parent


def generate(out: pathlib.Path) -> None:
    """Writes the generated modules under out/pfs/proto."""
    (out / "pfs" / "proto").mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    sources = sorted(p.name for p in PROTOS.glob("*.proto"))
    args = [
        "protoc",
        f"-I{include}",
        f"-Ipfs/proto={PROTOS}",  # so generated imports read `from pfs.proto import ...`
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *(f"{PROTOS}/{name}" for name in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
