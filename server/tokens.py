"""Tokens: who each caller is. Every call carries a token (server/rpc/auth.py); this says whose it is.

A server's own token (DATA_DIR/token) is a root token of its cluster: whoever can read that owner-only file is
the cluster's root, on this server as on every other of its database. The root makes tokens for others
(`pfs auth create-token NAME [--ttl]`) and revokes them (`pfs auth revoke`). Tokens are kept as their SHA-256
only: a token is 32 random bytes, so its hash cannot be turned back, and a copy of the database gives no token.
A check hashes what a call carries and looks it up (the comparison is of hashes, so it tells nothing of the
token by its timing) in this server's copy of the records (server/mirror.py): a token made or revoked on
another server of the cluster counts here within a second, on this one at once. Who may make and revoke tokens
is server/rpc/rules.py's to say (the root).
"""

import hashlib
import secrets
import time

from pfs.core.errors import InvalidArgument, NotFound, Unauthenticated
from server.meta import MetaStore, StoredToken
from server.mirror import Mirror

ROOT = "root"
TOKEN_BYTES = 32
MAX_SUBJECT = 256  # characters of a subject's name
# Seconds a revoked or expired token is still told from an unknown one ("was revoked"), before its record goes: a
# job makes one and revokes it at its end, and every server reads them all every second (server/mirror.py)
FORGET_AFTER = 86400.0


def check_subject(subject: str) -> None:
    """InvalidArgument unless SUBJECT (whom a token stands for, a user) is a name a token or role may carry."""
    if not subject or len(subject) > MAX_SUBJECT or not subject.isprintable():
        raise InvalidArgument(f"a user is a name of 1 to {MAX_SUBJECT} printable characters, not {subject[:40]!r}")


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    def __init__(self, meta: MetaStore, root: str, server: str) -> None:
        """The tokens of META's cluster, ROOT (the own token of this server, SERVER) recorded first as a root
        token, and any other this server had before revoked (its token file was replaced)."""
        self.meta = meta
        now = time.time()
        with meta.transaction() as tx:
            tx.put_token(StoredToken(digest(root), ROOT, now, server=server))
            tx.retire_server_tokens(server, digest(root), now)
        self._known = Mirror(self._load, "tokens")

    def close(self) -> None:
        self._known.close()

    def who(self, token: str) -> StoredToken:
        """The record of TOKEN; Unauthenticated, saying why, if it is unknown, expired or revoked."""
        found = self._known.value.get(digest(token))
        if found is None:
            raise Unauthenticated("the token given is not one of this cluster's")
        if found.revoked:
            raise Unauthenticated(f"the token given (of {found.subject}) was revoked")
        if found.expires and found.expires <= time.time():
            raise Unauthenticated(f"the token given (of {found.subject}) has expired")
        return found

    def create(self, subject: str, ttl: float) -> tuple[str, float]:
        """A new token for SUBJECT lasting TTL seconds (0: until revoked), and when it expires."""
        check_subject(subject)
        if subject == ROOT:
            raise InvalidArgument(f"{ROOT!r} is the subject of the servers' own tokens (DATA_DIR/token); give "
                                  "another name")
        if not 0 <= ttl < 1e10:
            raise InvalidArgument(f"a token's ttl is seconds, 0 for none, not {ttl}")
        token, now = secrets.token_hex(TOKEN_BYTES), time.time()
        record = StoredToken(digest(token), subject, now, now + ttl if ttl else 0.0)
        with self.meta.transaction() as tx:
            tx.put_token(record)
            tx.forget_tokens(now - FORGET_AFTER)
        self._known.reload()
        return token, record.expires

    def revoke(self, subject: str, token: str) -> int:
        """Revokes every token of SUBJECT, or TOKEN; how many. Never a root token (replace a server's
        DATA_DIR/token instead)."""
        hash = digest(token) if token else b""
        target = self._known.value.get(hash)
        if subject == ROOT or (target is not None and target.subject == ROOT):
            raise InvalidArgument("a root token is revoked by replacing its server's DATA_DIR/token (remove the "
                                  "file and restart the server), not here")
        if not subject and not token:
            raise InvalidArgument("say whose tokens to revoke (a subject), or give the token")
        with self.meta.transaction() as tx:
            count = tx.revoke_tokens(subject, hash, time.time())
        self._known.reload()
        if not count:
            raise NotFound(f"no token of {subject!r} to revoke" if subject else "that token is not one of this "
                           "cluster's, or was revoked already")
        return count

    def _load(self) -> dict[bytes, StoredToken]:
        with self.meta.transaction() as tx:
            return {t.hash: t for t in tx.tokens()}
