"""The servers of a cluster in one address: HOST:PORT,HOST:PORT. A client uses the first it can reach and moves on to
the next when that one goes away; bad addresses are one-line errors."""

import pytest

from conftest import Server, assert_one_line_error, run_pfs
from pfs.client import Client


@pytest.fixture
def two_servers(tmp_path):
    """Two servers without tokens (a cluster's share one token; two embedded ones each have their own)."""
    servers = [Server(tmp_path / name, args=("--no-token",)) for name in ("a", "b")]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


def test_a_client_moves_on_to_the_next_server_when_one_goes_away(two_servers):
    a, b = two_servers
    both = f"{a.address},{b.address}"
    run_pfs("create-repo", "on-a", env={"PFS_ADDRESS": both})
    assert run_pfs("list-repo", env={"PFS_ADDRESS": a.address}).text.count("on-a") == 1  # the first one answered
    with Client(both) as client:  # a long-lived client: a mount, a worker
        assert [r.name for r in client.list_repos()] == ["on-a"]
        a.kill()
        assert client.list_repos() == []  # b's: the next call went there
        client.create_repo("on-b")
    assert [r.name for r in Client(b.address).list_repos()] == ["on-b"]
    run_pfs("inspect-repo", "on-b", "--address", both)  # the CLI too, A down from the start
    b.kill()
    assert_one_line_error(run_pfs("list-repo", env={"PFS_ADDRESS": both}, check=False),
                          f"cannot reach the pfs server at {both}")


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1,no-such-host.invalid:2", "cannot resolve the server 'no-such-host.invalid:2'"),
    ("127.0.0.1:1,[::1]:2", "both IPv4 and IPv6"),
    ("127.0.0.1:1,localhost", "'localhost' is not HOST:PORT"),
    (",", "no server in the address"),
])
def test_bad_addresses_are_one_line_errors(address, says):
    assert_one_line_error(run_pfs("list-repo", "--address", address, check=False), says)
