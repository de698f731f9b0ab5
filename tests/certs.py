"""Certificates for the TLS tests, made by the openssl command: a CA, and certificates it signs for given names."""

import pathlib
import subprocess
from dataclasses import dataclass

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pair:
    cert: pathlib.Path
    key: pathlib.Path


def make_ca(where: pathlib.Path, name: str = "pfs test CA") -> Pair:
    """A self-signed CA in WHERE."""
    where.mkdir(parents=True, exist_ok=True)
    ca = Pair(where / f"{name.replace(' ', '-')}.pem", where / f"{name.replace(' ', '-')}.key")
    _openssl("req", "-x509", *KEY, "-keyout", ca.key, "-out", ca.cert, "-days", "2", "-subj", f"/CN={name}")
    return ca


def make_cert(ca: Pair, where: pathlib.Path, name: str, names: tuple[str, ...] = ()) -> Pair:
    """A certificate for NAME signed by CA, its subjectAltNames NAMES ("DNS:localhost", "IP:127.0.0.1")."""
    pair, csr, ext = Pair(where / f"{name}.pem", where / f"{name}.key"), where / f"{name}.csr", where / f"{name}.ext"
    _openssl("req", *KEY, "-keyout", pair.key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(f"subjectAltName={','.join(names)}\n" if names else "")
    _openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", pair.cert,
             "-days", "2", "-extfile", ext)
    return pair


def _openssl(*args) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
