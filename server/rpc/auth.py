"""Every call carries a token of the cluster (`authorization: Bearer TOKEN`, server/tokens.py), or is refused
UNAUTHENTICATED.

The one check of who may call, before anything else looks at a request: a refused call's bytes are never
decoded and it takes no stream slot. A refusal is one line saying why (no token, an unknown, expired or revoked
one) and where this server's token is; it is logged at most once a minute per calling host, so a client that
keeps trying cannot flood the log.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from pfs.core.data_dir import TOKEN_HEADER, TOKEN_SCHEME
from pfs.core.errors import PermissionDenied, Unauthenticated
from server.meta import StoredToken
from server.pps.job_tokens import PREFIX as JOB_PREFIX
from server.roles import READER, Roles
from server.rpc.handlers import handler_of_stream
from server.tokens import ROOT, Tokens

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between log lines about one host's refused calls


class TokenCheck(grpc.aio.ServerInterceptor):
    """Passes a call carrying a valid token of TOKENS on; answers any other UNAUTHENTICATED, naming TOKEN_FILE."""

    def __init__(self, tokens: Tokens, token_file: str) -> None:
        self._tokens = tokens
        self._token_file = token_file
        self._refusals: dict[str, grpc.RpcMethodHandler] = {}  # by method
        self._logged: dict[str, float] = {}  # when each host's refusal was last logged (on the loop's thread alone)

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        if _valid(self._tokens, handler_call_details.invocation_metadata):
            return await continuation(handler_call_details)
        method = handler_call_details.method
        if method not in self._refusals:
            self._refusals[method] = self._refusal(await continuation(handler_call_details))
        return self._refusals[method]

    def _refusal(self, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
        """A handler that reads nothing and answers UNAUTHENTICATED (a coroutine in every kind's place: grpc.aio
        lets a stream's handler be one). It takes a request stream, whatever the method's kind (the wire is the
        same): grpc reads a unary request whole before its handler runs, and 40 calls without a token, each
        sending 60 MB, took the server to 2.5 GB."""
        async def refuse(request, context: grpc.aio.ServicerContext):
            self._log(context.peer())
            try:
                caller(self._tokens, context.invocation_metadata())
                why = "the token given is no longer valid"  # it expired, or was revoked, since the call began
            except Unauthenticated as err:
                why = str(err)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"{why}: this pfs server serves only callers with a token of its cluster; give "
                                f"one: PFS_TOKEN, PFS_TOKEN_FILE (or pfs --token-file), pfs auth login, or this "
                                f"server's own, in {self._token_file}")

        if handler is None:  # an unknown method: refused all the same, before grpc says it does not exist
            return grpc.stream_unary_rpc_method_handler(refuse)
        return handler_of_stream(handler, refuse)._replace(request_deserializer=None)

    def _log(self, peer: str) -> None:
        host = peer.rsplit(":", 1)[0]  # "ipv4:127.0.0.1:PORT": every connection has a port of its own
        now = time.monotonic()
        if now - self._logged.get(host, -LOG_EVERY) < LOG_EVERY:
            return
        self._logged = {h: t for h, t in self._logged.items() if now - t < LOG_EVERY}
        self._logged[host] = now
        log.warning("refused calls without a valid token from %s (logged once a minute)", host)


def caller(tokens: Tokens, metadata) -> StoredToken:
    """The record of the token a call's METADATA carries; Unauthenticated, saying why, if there is none that is
    valid."""
    given = dict(metadata or ()).get(TOKEN_HEADER)
    if not given:
        raise Unauthenticated("no token was given")
    if not given.startswith(TOKEN_SCHEME):
        raise Unauthenticated(f"the authorization given is not {TOKEN_SCHEME.strip()} TOKEN")
    return tokens.who(given.removeprefix(TOKEN_SCHEME))


def _valid(tokens: Tokens, metadata) -> bool:
    try:
        caller(tokens, metadata)
        return True
    except Unauthenticated:
        return False


@dataclass(frozen=True)
class Access:
    """Who calls, and what they may read, for the servicers whose answer depends on it: a repo's or a pipeline's
    creator owns its repo; list-repo, list-pipeline and the jobs and their logs show only what the caller may read
    (server/rpc/rules.py has refused the rest already). TOKENS None: a server started with --no-token, where
    every caller may do all, as the root."""

    tokens: Tokens | None
    roles: Roles | None

    def subject(self, context) -> str:
        """Whom the call's token stands for (ROOT on a server without tokens)."""
        return ROOT if self.tokens is None else caller(self.tokens, context.invocation_metadata()).subject

    def own(self, subject: str) -> bool:
        """Whether SUBJECT is the cluster's own: its root, or a job's workers."""
        return subject == ROOT or subject.startswith(JOB_PREFIX)

    def may_read(self, subject: str, repo: str) -> bool:
        return self.roles is None or self.roles.allows(subject, repo, READER)

    def check_read(self, subject: str, repo: str) -> None:
        """PermissionDenied, in one line (and logged), unless SUBJECT may read REPO."""
        self.check(subject, repo, READER, "read")

    def check(self, subject: str, repo: str, need: str, what: str) -> None:
        """PermissionDenied, in one line (and logged), unless SUBJECT has role NEED on REPO (to do WHAT to it)."""
        if self.roles is not None:
            try:
                self.roles.check(subject, repo, need, what)
            except PermissionDenied as err:
                log.warning("refused: %s", err)
                raise
