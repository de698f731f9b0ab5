"""The cluster backends' clients are extras of the package (pfs[s3], pfs[postgres], pfs[kubernetes]), loaded only
when a server is told to use one: without it, the server says in one line what to install."""

import os

import pytest

from conftest import Server
from test_s3_errors import refused


@pytest.mark.parametrize("module, args, says", [
    ("boto3", ("--storage", "s3://bucket/pfs"),
     "pfs server: --storage s3:// needs the S3 client (boto3): pip install 'pfs[s3]'"),
    ("psycopg", ("--meta", "postgresql://pfs@127.0.0.1:5432/pfs"),
     "pfs server: --meta postgresql:// needs psycopg: pip install 'pfs[postgres]'"),
    ("kubernetes", ("--runner", "kubernetes"),
     "pfs server: --runner kubernetes needs the Kubernetes client: pip install 'pfs[kubernetes]'"),
])
def test_without_an_extra_the_server_names_it(tmp_path, module, args, says):
    hidden = tmp_path / "hidden"
    (hidden / module).mkdir(parents=True)  # shadows the real one, as if it were not installed
    (hidden / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    server = Server(tmp_path / "data", args=args, process_env={**os.environ, "PYTHONPATH": str(hidden)})
    assert refused(server) == says


def test_the_embedded_default_loads_no_cluster_client(tmp_path):
    """`pfs server` on the data dir never imports boto3, psycopg or the Kubernetes client: it starts as fast, and
    needs none."""
    hidden = tmp_path / "hidden"
    for module in ("boto3", "botocore", "psycopg", "psycopg_pool", "kubernetes"):
        (hidden / module).mkdir(parents=True)
        (hidden / module / "__init__.py").write_text(f"raise ImportError('{module} was imported')\n")
    server = Server(tmp_path / "data", process_env={**os.environ, "PYTHONPATH": str(hidden)})
    server.start()
    try:
        server.pfs("create-repo", "r")
    finally:
        server.stop()
