"""TLS: real certificates made by the tests (tests/certs.py, openssl), a real server serving TLS or mutual TLS, and
clients that trust its CA, do not, or call it by a name its certificate lacks; and a server open to the network
refused without TLS and its token."""

import contextlib
from collections.abc import Iterator

import pytest

from certs import make_ca, make_cert
from conftest import Server, assert_one_line_error, needs, run_pfs
from test_pipelines import pipeline, put, repo_input
from test_s3_errors import refused

pytestmark = needs("openssl")

NAMES = ("DNS:localhost", "IP:127.0.0.1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a server certificate for this machine's loopback names, one for another host's, a client
    certificate, and a second CA with a client certificate of its own."""
    where = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(where), make_ca(where / "other", "another CA")
    return {"ca": ca, "server": make_cert(ca, where, "server", NAMES),
            "elsewhere": make_cert(ca, where, "elsewhere", ("DNS:elsewhere.example",)),
            "client": make_cert(ca, where, "client"), "stranger": make_cert(other, where / "other", "stranger")}


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_server(tmp_path, pki, cert: str = "server", *more: str) -> contextlib.AbstractContextManager[Server]:
    """A server serving TLS with the certificate CERT of PKI (and MORE options), running while in the block."""
    pair = pki[cert]
    return running(Server(tmp_path / "data", args=("--tls-cert", str(pair.cert), "--tls-key", str(pair.key), *more)))


def call(server: Server, *args: str, address: str | None = None, check: bool = True, input: bytes | None = None,
         **env: str):
    """`pfs ARGS` against SERVER (at ADDRESS if given), with ENV more of its environment."""
    return run_pfs(*args, check=check, input=input,
                   env={**server.env, **({"PFS_ADDRESS": address} if address else {}), **env})


def test_a_client_trusting_the_ca_is_served_and_others_are_told_why_not(tmp_path, pki):
    with tls_server(tmp_path, pki) as server:
        ca, port = str(pki["ca"].cert), server.port
        assert "over TLS" in server.log.read_text()
        call(server, "create-repo", "r", PFS_TLS_CA=ca)
        call(server, "--tls-ca", ca, "put-file", "r", "master", "f", "-c", "-f", "-", input=b"over TLS\n")
        for address in (f"localhost:{port}", f"127.0.0.1:{port}", f"grpcs://localhost:{port}"):  # names it holds
            assert call(server, "get-file", "r", "master", "f", address=address, PFS_TLS_CA=ca).stdout == b"over TLS\n"
        untrusted = call(server, "list-repo", address=f"grpcs://127.0.0.1:{port}", check=False)  # system roots
        assert_one_line_error(untrusted, "not signed by a CA this client trusts", "--tls-ca")
        plain = call(server, "list-repo", check=False)
        assert_one_line_error(plain, f"cannot reach the pfs server at 127.0.0.1:{port}", "a server that speaks TLS",
                              "grpcs://")
        assert "Handshake" not in server.log.read_text()  # gRPC's own lines stay out of the server's log


@pytest.mark.parametrize("tls, says", [("elsewhere", "does not name the host called"), ("", "does not speak TLS")])
def test_a_certificate_for_another_host_or_a_server_without_tls_is_refused(tmp_path, pki, tls, says):
    server = tls_server(tmp_path, pki, tls) if tls else running(Server(tmp_path / "data"))
    with server as server:
        told = call(server, "list-repo", check=False, PFS_TLS_CA=str(pki["ca"].cert))
        assert_one_line_error(told, says)


def test_mutual_tls_serves_only_clients_with_a_certificate_of_its_ca(tmp_path, pki):
    ca = str(pki["ca"].cert)
    with tls_server(tmp_path, pki, "server", "--tls-client-ca", ca) as server:
        assert "over mutual TLS" in server.log.read_text()
        client, stranger = pki["client"], pki["stranger"]
        call(server, "create-repo", "r", PFS_TLS_CA=ca, PFS_TLS_CERT=str(client.cert), PFS_TLS_KEY=str(client.key))
        for refused_env in ({}, {"PFS_TLS_CERT": str(stranger.cert), "PFS_TLS_KEY": str(stranger.key)}):
            told = call(server, "list-repo", check=False, PFS_TLS_CA=ca, **refused_env)
            assert_one_line_error(told, "cannot reach the pfs server")
        half = call(server, "list-repo", check=False, PFS_TLS_CA=ca, PFS_TLS_CERT=str(client.cert))
        assert_one_line_error(half, "PFS_TLS_CERT and PFS_TLS_KEY go together")


@pytest.mark.parametrize("args, says", [
    (("--tls-cert", "{dir}/none.pem", "--tls-key", "{server}.key"), "--tls-cert: cannot read"),
    (("--tls-cert", "{server}.pem"), "--tls-cert and --tls-key go together"),
    (("--tls-cert", "{server}.pem", "--tls-key", "{client}.key"), "are not a certificate and its key"),
    (("--tls-cert", "{server}.key", "--tls-key", "{server}.key"), "are not a certificate and its key"),
    (("--tls-client-ca", "{server}.pem"), "give --tls-cert and --tls-key too"),
    (("--listen", "0.0.0.0"), "beyond loopback, without TLS (give --tls-cert and --tls-key): anyone"),
    (("--listen", "0.0.0.0", "--tls-cert", "{server}.pem", "--tls-key", "{server}.key", "--no-token"),
     "beyond loopback, without its token (leave out --no-token)"),
])
def test_a_server_that_cannot_serve_safely_refuses_to_start_in_one_line(tmp_path, pki, args, says):
    stems = {"dir": tmp_path, "server": pki["server"].cert.with_suffix(""), "client": pki["client"].cert.with_suffix("")}
    line = refused(Server(tmp_path / "data", args=tuple(a.format(**stems) for a in args)))
    assert line.startswith("pfs server: ") and says in line, line


def test_a_server_open_to_the_network_starts_with_tls_and_its_token_or_when_told_insecure(tmp_path, pki):
    pair = pki["server"]
    for name, args in (("safe", ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key))), ("insecure", ("--insecure",))):
        with running(Server(tmp_path / name, args=("--listen", "0.0.0.0", *args))) as server:
            call(server, "list-repo", **({"PFS_TLS_CA": str(pki["ca"].cert)} if name == "safe" else {}))


@pytest.mark.slow
@needs("fusermount3", "setpriv", root=True, fuse=True)
def test_workers_and_mounts_speak_tls_to_their_server(tmp_path, pki, monkeypatch):
    with tls_server(tmp_path, pki) as server:
        monkeypatch.setenv("PFS_TLS_CA", str(pki["ca"].cert))  # the clients' (server.pfs), not the server's
        put(server, "data", {"x": b"1\n"})
        pipeline(server, tmp_path, "p", ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
        server.pfs("flush-commit", "data/master")  # the workers trust the server's certificate: it hands it to them
        assert server.pfs("get-file", "p", "master", "x").stdout == b"1\n"
