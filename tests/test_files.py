"""Files through the CLI and a real server: round trips, append versus overwrite, trees."""

import hashlib
import os
import random

import pytest

from conftest import assert_one_line_error, documents, on_every_storage, put_commit, stored_chunks
from pfs.core.hashing import address
from pfs.core.model import CommitRef, FileWrite


def put(server, repo, ref, path, data: bytes, *flags, check=True):
    return server.pfs("put-file", repo, ref, path, "-f", "-", *flags, input=data, check=check)


def get(server, repo, ref, path) -> bytes:
    return server.pfs("get-file", repo, ref, path).stdout


def lines(n: int, seed: int = 0) -> bytes:
    r = random.Random(seed)
    return b"".join(b"%d,%s,%f\n" % (i, r.choice([b"a", b"bb", b"ccc"]), r.random()) for i in range(n))


@on_every_storage
@pytest.mark.parametrize(
    "name,data",
    [
        ("text", lines(5000)),
        ("binary", random.Random(1).randbytes(300_000)),
        ("empty", b""),
        ("one-line-no-newline", b"x" * 100_000),
        ("nul-and-newlines", bytes(range(256)) * 1000),
    ],
)
def test_round_trip(server, name, data):
    server.pfs("create-repo", "r")
    put(server, "r", "master", f"dir/{name}", data, "-c")
    assert get(server, "r", "master", f"dir/{name}") == data
    info = server.client().inspect_file(CommitRef("r", "master"), f"dir/{name}")
    assert info.size_bytes == len(data)


@on_every_storage
def test_large_file_round_trip_with_default_chunks(big_server, tmp_path):
    src = tmp_path / "large.bin"
    r = random.Random(7)
    with open(src, "wb") as f:
        for i in range(24):  # 48 MiB: random and text blocks
            f.write(r.randbytes(1 << 20))
            f.write(lines(40_000, i)[: 1 << 20])
    big_server.pfs("create-repo", "r")
    big_server.pfs("put-file", "r", "master", "large.bin", "-c", "-f", str(src))
    out = tmp_path / "out.bin"
    big_server.pfs("get-file", "r", "master", "large.bin", "-o", str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    info = big_server.client().inspect_file(CommitRef("r", "master"), "large.bin")
    assert 12 <= len(info.chunks) <= 200  # about 1 MiB each


def test_put_file_appends_unless_overwrite(server):
    server.pfs("create-repo", "r")
    put(server, "r", "master", "f", b"one\n", "-c")
    put(server, "r", "master", "f", b"two\n", "-c")
    assert get(server, "r", "master", "f") == b"one\ntwo\n"
    put(server, "r", "master", "f", b"three\n", "-c", "-o")
    assert get(server, "r", "master", "f") == b"three\n"
    # earlier commits are untouched
    assert get(server, "r", "master^", "f") == b"one\ntwo\n"
    assert get(server, "r", "master~2", "f") == b"one\n"


def test_appends_within_one_open_commit(server):
    server.pfs("create-repo", "r")
    commit = server.pfs("start-commit", "r", "master").text.strip()
    put(server, "r", commit, "f", b"a\n")
    put(server, "r", "master", "f", b"b\n")  # the branch names the open commit
    assert get(server, "r", commit, "f") == b"a\nb\n"  # an open commit is readable
    server.pfs("finish-commit", "r", commit)
    assert get(server, "r", "master", "f") == b"a\nb\n"


def test_a_tree_put_again_appends_to_the_files_it_held(server, tmp_path):
    def tree(name, files):
        src = tmp_path / name
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        return str(src)

    server.pfs("create-repo", "r")
    v1 = tree("v1", {"d/a": b"a1\n", "d/b": b"b1\n", "e": b"e1\n"})
    v2 = tree("v2", {"d/a": b"a2\n", "d/c": b"c2\n", "e": b"e2\n", "f/g": b"g2\n"})
    for src in (v1, v2):
        server.pfs("put-file", "r", "master", "t", "-r", "-c", "-f", src)
    want = {"t/d/a": b"a1\na2\n", "t/d/b": b"b1\n", "t/d/c": b"c2\n", "t/e": b"e1\ne2\n", "t/f/g": b"g2\n"}
    assert {path: get(server, "r", "master", path) for path in want} == want


@on_every_storage
def test_directory_tree(server, tmp_path):
    src = tmp_path / "tree"
    files = {}
    for i in range(60):
        rel = f"d{i % 5}/sub{i % 3}/f{i}.txt"
        files[rel] = lines(i * 10, i)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(files[rel])
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "data", "-r", "-c", "-f", str(src))
    client = server.client()
    for rel, data in files.items():
        assert b"".join(client.read_file(CommitRef("r", "master"), f"data/{rel}")) == data
    listing = server.pfs("list-file", "r", "master", "data").text.split("\n")
    assert [ln.split()[0] for ln in listing[1:] if ln] == [f"data/d{i}" for i in range(5)]
    assert server.client().inspect_file(CommitRef("r", "master"), "data").size_bytes == sum(map(len, files.values()))
    # a directory is not a file
    result = server.pfs("get-file", "r", "master", "data/d0", check=False)
    assert result.returncode == 1 and "is a directory" in result.stderr


