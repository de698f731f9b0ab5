"""Hostile input to the CLI and the server: one line naming the field, never a traceback, never a split listing.

Names with a final newline or a leading dash, integers beyond the wire's range, JSON nested too deep, names and
paths that hold control characters, and a get-file -o whose read fails half way.
"""

import contextlib
import json
import os
import random
import sqlite3

import pytest

from conftest import assert_one_line_error
from pfs.cli import output
from pfs.core.errors import InvalidArgument
from pfs.core.model import CommitRef, InputSpec, PipelineSpec, Transform


@pytest.mark.parametrize("name", ["nm\n", "-x", "--help"])
def test_a_name_with_a_final_newline_or_a_leading_dash_is_refused(server, name):
    server.pfs("create-repo", "nm")
    assert_one_line_error(server.pfs("create-repo", "--", name, check=False), "invalid repo name", "not starting")
    client = server.client()  # the server holds the same rule over raw gRPC
    with pytest.raises(InvalidArgument, match="invalid repo name"):
        client.create_repo(name)
    with pytest.raises(InvalidArgument, match="invalid branch name"):
        client.start_commit("nm", name)
    with pytest.raises(InvalidArgument, match="pipeline.name"):
        client.create_pipeline(PipelineSpec(name, Transform(("true",)), (InputSpec("nm"),)))
    assert [r.name for r in client.list_repos()] == ["nm"]
    assert [b.name for b in client.list_branches("nm")] == []


def test_a_ref_with_a_final_newline_is_no_ancestor(server):
    server.pfs("create-repo", "r")
    for _ in range(2):
        server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"x\n")
    assert_one_line_error(server.pfs("inspect-commit", "r", "master^\n", check=False), "invalid commit reference")
    assert_one_line_error(server.pfs("inspect-commit", "r", "master~1\n", check=False), "invalid commit reference")


def manifest(tmp_path, **fields) -> str:
    doc = {"pipeline": {"name": "p"}, "transform": {"cmd": ["sh"]}, "inputs": [{"repo": "in"}], **fields}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    return str(path)


def job_manifest(tmp_path, **fields) -> str:
    doc = {"transform": {"cmd": ["sh"]}, "inputs": [{"repo": "in", "commit": "master"}], **fields}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture(scope="module")
def in_server(shared_server):
    """The module's shared server, with repo in: the refusals below leave it so."""
    shared_server.pfs("create-repo", "in")
    return shared_server


HUGE_CODE = {"transform": {"cmd": ["sh"], "accept_return_code": [0, 2**40]}}


@pytest.mark.parametrize("args,field", [
    (lambda tmp: ("create-pipeline", "-f", manifest(tmp, **HUGE_CODE)), "transform.accept_return_code[1]"),
    (lambda tmp: ("create-job", "-f", job_manifest(tmp, **HUGE_CODE)), "transform.accept_return_code[1]"),
    *[(lambda tmp, v=v: ("create-pipeline", "-f", manifest(tmp, parallelism=v)), "manifest field parallelism")
      for v in (2**31, "2147483648", "9" * 5000, "²", "--5")],
    (lambda tmp: ("list-commit", "in", "-n", str(2**70)), "list-commit -n"),
    (lambda tmp: ("list-commit", "in", "-n", "-1"), "list-commit -n"),
    (lambda tmp: ("mount", str(tmp / "mnt"), "--shard", "1/99999999999"), "invalid shard 1/99999999999"),
])
def test_integers_beyond_the_wire_are_one_line_naming_the_field(in_server, tmp_path, args, field):
    assert_one_line_error(in_server.pfs(*args(tmp_path), check=False), field)
    with in_server.client() as c:
        assert c.list_pipelines() == [] and c.list_jobs() == []


