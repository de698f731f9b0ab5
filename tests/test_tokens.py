"""Tokens: the root (a server's own DATA_DIR/token) makes tokens for others and revokes them; a token expires; the
CLI logs in with one; only hashes are stored; and in a cluster a token made or revoked on one server counts on
every other. Real servers, the real CLI."""

import pathlib
import sqlite3
import time

import pytest

from conftest import Server, assert_one_line_error, run_pfs, wait_for


def as_token(server: Server, token: str, *args: str, check: bool = True, **env: str):
    """`pfs ARGS` against SERVER showing TOKEN."""
    return run_pfs(*args, check=check, env={"PFS_ADDRESS": server.address, "PFS_TOKEN": token, **env})


def test_the_root_makes_tokens_that_work_until_revoked(server):
    assert server.pfs("auth", "whoami").text == "root\n"
    alice = server.pfs("auth", "create-token", "alice").text.strip()
    assert len(alice) == 64 and alice != server.token
    assert as_token(server, alice, "auth", "whoami").text == "alice\n"
    as_token(server, alice, "create-repo", "r")
    assert "r" in server.pfs("list-repo").text
    refused = as_token(server, alice, "auth", "create-token", "bob", check=False)
    assert_one_line_error(refused, "only the cluster's root may call CreateToken")
    assert_one_line_error(as_token(server, alice, "auth", "revoke", "alice", check=False), "only the cluster's root")
    assert server.pfs("auth", "revoke", "alice").text == "revoked 1 token\n"
    assert_one_line_error(as_token(server, alice, "list-repo", check=False), "the token given (of alice) was revoked")
    assert_one_line_error(server.pfs("auth", "revoke", "alice", check=False), "no token of 'alice' to revoke")
    carol = server.pfs("auth", "create-token", "carol").text.strip()
    server.pfs("auth", "revoke", input=carol.encode() + b"\n")  # one token, given on stdin (never on a command line)
    assert_one_line_error(as_token(server, carol, "list-repo", check=False), "(of carol) was revoked")


def test_a_token_expires(server):
    brief = server.pfs("auth", "create-token", "dave", "--ttl", "1s").text.strip()
    assert as_token(server, brief, "auth", "whoami").text.startswith("dave (the token expires ")
    time.sleep(1.5)  # past its expiry: what is checked is that it is refused then, not how fast
    assert_one_line_error(as_token(server, brief, "list-repo", check=False), "the token given (of dave) has expired")


@pytest.mark.parametrize("args, says", [
    (("create-token", "root"), "'root' is the subject of the servers' own tokens"),
    (("create-token", "eve", "--ttl", "7 days"), "is not a duration"),
    (("revoke", "root"), "a root token is revoked by replacing its server's DATA_DIR/token"),
])
def test_what_the_root_may_not_do_is_one_line(server, args, says):
    assert_one_line_error(server.pfs("auth", *args, check=False), says)


def test_login_keeps_a_token_for_the_commands_to_come(server, tmp_path):
    home = tmp_path / "home"
    token = server.pfs("auth", "create-token", "frank").text.strip()
    env = {"HOME": str(home), "PFS_ADDRESS": server.address, "PFS_TOKEN_FILE": "", "PFS_DATA_DIR": str(home / "x")}
    said = run_pfs("auth", "login", input=token.encode() + b"\n", env=env)
    kept = home / ".pfs" / "token"
    assert said.text == f"logged in as frank; the token is in {kept}\n"
    assert kept.read_text().strip() == token and (kept.stat().st_mode & 0o777) == 0o600
    assert run_pfs("auth", "whoami", env=env).text == "frank\n"
    bad = run_pfs("auth", "login", input=b"not-a-token\n", env=env, check=False)
    assert_one_line_error(bad, "not one of this cluster's")
    assert kept.read_text().strip() == token  # a token the server refused is not kept


def test_only_hashes_of_tokens_are_stored(server):
    token = server.pfs("auth", "create-token", "grace").text.strip()
    with sqlite3.connect(server.data_dir / "meta.db") as db:
        rows = db.execute("SELECT hash, subject FROM tokens").fetchall()
    dump = b"".join(bytes(h) + s.encode() for h, s in rows)
    assert ("grace" in {s for _, s in rows}) and token.encode() not in dump and server.token.encode() not in dump
    for path in server.data_dir.rglob("meta.db*"):
        assert token.encode() not in path.read_bytes()


def test_a_token_made_or_revoked_on_one_server_counts_on_the_other(postgres, tmp_path):
    url = postgres.make_database()
    a, b = (Server(tmp_path / n, args=("--meta", url)) for n in "ab")
    a.start()
    b.start()
    try:
        assert a.token != b.token  # each server's own token is a root token of the cluster
        wait_for(lambda: as_token(a, b.token, "auth", "whoami", check=False).text == "root\n", 10)  # b's, on a
        henry = a.pfs("auth", "create-token", "henry").text.strip()
        wait_for(lambda: as_token(b, henry, "auth", "whoami", check=False).text == "henry\n", 10)
        a.pfs("auth", "revoke", "henry")
        wait_for(lambda: as_token(b, henry, "list-repo", check=False).returncode != 0, 10)
        assert_one_line_error(as_token(b, henry, "list-repo", check=False), "(of henry) was revoked")
    finally:
        a.stop()
        b.stop()


def test_a_server_without_tokens_says_so(tmp_path):
    server = Server(tmp_path / "data", args=("--no-token",))
    server.start()
    try:
        told = run_pfs("auth", "whoami", check=False, env={"PFS_ADDRESS": server.address, "PFS_TOKEN": "x"})
        assert_one_line_error(told, "started with --no-token")
    finally:
        server.stop()


def test_the_root_token_file_may_be_named_and_is_kept(tmp_path):
    where = tmp_path / "secrets" / "root"
    where.parent.mkdir()
    server = Server(tmp_path / "data", args=("--root-token-file", str(where)))
    server.start()
    try:
        assert server.token_file == str(where) and (where.stat().st_mode & 0o777) == 0o600
        assert not (tmp_path / "data" / "token").exists()
        token = where.read_text().strip()
        assert as_token(server, token, "auth", "whoami").text == "root\n"
        server.stop()
        server.start()  # the same file, the same token
        assert where.read_text().strip() == token and as_token(server, token, "auth", "whoami").text == "root\n"
    finally:
        server.stop()


def test_a_replaced_token_file_revokes_the_server_s_old_root_token(server):
    old = server.token
    server.stop()
    pathlib.Path(server.token_file).unlink()
    server.start()  # makes a new one
    assert server.token != old and server.pfs("auth", "whoami").text == "root\n"
    assert_one_line_error(as_token(server, old, "list-repo", check=False), "the token given (of root) was revoked")