def test_put_file_from_local_path_defaults_to_its_name(server, tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "sales.csv").write_bytes(b"1,2\n")
    monkeypatch.chdir(tmp_path)
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "-c", "-f", "src/sales.csv")
    server.pfs("put-file", "r", "master", "-c", "-f", str(tmp_path / "src" / "sales.csv"))
    assert get(server, "r", "master", "src/sales.csv") == b"1,2\n"
    assert get(server, "r", "master", "sales.csv") == b"1,2\n"


def test_delete_file_and_directory(server):
    server.pfs("create-repo", "r")
    commit = server.pfs("start-commit", "r").text.strip()
    for p in ("a/x", "a/y", "b"):
        put(server, "r", commit, p, b"data\n")
    server.pfs("delete-file", "r", commit, "a/x")
    server.pfs("finish-commit", "r", commit)
    assert [ln.split()[0] for ln in server.pfs("list-file", "r", "master").text.splitlines()[1:]] == ["a", "b"]
    c2 = server.pfs("start-commit", "r").text.strip()
    server.pfs("delete-file", "r", c2, "a")
    server.pfs("finish-commit", "r", c2)
    assert [ln.split()[0] for ln in server.pfs("list-file", "r", "master").text.splitlines()[1:]] == ["b"]
    assert get(server, "r", "master^", "a/y") == b"data\n"


def test_file_and_directory_clash(server):
    server.pfs("create-repo", "r")
    put(server, "r", "master", "a/b", b"x", "-c")
    commit = server.pfs("start-commit", "r").text.strip()
    r2 = server.pfs("put-file", "r", commit, "a", "-f", "-", input=b"y", check=False)
    assert r2.returncode == 1 and "is a directory" in r2.stderr
    r3 = server.pfs("put-file", "r", commit, "a/b/c", "-f", "-", input=b"y", check=False)
    assert r3.returncode == 1 and "is a file" in r3.stderr
    server.pfs("finish-commit", "r", commit)
    assert get(server, "r", "master", "a/b") == b"x"


def test_same_file_in_two_repos_is_stored_once(server):
    data = os.urandom(200_000)
    for repo in ("r1", "r2"):
        server.pfs("create-repo", repo)
        put(server, repo, "master", "f", data, "-c")
    info = server.client().inspect_file(CommitRef("r1", "master"), "f")
    assert set(stored_chunks(server.data_dir)) == {c.address.hex() for c in info.chunks}


def test_copy_file_records_a_file_or_tree_into_an_open_commit_as_pachctl(server):
    """copy-file SRC_REPO SRC_REF SRC_PATH DST_REPO DST_REF DST_PATH: a file, appended to one there unless -o, or a
    tree with its empty directories; nothing is stored twice. A finished commit (by id) or a missing source: one
    line."""
    server.pfs("create-repo", "src")
    server.pfs("create-repo", "dst")
    tree = {"d/a.csv": lines(3000), "d/sub/b.csv": b"b\n", "top": b"top\n"}
    commit = server.pfs("start-commit", "src").text.strip()
    for path, data in tree.items():
        put(server, "src", commit, path, data)
    server.client().put_files(CommitRef("src", commit), [FileWrite("d/empty", (), directory=True)])
    server.pfs("finish-commit", "src", commit)
    before = set(stored_chunks(server.data_dir))
    into = server.pfs("start-commit", "dst").text.strip()
    put(server, "dst", into, "one", b"was\n")
    server.pfs("copy-file", "src", "master", "top", "dst", into, "one")  # appends, as put-file does
    server.pfs("copy-file", "src", "master", "d", "dst", into, "copy/d")
    server.pfs("copy-file", "src", "master", "top", "dst", into, "two", "-o")
    server.pfs("copy-file", "src", "master", "top", "dst", into, "two", "-o")  # -o: replaced, not appended
    server.pfs("finish-commit", "dst", into)
    assert get(server, "dst", "master", "one") == b"was\ntop\n"
    assert get(server, "dst", "master", "two") == b"top\n"
    assert get(server, "dst", "master", "copy/d/a.csv") == tree["d/a.csv"]
    assert get(server, "dst", "master", "copy/d/sub/b.csv") == b"b\n"
    listed = server.pfs("list-file", "dst", "master", "copy/d").text
    assert "copy/d/empty" in listed and "dir" in listed.split("copy/d/empty")[1].split()[0]
    assert set(stored_chunks(server.data_dir)) == before | {address(b"was\n").hex()}
    assert_one_line_error(server.pfs("copy-file", "src", "master", "top", "dst", into, "x", check=False),
                          f"commit {into} of 'dst' is finished")
    assert_one_line_error(server.pfs("copy-file", "src", "master", "nope", "dst", into, "x", check=False), "nope")


