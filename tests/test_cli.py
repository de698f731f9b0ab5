"""The CLI's own surface: listings, --raw, progress on a terminal only, the server verb."""

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios

from conftest import PFS, Result, assert_one_line_error, documents, run_pfs


def test_repo_verbs(server):
    server.pfs("create-repo", "sales", "-d", "daily sales")
    server.pfs("create-repo", "logs")
    listing = server.pfs("list-repo").text.splitlines()
    assert listing[0].split() == ["NAME", "CREATED", "SIZE", "DESCRIPTION"]
    assert sorted(ln.split()[0] for ln in listing[1:]) == ["logs", "sales"]
    assert [ln.endswith("daily sales") for ln in listing[1:]].count(True) == 1
    raw = json.loads(server.pfs("inspect-repo", "sales", "--raw").text)
    assert raw["name"] == "sales" and raw["description"] == "daily sales"
    raw = server.pfs("list-repo", "--raw").text  # pachctl's --raw of a listing: a JSON document each
    assert sorted(r["name"] for r in documents(raw)) == ["logs", "sales"]
    server.pfs("delete-repo", "logs")
    assert [ln.split()[0] for ln in server.pfs("list-repo").text.splitlines()[1:]] == ["sales"]


def test_inspect_commit_and_file(server):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", input=b"abc\n" * 5000)  # no -f: stdin, as pachctl
    [commit] = documents(server.pfs("list-commit", "r", "--raw").text)
    [listed] = documents(server.pfs("list-file", "r", "master", "--raw").text)
    assert (commit["repo"], listed["path"], listed["size_bytes"]) == ("r", "f", 20000)
    text = server.pfs("inspect-commit", "r", "master").text
    assert "Branch: master" in text and "Parent: <none>" in text and "Size: 19.53 KiB" in text
    raw = json.loads(server.pfs("inspect-file", "r", "master", "f", "--raw").text)
    assert raw["size_bytes"] == 20000 and raw["is_dir"] is False and len(raw["chunks"]) >= 2


def test_create_branch_without_head_says_the_branch_comes_with_its_first_commit(server):
    """pachctl 1.9's `create branch REPO@BRANCH` (an empty branch): pfs has none, and says how its branch is made;
    the put that follows, as in pachctl's guides, makes it with a commit of no parent."""
    server.pfs("create-repo", "r")
    made = server.pfs("create-branch", "r@dev")
    assert made.stdout == b"" and "it is made with its first" in made.stderr
    server.pfs("put-file", "r@dev:/f", input=b"x\n")
    [commit] = documents(server.pfs("list-commit", "r@dev", "--raw").text)
    assert (commit["branch"], commit["parent"]) == ("dev", "")
    assert_one_line_error(server.pfs("create-branch", "r", "dev", check=False),
                          f"branch dev of r exists (its head is {commit['id']}); give --head")


def test_a_commit_has_the_description_start_commit_or_finish_commit_gave_it(server):
    """pachctl's start-commit -m (--message, --description), which finish-commit -m replaces."""
    server.pfs("create-repo", "r")
    first = server.pfs("start-commit", "r@master", "-m", "monday's sales").text.strip()
    server.pfs("finish-commit", "r@master")  # keeps it
    second = server.pfs("start-commit", "r", "master", "--description", "draft").text.strip()
    server.pfs("finish-commit", "r", second, "--message", "tuesday's sales\nfrom the shop's till")
    third = server.pfs("start-commit", "r", "master").text.strip()
    server.pfs("finish-commit", "r", third)
    said = {c["id"]: c["description"] for c in documents(server.pfs("list-commit", "r", "--raw").text)}
    assert said == {first: "monday's sales", second: "tuesday's sales\nfrom the shop's till", third: ""}
    rows = server.pfs("list-commit", "r").text.splitlines()
    assert rows[0].split()[-1] == "DESCRIPTION"
    assert rows[2].endswith("tuesday's sales...") and rows[3].endswith("monday's sales")
    assert "Description: monday's sales" in server.pfs("inspect-commit", "r", first).text
    assert "Description" not in server.pfs("inspect-commit", "r", third).text
    forged = server.pfs("start-commit", "r", "master", "-m", "one\nBranch: forged\n\x1b[2Jcleared").text.strip()
    server.pfs("finish-commit", "r", forged)
    shown = server.pfs("inspect-commit", "r", forged).text  # its lines below, indented; no escape reaches the terminal
    assert "Description: one\n  Branch: forged\n  '\\x1b[2Jcleared'\nBranch: master\n" in shown, shown
    assert "\x1b" not in shown
    refused = server.pfs("start-commit", "r", "master", "-m", "x" * 5000, check=False)
    assert_one_line_error(refused, "the description of a commit of repo 'r' is 5000 characters long",
                          "at most 4096")
    assert len(said) + 1 == len(documents(server.pfs("list-commit", "r", "--raw").text))  # none was started


