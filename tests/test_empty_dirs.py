"""Trees as they are: empty directories kept by put-file -r, job outputs and the write path, shown by list-file,
inspect-file and a real mount, and fetched back by get-file -r; a bare git repository that works from a mount."""

import os
import pathlib
import random
import subprocess

import pytest

from conftest import assert_one_line_error, needs
from pfs.cli import downloads
from pfs.core.errors import FailedPrecondition, InvalidArgument
from pfs.core.model import ChunkRef, CommitRef, FileWrite

GIT = "/usr/bin/git"


def snapshot(root: pathlib.Path) -> dict[str, bytes | None]:
    """Every directory (None) and file (its bytes) below ROOT, by path relative to it."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = pathlib.Path(dirpath).relative_to(root)
        for name in dirnames:
            out[(rel / name).as_posix()] = None
        for name in filenames:
            out[(rel / name).as_posix()] = (pathlib.Path(dirpath) / name).read_bytes()
    return out


def make_maildir(root: pathlib.Path) -> dict[str, bytes | None]:
    """A maildir (cur, new and tmp, two of them empty) and a folder of one, all empty, beside a file."""
    for d in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp", "deep/er/est"):
        (root / d).mkdir(parents=True)
    (root / "new" / "1700000000.1.host").write_bytes(b"From: a@b\n\nhello\n")
    return snapshot(root)


def listed(server, *args: str) -> list[tuple[str, str, str]]:
    """The rows of `pfs list-file ARGS`: (name, type, size)."""
    return [tuple(ln.split(None, 2)) for ln in server.pfs("list-file", *args).text.splitlines()[1:] if ln]


def test_put_file_r_keeps_empty_directories_and_get_file_r_fetches_them(server, tmp_path):
    tree = make_maildir(tmp_path / "mail")
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "mail", "-r", "-c", "-f", str(tmp_path / "mail"))

    assert listed(server, "r", "master", "mail") == [
        ("mail/.Sent", "dir", "0 B"), ("mail/cur", "dir", "0 B"), ("mail/deep", "dir", "0 B"),
        ("mail/new", "dir", "17 B"), ("mail/tmp", "dir", "0 B")]
    assert listed(server, "r", "master", "mail/tmp") == []
    inspected = server.pfs("inspect-file", "r", "master", "mail/deep/er/est").text
    assert "dir" in inspected and "0 B" in inspected

    server.pfs("get-file", "-r", "r", "master", "mail", "-o", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == tree
    server.pfs("get-file", "-r", "r", "master", "/", "-o", str(tmp_path / "all"))  # the whole commit
    assert snapshot(tmp_path / "all") == {"mail": None} | {f"mail/{p}": d for p, d in tree.items()}
    # into a directory that is there: what it held stays, files of the same names are replaced
    (tmp_path / "back" / "new" / "1700000000.1.host").write_bytes(b"changed")
    (tmp_path / "back" / "mine").write_bytes(b"mine")
    server.pfs("get-file", "-r", "r", "master", "mail", "-o", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == tree | {"mine": b"mine"}
    # -r on a file fetches the file
    server.pfs("get-file", "-r", "r", "master", "mail/new/1700000000.1.host", "-o", str(tmp_path / "one"))
    assert (tmp_path / "one").read_bytes() == b"From: a@b\n\nhello\n"

    # an empty source directory is kept too, and so is one at the root of a put
    (tmp_path / "nothing").mkdir()
    server.pfs("put-file", "r", "master", "-r", "-c", "-f", str(tmp_path / "nothing"))
    assert ("nothing", "dir", "0 B") in listed(server, "r", "master")


def test_get_file_r_fetches_many_files_in_batches_each_whole_and_in_place(server, tmp_path):
    rng = random.Random(3)
    for i in range(150):
        (tmp_path / "many" / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "many" / f"d{i % 7}" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(40_000, 80_000)))
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "many", "-r", "-c", "-f", str(tmp_path / "many"))
    listing = server.client().list_files(CommitRef("r", "master"), "many", with_chunks=True, recursive=True)
    assert sum(len(f.chunks) for f in listing) > downloads.BATCH_CHUNKS  # more than one batch
    server.pfs("get-file", "-r", "r", "master", "many", "-o", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(tmp_path / "many")


def test_get_file_r_refuses_what_it_cannot_do_in_one_line(server, tmp_path):
    server.pfs("create-repo", "r")
    (tmp_path / "src" / "d" / "e").mkdir(parents=True)
    (tmp_path / "src" / "f").write_bytes(b"f\n")
    server.pfs("put-file", "r", "master", "src", "-r", "-c", "-f", str(tmp_path / "src"))
    (tmp_path / "a-file").write_bytes(b"x")

    def refused(*args: str, fragments=()):
        result = server.pfs("get-file", *args, check=False)
        assert_one_line_error(result, *fragments)

    refused("r", "master", "src", fragments=("is a directory", "-r -o DIR"))
    refused("-r", "r", "master", "src", fragments=("needs -o DIR",))
    refused("-r", "r", "master", "src", "-o", str(tmp_path / "a-file"), fragments=("is not a directory",))
    refused("-r", "r", "master", "nope", "-o", str(tmp_path / "x"), fragments=("'nope' not found",))
    refused("-r", "r", "nobranch", "src", "-o", str(tmp_path / "x"), fragments=("nobranch",))
    assert not (tmp_path / "x").exists()
    # a file where the tree has a directory (and the other way round): the path named, nothing else changed
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "d").write_bytes(b"mine")
    refused("-r", "r", "master", "src", "-o", str(tmp_path / "clash"), fragments=(str(tmp_path / "clash" / "d"),))
    assert (tmp_path / "clash" / "d").read_bytes() == b"mine"
    (tmp_path / "clash2" / "f").mkdir(parents=True)
    refused("-r", "r", "master", "src", "-o", str(tmp_path / "clash2"), fragments=(str(tmp_path / "clash2"),))
    assert (tmp_path / "clash2" / "f").is_dir()


def test_a_directory_stays_until_deleted(server):
    """As in Pachyderm 1.x's hashtree and in a file system: deleting a directory's last file leaves it;
    delete-file of the directory removes it and all it holds."""
    client = server.client()
    client.create_repo("r")
    ref = CommitRef("r", client.start_commit("r").id)
    client.put_files(ref, [FileWrite("a/empty", (), directory=True), FileWrite("a/empty", (), directory=True),
                           FileWrite("b", (), directory=True)])
    chunk = _stored_chunk(server, ref, "b/x", b"x\n")
    client.put_files(ref, [FileWrite("c/d/e", (), directory=True)])
    client.delete_file(ref, "b/x")  # b's last file
    assert [(f.path, f.is_dir, f.size_bytes) for f in client.list_files(ref, "", recursive=True)] == [
        ("a", True, 0), ("a/empty", True, 0), ("b", True, 0), ("c", True, 0), ("c/d", True, 0),
        ("c/d/e", True, 0)]
    client.put_files(ref, [FileWrite("b", (), directory=True)])  # a directory that is there stays as it is
    client.put_files(ref, [FileWrite("a/empty/f", (chunk,))])
    client.put_files(ref, [FileWrite("a/empty", (), directory=True)])
    assert [f.path for f in client.list_files(ref, "a/empty")] == ["a/empty/f"]
    client.delete_file(ref, "c/d")
    assert [f.path for f in client.list_files(ref, "", recursive=True)] == ["a", "a/empty", "a/empty/f", "b", "c"]
    client.finish_commit(ref)
    assert client.inspect_commit(ref).size_bytes == 2

    # in one batch: a directory deleted, then made again, is empty; a file is not made a directory nor the reverse
    ref = CommitRef("r", client.start_commit("r").id)
    client.delete_file(ref, "a")
    client.put_files(ref, [FileWrite("a", (), directory=True)])
    assert list(client.list_files(ref, "a")) == []
    with pytest.raises(FailedPrecondition, match="'f': it is a file"):
        client.put_files(ref, [FileWrite("f", (chunk,)), FileWrite("f", (), directory=True)])
    with pytest.raises(FailedPrecondition, match="'g': it is a directory"):
        client.put_files(ref, [FileWrite("g", (), directory=True), FileWrite("g", (chunk,))])
    with pytest.raises(FailedPrecondition, match="it is a directory"):
        client.put_files(ref, [FileWrite("a", (chunk,))])
    with pytest.raises(InvalidArgument, match="a directory holds files, not bytes"):
        client.put_files(ref, [FileWrite("h", (chunk,), directory=True)])
    with pytest.raises(InvalidArgument, match="the repo root is a directory"):
        client.put_files(ref, [FileWrite("/", (), directory=True)])
    client.delete_file(ref, "")  # everything: the commit is empty, as one that never held anything
    assert list(client.list_files(ref, "")) == [] and client.inspect_commit(ref).size_bytes == 0
    client.finish_commit(ref)
    client.close()


def _stored_chunk(server, ref: CommitRef, path: str, data: bytes) -> ChunkRef:
    """Puts DATA at PATH in the open commit REF through the CLI; the chunk it is stored as."""
    server.pfs("put-file", ref.repo, ref.ref, path, "-f", "-", input=data)
    (chunk,) = server.client().inspect_file(ref, path).chunks
    return chunk


def git(*args: str, cwd: pathlib.Path | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}
    p = subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (args, p.stderr)
    return p.stdout + p.stderr


def bare_repository(tmp_path: pathlib.Path) -> pathlib.Path:
    """A bare git repository with two commits pushed to it (loose objects, no tags: refs/tags is empty)."""
    work, bare = tmp_path / "work", tmp_path / "repo.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("init", "-q", "-b", "main", str(work))
    for i in range(2):
        (work / f"f{i}.txt").write_text(f"version {i}\n" * 100)
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"commit {i}", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    assert not any((bare / "refs" / "tags").iterdir())
    return bare


@pytest.mark.slow  # a real mount, and git
@needs("fusermount3", GIT, fuse=True)
def test_a_bare_git_repository_clones_from_a_mount_and_passes_fsck(server, tmp_path):
    from test_mount import mounted  # a module of mount tests: imported here, only where a mount is made

    bare = bare_repository(tmp_path)
    maildir = make_maildir(tmp_path / "mail")
    server.pfs("create-repo", "store")
    server.pfs("put-file", "store", "master", "repo.git", "-r", "-c", "-f", str(bare))
    server.pfs("put-file", "store", "master", "mail", "-r", "-c", "-f", str(tmp_path / "mail"))
    with mounted(server, tmp_path / "mnt"):
        there = tmp_path / "mnt" / "store" / "master"
        assert snapshot(there / "repo.git") == snapshot(bare)
        assert snapshot(there / "mail") == maildir
        tags = there / "repo.git" / "refs" / "tags"
        assert tags.is_dir() and os.listdir(tags) == []
        assert os.stat(there / "mail" / "tmp").st_nlink >= 2 and (there / "mail" / "tmp").is_dir()

        git("clone", "-q", str(there / "repo.git"), str(tmp_path / "clone"))
        git("fsck", "--full", "--strict", cwd=tmp_path / "clone")
        assert "commit 1" in git("log", "--oneline", cwd=tmp_path / "clone")
        assert (tmp_path / "clone" / "f1.txt").read_text() == "version 1\n" * 100
        # the repository in the mount itself, read-only
        git("--git-dir", str(there / "repo.git"), "fsck", "--full", "--strict")
        assert git("--git-dir", str(there / "repo.git"), "rev-parse", "main") == git(
            "--git-dir", str(bare), "rev-parse", "main")


# A worker's empty directories are its output too (as 1.x's workers put every directory of /pfs/out); those of
# several workers at one path are one directory, holding what any of them put there.
MAKE_DIRS = ["sh", "-c", "mkdir -p /pfs/out/mail/cur /pfs/out/mail/new /pfs/out/mail/tmp; "
                         "for f in /pfs/data/*; do mkdir -p /pfs/out/seen/$(basename $f); done; "
                         "if [ -e /pfs/data/a ]; then echo a > /pfs/out/mail/new/a; fi"]


@pytest.mark.slow  # real workers, each mounting its input in a namespace of its own
@needs("fusermount3", "setpriv", root=True, fuse=True)
def test_empty_directories_a_job_makes_are_in_its_output(server, tmp_path):
    from test_pipelines import put
    from test_shim import create_job, job_info, run_shims

    put(server, "data", {name: name.encode() for name in "abcdef"})
    job = create_job(server, tmp_path, MAKE_DIRS, parallelism=2, method="reduce")
    assert [r[0] for r in run_shims(server, tmp_path, job, 2)] == [0, 0]
    info = job_info(server, job)
    assert info["state"] == "success"
    server.pfs("get-file", "-r", "out", info["output_commit"], "/", "-o", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == {
        "mail": None, "mail/cur": None, "mail/new": None, "mail/tmp": None, "mail/new/a": b"a\n",
        "seen": None, **{f"seen/{name}": None for name in "abcdef"}}