def test_a_listing_gives_each_file_its_chunks_however_many_its_directory_holds(server):
    # more files in one directory than the server reads the chunk lists of in one query (LOAD_BATCH in
    # server/trees.py), many of them alike (one object for several files), one empty (no chunks)
    files = {f"many/f{i:04d}": b"%d\n" % (i % 700) for i in range(2500)} | {"many/empty": b"", "many/sub/g": b"g\n"}
    client = server.client()
    client.create_repo("r")
    put_commit(client, "r", files)
    listed = {f.path: f for f in client.list_files(CommitRef("r", "master"), "many", with_chunks=True, recursive=True)}
    assert {path for path, f in listed.items() if not f.is_dir} == set(files)
    for path, data in files.items():
        assert [c.address for c in listed[path].chunks] == ([address(data)] if data else []), path
    # read in batches of LIST_READ (server/store.py), each in a transaction of its own: in order across them, with a
    # limit that ends inside one, and since an earlier commit
    order = ["many/empty", *sorted(p for p in files if p.startswith("many/f")), "many/sub", "many/sub/g"]
    ref = CommitRef("r", "master")
    assert [f.path for f in client.list_files(ref, "many", recursive=True)] == order
    assert [f.path for f in client.list_files(ref, "many", recursive=True, limit=1500)] == order[:1500]
    first = client.inspect_commit(ref).id
    put_commit(client, "r", {path: b"x\n" for path in order[1:2501:3]})  # every third file appended to
    since = list(client.list_files(ref, "many", with_chunks=True, since=first, recursive=True))
    assert [f.path for f in since] == order[1:2501:3]
    assert {tuple(c.address for c in f.chunks) for f in since} == {(address(b"x\n"),)}


def test_recursive_listing_is_the_whole_tree_in_one_call(server, tmp_path):
    src = tmp_path / "tree"
    for i in range(30):
        rel = f"d{i % 3}/sub{i % 2}/f{i:02d}.txt"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(lines(i * 10 + 1, i))
    (src / "top.txt").write_bytes(b"top\n")
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "data", "-r", "-c", "-f", str(src))
    client, ref = server.client(), CommitRef("r", "master")

    def walk(path):  # each directory, then what it holds, one call per directory
        for f in client.list_files(ref, path, with_chunks=True):
            yield f
            if f.is_dir:
                yield from walk(f.path)

    expected = list(walk("data"))
    assert len(expected) == 3 + 6 + 30 + 1
    assert list(client.list_files(ref, "data", with_chunks=True, recursive=True)) == expected
    assert list(client.list_files(ref, "data", with_chunks=True, recursive=True, limit=7)) == expected[:7]
    assert list(client.list_files(ref, "data/top.txt", with_chunks=True, recursive=True)) == [
        client.inspect_file(ref, "data/top.txt")]

    # since an earlier commit: only what changed, and the directories on the way to it
    first = client.inspect_commit(ref).id
    put(server, "r", "master", "data/d1/sub0/f01.txt", b"changed\n", "-c", "-o")
    put(server, "r", "master", "data/d2/new.txt", b"new\n", "-c")
    changed = [f.path for f in client.list_files(ref, "data", since=first, recursive=True)]
    assert changed == ["data/d1", "data/d1/sub0", "data/d1/sub0/f01.txt", "data/d2", "data/d2/new.txt"]