def test_put_file_without_c_starts_a_commit_only_where_the_branch_has_none_open(server):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "a", input=b"1\n")  # a new repo: master made, with a commit of its own
    [first] = documents(server.pfs("list-commit", "r", "--raw").text)
    assert first["finished"] and first["branch"] == "master"
    server.pfs("put-file", "r", "master", "a", input=b"2\n")  # master's head is finished: another commit, its child
    second, _ = documents(server.pfs("list-commit", "r", "--raw").text)
    assert second["finished"] and second["parent"] == first["id"]
    opened = server.pfs("start-commit", "r", "master").text.strip()
    server.pfs("put-file", "r", "master", "a", input=b"3\n")  # an open head: the put goes into it, left open
    assert [c["id"] for c in documents(server.pfs("list-commit", "r", "--raw").text)][0] == opened
    assert not json.loads(server.pfs("inspect-commit", "r", opened, "--raw").text)["finished"]
    server.pfs("finish-commit", "r", opened)
    assert server.pfs("get-file", "r", "master", "a").stdout == b"1\n2\n3\n"
    refused = server.pfs("put-file", "r", second["id"], "a", input=b"4\n", check=False)  # a finished commit by id
    assert_one_line_error(refused, f"commit {second['id']} of 'r' is finished", "pfs put-file r master")
    assert len(documents(server.pfs("list-commit", "r", "--raw").text)) == 3


def test_pachctl_1_9_forms_two_word_verbs_and_repo_at_ref_colon_path(server, tmp_path):
    (tmp_path / "a.csv").write_bytes(b"a\n")
    server.pfs("create", "repo", "sales")
    server.pfs("put", "file", "sales@master:/in/a.csv", "-f", str(tmp_path / "a.csv"))
    server.pfs("put", "file", "sales@master", "-f", str(tmp_path / "a.csv"))  # named after the source, at the top
    assert server.pfs("get", "file", "sales@master:/in/a.csv").stdout == b"a\n"
    assert [f["path"] for f in documents(server.pfs("list", "file", "sales@master", "--raw").text)] == ["a.csv", "in"]
    assert [f["path"] for f in documents(server.pfs("list", "file", "sales@master:/in", "--raw").text)] == ["in/a.csv"]
    server.pfs("copy", "file", "sales@master:/a.csv", "sales@master:/b.csv")  # a finished head: a commit of its own
    server.pfs("delete", "file", "sales@master:/a.csv")
    commits = documents(server.pfs("list", "commit", "sales@master", "--raw").text)
    assert len(commits) == 4 and all(c["finished"] for c in commits)
    assert json.loads(server.pfs("inspect", "commit", "sales@master^", "--raw").text)["id"] == commits[1]["id"]
    assert server.pfs("get-file", "sales@master^", "a.csv").stdout == b"a\n"  # the one word, then the path's
    server.pfs("--address", server.env["PFS_ADDRESS"], "create", "branch", "sales@dev", "--head", "master")
    assert "dev" in server.pfs("list", "branch", "sales").text
    assert_one_line_error(server.pfs("logs", "--pipeline", "nope", check=False), "pipeline 'nope' not found")
    for args, usage in [
        (("get-file", "sales@master"), "the following arguments are required: PATH"),
        (("inspect-commit", "sales@master:/a"), "'sales@master:/a': write it as REPO@REF, or as the words REPO REF"),
        (("put-file", "sales@", "-f", "x"), "'sales@': write it as REPO@REF:PATH, or as the words REPO REF PATH"),
        (("put-file", "sales@master:/x", "a.csv"), "too many arguments"),
    ]:
        refused = server.pfs(*args, check=False)
        assert refused.returncode == 2 and usage in refused.stderr and "REPO@REF" in refused.stderr, refused.stderr