@pytest.mark.parametrize("verb", ["create-pipeline", "create-job", "update-pipeline"])
@pytest.mark.parametrize("doc", ["[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, "1" * 5000])
def test_json_too_deep_or_too_long_is_one_line_naming_the_file(shared_server, tmp_path, verb, doc):
    path = tmp_path / "deep.json"
    path.write_text(doc)
    assert_one_line_error(shared_server.pfs(verb, "-f", str(path), check=False), str(path))
    assert_one_line_error(shared_server.pfs(verb, "-f", "-", input=doc.encode(), check=False), "JSON")


def test_a_newline_in_a_path_cannot_split_a_listing_row(server):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "we\nird", "-c", "-f", "-", input=b"x\n")
    server.pfs("put-file", "r", "master", "\x1b[2Jclear", "-c", "-f", "-", input=b"x\n")
    rows = server.pfs("list-file", "r", "master").text.splitlines()
    assert len(rows) == 3, rows
    assert sorted(r.split()[0] for r in rows[1:]) == [repr("\x1b[2Jclear"), repr("we\nird")]


def test_a_table_cell_with_control_characters_is_quoted_and_escaped(capsys):
    output.table(("NAME", "SIZE"), [("nm\n   just now", 1), ("ok", 2), ("a\tb", 3)])
    rows = capsys.readouterr().out.splitlines()
    assert rows[1:] == ["'nm\\n   just now'   1", "ok                  2", "'a\\tb'              3"]


@pytest.fixture
def corrupt_file(big_server):
    """Repo r with file f of several chunks (1 MiB on average), its last chunk corrupted on disk."""
    server = big_server
    server.pfs("create-repo", "r")
    data = random.Random(7).randbytes(4_000_000)
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", "--delimiter", "none", input=data)
    chunks = server.client().inspect_file(CommitRef("r", "master"), "f").chunks
    assert len(chunks) >= 2
    last = chunks[-1].address.hex()
    path = next(p for p in (server.data_dir / "chunks").rglob("*/*") if p.name == last)
    frame = bytearray(path.read_bytes())
    frame[len(frame) // 2] ^= 0x01
    path.write_bytes(frame)
    return server


def test_get_file_o_of_a_corrupt_file_leaves_no_file(corrupt_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(corrupt_file.pfs("get-file", "r", "master", "f", "-o", str(out / "f"), check=False),
                          "is corrupt")
    assert os.listdir(out) == []


def test_get_file_o_of_a_corrupt_file_keeps_an_existing_file(corrupt_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").write_bytes(b"what was here\n")
    assert_one_line_error(corrupt_file.pfs("get-file", "r", "master", "f", "-o", str(out / "f"), check=False),
                          "is corrupt")
    assert os.listdir(out) == ["f"] and (out / "f").read_bytes() == b"what was here\n"


def test_get_file_r_of_a_tree_with_a_corrupt_small_file_writes_none_of_that_file(server, tmp_path):
    """Small files' chunks are unpacked as they arrive, on no thread of their own: a corrupt one is still one line,
    and its file is not written."""
    server.pfs("create-repo", "r")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}").write_bytes(b"line %d\n" % i * 50)
    server.pfs("put-file", "r", "master", "t", "-r", "-c", "-f", str(src))
    bad = server.client().inspect_file(CommitRef("r", "master"), "t/f10").chunks[0].address
    with contextlib.closing(sqlite3.connect(server.data_dir / "chunks.db")) as db, db:
        (frame,) = db.execute("SELECT data FROM small WHERE address = ?", (bad,)).fetchone()
        frame = bytearray(frame)
        frame[len(frame) // 2] ^= 0x01
        db.execute("UPDATE small SET data = ? WHERE address = ?", (bytes(frame), bad))
    out = tmp_path / "out"
    assert_one_line_error(server.pfs("get-file", "r", "master", "t", "-r", "-o", str(out), check=False), "is corrupt")
    assert not (out / "f10").exists()


def test_get_file_o_replaces_a_file_and_writes_through_a_symlink(server, tmp_path, monkeypatch):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"new\n" * 5000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "f").write_bytes(b"old\n")
    (out / "link").symlink_to("f")
    server.pfs("get-file", "r", "master", "f", "-o", str(out / "link"))
    assert (out / "link").is_symlink() and (out / "f").read_bytes() == b"new\n" * 5000
    server.pfs("get-file", "r", "master", "f", "-o", "/dev/null")  # no regular file: written in place
    assert sorted(os.listdir(out)) == ["f", "link"] and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    monkeypatch.chdir(tmp_path)
    assert server.pfs("get-file", "r", "master", "f", "-o", "-").stdout == b"new\n" * 5000  # -: stdout
    assert not (tmp_path / "-").exists()


def test_get_file_r_replaces_the_links_in_its_way_rather_than_write_through_them(server, tmp_path):
    """A link already in -o DIR where the tree has a directory or a file is replaced, as tar does: the tree is
    written into DIR, never through a link to somewhere else."""
    server.pfs("create-repo", "r")
    commit = server.pfs("start-commit", "r").text.strip()
    for path in ("x/a", "y"):
        server.pfs("put-file", "r", commit, path, "-f", "-", input=b"from the repo\n")
    server.pfs("finish-commit", "r", commit)
    victim, out = tmp_path / "victim", tmp_path / "out"
    for d in (victim, out):
        d.mkdir()
    (victim / "a").write_bytes(b"mine\n")
    (victim / "y").write_bytes(b"mine\n")
    (out / "x").symlink_to(victim)
    (out / "y").symlink_to(victim / "y")
    server.pfs("get-file", "r", "master", "/", "-r", "-o", str(out))
    assert [(victim / n).read_bytes() for n in ("a", "y")] == [b"mine\n", b"mine\n"]
    assert not any(p.is_symlink() for p in out.iterdir())
    assert [(out / n).read_bytes() for n in ("x/a", "y")] == [b"from the repo\n"] * 2