def test_put_file_split_cuts_lines_or_json_values_into_numbered_files_as_pachctl(server):
    """put-file --split line|json: PATH a directory of files named by index in 16 hex digits, N datums a file or the
    datums that reach N bytes (a datum never cut), one each by default; put again, the new files follow; -o
    replaces them."""
    server.pfs("create-repo", "r")
    data = b"".join(b"%d\n" % i for i in range(1, 11))  # 1..10, 21 bytes
    put(server, "r", "master", "lines", data, "--split", "line", "--target-file-datums", "3")
    names = [f"lines/{i:016x}" for i in range(7)]

    def listed():
        return [f["path"] for f in documents(server.pfs("list-file", "r", "master", "lines", "--raw").text)]

    assert listed() == names[:4]
    assert [get(server, "r", "master", n) for n in names[:4]] == [b"1\n2\n3\n", b"4\n5\n6\n", b"7\n8\n9\n", b"10\n"]
    put(server, "r", "master", "lines", data + b"11", "--split", "line", "--target-file-bytes", "9")  # appended
    assert listed() == names
    assert [get(server, "r", "master", n) for n in names[4:]] == [b"1\n2\n3\n4\n5\n", b"6\n7\n8\n9\n10\n", b"11"]
    put(server, "r", "master", "lines", b"a\nb\n", "--split", "line", "-o")  # replaced; one line a file
    assert listed() == names[:2] and get(server, "r", "master", names[1]) == b"b\n"
    put(server, "r", "master", "j", b' {"a": 1}\n[1, 2] "x\xc3\xa9"12 ', "--split", "json", "--target-file-datums", "2")
    assert get(server, "r", "master", f"j/{0:016x}") == b'{"a": 1}[1, 2]'
    assert get(server, "r", "master", f"j/{1:016x}") == b'"x\xc3\xa9"12'
    commits = len(documents(server.pfs("list-commit", "r", "--raw").text))
    for args, said in [
        (("x", b"1\n", "--target-file-datums", "2"), "need --split line or --split json"),
        (("bad", b'{"a": 1} {', "--split", "json"), "--split json: not JSON at character 10"),
        ((f"lines/{0:016x}", b"1\n", "--split", "line"), "is a file: --split puts a directory of files there"),
    ]:
        assert_one_line_error(put(server, "r", "master", *args, check=False), said)
    put(server, "r", "master", "lines/other.csv", b"z\n")
    assert_one_line_error(put(server, "r", "master", "lines", b"1\n", "--split", "line", check=False),
                          "'lines' holds 'other.csv', which no split put there")
    assert len(documents(server.pfs("list-commit", "r", "--raw").text)) == commits + 1  # the refused left no commit


def test_glob_file_and_list_file_of_a_pattern_as_pachctl(server):
    """glob-file REPO REF PATTERN (and list-file with a pattern, as pachctl 1.10): * ? [...] in a name, ** for any
    directories; a name that holds such characters is still listed by list-file when no path matches it."""
    server.pfs("create-repo", "g")
    for path in ("a.csv", "b.csv", "c.txt", "d/x.csv", "d/e/y.csv", "d/e/z.txt", "f[1].csv"):
        put(server, "g", "master", path, b"x\n")

    def matched(verb, pattern):
        return [f["path"] for f in documents(server.pfs(verb, "g", "master", pattern, "--raw").text)]

    assert matched("glob-file", "*.csv") == ["a.csv", "b.csv", "f[1].csv"]
    assert matched("glob-file", "d/**/*.csv") == ["d/x.csv", "d/e/y.csv"]
    assert matched("glob-file", "**/*.txt") == ["c.txt", "d/e/z.txt"]
    assert matched("glob-file", "[^a-c]*") == ["d", "f[1].csv"]
    assert matched("glob-file", "d/?/y.csv") == ["d/e/y.csv"]
    assert matched("glob-file", "d/e/y.csv") == ["d/e/y.csv"] and matched("glob-file", "nope/*") == []
    assert matched("list-file", "d/*") == ["d/e", "d/x.csv"]
    assert matched("list-file", "f[1].csv") == ["f[1].csv"]  # no path matches the pattern: the name itself
    assert_one_line_error(server.pfs("glob-file", "g", "nobranch", "*", check=False), "no commit or branch 'nobranch'")


def test_split_puts_at_once_into_one_commit_each_get_files_of_their_own(server):
    """The server names each file of a split as it records it, so puts at once never share an index."""
    import subprocess

    from conftest import PFS

    server.pfs("create-repo", "r")
    commit = server.pfs("start-commit", "r").text.strip()
    puts = [subprocess.Popen([PFS, "put-file", "r", commit, "s", "--split", "line"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env={**os.environ, **server.env})
            for _ in range(5)]
    for i, p in enumerate(puts):
        p.stdin.write(b"".join(b"%d\n" % (i * 1000 + n) for n in range(100)))
        p.stdin.close()
    assert [p.wait(timeout=120) for p in puts] == [0] * 5
    server.pfs("finish-commit", "r", commit)
    files = [f["path"] for f in documents(server.pfs("list-file", "r", "master", "s", "--raw").text)]
    assert files == [f"s/{i:016x}" for i in range(500)]
    with server.client() as c:
        lines = sorted(b"".join(c.read_file(CommitRef("r", "master"), f)) for f in files)
    assert lines == sorted(b"%d\n" % (i * 1000 + n) for i in range(5) for n in range(100))  # one line each