def test_words_after_a_double_dash_are_paths_wherever_the_options_are(server, tmp_path):
    (tmp_path / "-src").write_bytes(b"x\n")
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "-f", str(tmp_path / "-src"), "--", "-a")  # options first
    server.pfs("put-file", "-f", str(tmp_path / "-src"), "r", "master", "--", "-b")  # or before the words
    server.pfs("put-file", "r", "master", "--", "--help", input=b"y\n")  # what an option's name would be
    names = [f["path"] for f in documents(server.pfs("list-file", "r", "master", "--raw").text)]
    assert names == ["--help", "-a", "-b"]
    assert server.pfs("get-file", "r", "master", "--", "--help").stdout == b"y\n"
    assert server.pfs("get-file", "--", "r@master:/-a").stdout == b"x\n"


def progress_output(server, *args, input_file) -> str:
    """Runs pfs with stderr on a pseudo-terminal and returns what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    with open(input_file, "rb") as stdin:
        proc = subprocess.Popen([PFS, *args], stdin=stdin, stdout=subprocess.DEVNULL, stderr=slave,
                                env={**os.environ, **server.env})
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed
            break
        if not data:
            break
        out += data
    os.close(master)
    assert proc.wait() == 0
    return out.decode(errors="replace")


def test_put_file_without_f_refuses_a_terminal_for_stdin(server):
    """No -f reads stdin, as pachctl; a terminal there is someone who forgot -f, told so rather than waited on."""
    server.pfs("create-repo", "r")
    master, slave = pty.openpty()
    with os.fdopen(master, "rb"), os.fdopen(slave, "rb") as terminal:
        p = subprocess.run([PFS, "put-file", "r", "master", "f", "-c"], stdin=terminal, capture_output=True,
                           env={**os.environ, **server.env}, timeout=60)
    assert_one_line_error(Result(p.returncode, p.stdout, p.stderr.decode()), "no -f FILE given, and stdin is a "
                                                                             "terminal")
    assert server.pfs("list-commit", "r").text.count("\n") == 1  # no commit was started


def test_progress_bar_only_on_a_terminal(big_server, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 << 20))
    big_server.pfs("create-repo", "r")
    drawn = progress_output(big_server, "put-file", "r", "master", "big", "-c", "-f", str(src), input_file=os.devnull)
    assert "put-file" in drawn and "%" in drawn
    piped = big_server.pfs("put-file", "r", "master", "again", "-c", "-f", str(src))
    assert piped.stderr == ""
    drawn = progress_output(big_server, "get-file", "r", "master", "big", input_file=os.devnull)
    assert "get-file" in drawn


def test_help_and_version(server):
    assert run_pfs("version", "--client-only").text.strip() == "0.1.0"
    # pachctl's table, the server found through pachctl's PACHD_ADDRESS as through PFS_ADDRESS
    table = run_pfs("version", env={"PACHD_ADDRESS": server.address, "PFS_TOKEN_FILE": server.token_file}).text
    assert [row.split() for row in table.splitlines()] == [["COMPONENT", "VERSION"], ["pfs", "0.1.0"],
                                                           ["server", "0.1.0"]]
    alone = run_pfs("version", "--address", "127.0.0.1:1", check=False)
    assert alone.text.splitlines()[1].split() == ["pfs", "0.1.0"]  # what is known without a server, then why not
    assert_one_line_error(alone, "cannot reach the pfs server at 127.0.0.1:1")
    usage = run_pfs("--help").text
    for verb in ("create-repo", "put-file", "subscribe-commit", "set-branch", "server"):
        assert verb in usage
    assert "--data-dir" in run_pfs("server", "--help").text


def test_options_may_come_between_positionals(server, tmp_path):
    """As pachctl's flags: `put-file REPO REF -r -c -f DIR PATH` (the README's own example), `list-commit REPO -n 1
    BRANCH`."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"png\n")
    server.pfs("create-repo", "sales")
    server.pfs("put-file", "sales", "master", "-r", "-c", "-f", str(tmp_path / "images"), "images")
    assert server.pfs("get-file", "sales", "master", "images/a.png").stdout == b"png\n"
    assert len(server.pfs("list-commit", "sales", "-n", "1", "master").text.splitlines()) == 2  # and a header


def test_put_file_takes_several_sources_as_pachctl_did(server, tmp_path, monkeypatch):
    """Several -f, or a list of them (-i FILE, or - for stdin): each named as given, below PATH where one is given."""
    here = tmp_path / "here"
    (here / "data").mkdir(parents=True)
    monkeypatch.chdir(here)
    for name in ("a.csv", "b.csv"):
        (here / "data" / name).write_bytes(name.encode() + b"\n")
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "-f", "data/a.csv", "-f", str(here / "data" / "b.csv"))
    server.pfs("put-file", "r", "master", "in", "-f", "data/a.csv", "-f", "data/b.csv")
    (here / "list").write_text("data/a.csv\n\ndata/b.csv\n")
    server.pfs("put-file", "r", "master", "listed", "-i", "list")
    server.pfs("put-file", "r", "master", "piped", "-i", "-", input=b"data/b.csv\n")  # one source: at PATH itself
    files = [f["path"] for f in documents(server.pfs("glob-file", "r", "master", "**", "--raw").text)
             if not f["is_dir"]]
    assert sorted(files) == ["b.csv", "data/a.csv", "in/data/a.csv", "in/data/b.csv", "listed/data/a.csv",
                             "listed/data/b.csv", "piped"]
    assert server.pfs("get-file", "r", "master", "listed/data/b.csv").stdout == b"b.csv\n"
    assert server.pfs("get-file", "r", "master", "piped").stdout == b"b.csv\n"
    commits = len(documents(server.pfs("list-commit", "r", "--raw").text))
    a = ("-f", "data/a.csv")
    for args, said in (((*a, *a), "two of the sources would be put at x/data/a.csv"),
                       ((*a, "-f", "-"), "stdin (-) cannot be named among several sources"),
                       ((*a, "-i", "list"), "from -f or from a list (-i), not both"),
                       (("-i", "nothing"), "no such file: nothing"),
                       (("-i", "-"), "- lists no file or URL"),
                       ((*a, "-f", "data/missing.csv"), "no such file or directory: data/missing")):
        assert_one_line_error(server.pfs("put-file", "r", "master", "x", *args, input=b"", check=False), said)
    assert_one_line_error(server.pfs("put-file", "r", "master", "x", "-i", "-", input=b"-\n", check=False),
                          "the list is read from stdin, so it cannot name stdin (-) too")
    assert len(documents(server.pfs("list-commit", "r", "--raw").text)) == commits  # nothing was put


def test_put_file_r_says_what_it_leaves_out(server, tmp_path):
    """A tree's regular files and directories are put; a link to a directory, a dangling link and what is no file
    (a pipe) are left out, each said on stderr, and the put succeeds."""
    tree = tmp_path / "t"
    (tree / "real").mkdir(parents=True)
    (tree / "plain").write_bytes(b"x\n")
    (tree / "to-dir").symlink_to(tree / "real")
    (tree / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(tree / "pipe")
    server.pfs("create-repo", "r")
    put = server.pfs("put-file", "r", "master", "-r", "-c", "-f", str(tree), "t")
    said = sorted(put.stderr.splitlines())
    assert said == [f"pfs: left out {tree}/dangling: a dangling link", f"pfs: left out {tree}/pipe: not a file",
                    f"pfs: left out {tree}/to-dir: a link to a directory"], said
    assert [row.split()[0] for row in server.pfs("list-file", "r", "master", "t").text.splitlines()[1:]] == [
        "t/plain", "t/real"]
