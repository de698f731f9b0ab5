"""Every call carries the server's token (`authorization: Bearer TOKEN`), or is refused UNAUTHENTICATED.

The one check of who may call, before anything else looks at a request: a refused call's bytes are never
decoded and it takes no stream slot. A refusal is one line saying where the token is; it is logged at most
once a minute per calling host, so a client that keeps trying cannot flood the log.
"""

import hmac
import logging
import time
from collections.abc import Callable

import grpc

from pfs.core.data_dir import TOKEN_HEADER, TOKEN_SCHEME

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between log lines about one host's refused calls


class TokenCheck(grpc.aio.ServerInterceptor):
    """Passes a call carrying TOKEN on; answers any other UNAUTHENTICATED, naming TOKEN_FILE."""

    def __init__(self, token: str, token_file: str) -> None:
        self._expected = (TOKEN_SCHEME + token).encode()
        self._token_file = token_file
        self._refusals: dict[str, grpc.RpcMethodHandler] = {}  # by method
        self._logged: dict[str, float] = {}  # when each host's refusal was last logged (on the loop's thread alone)

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        given = dict(handler_call_details.invocation_metadata or ()).get(TOKEN_HEADER)
        if given is not None and hmac.compare_digest(given.encode(), self._expected):
            return await continuation(handler_call_details)
        method = handler_call_details.method
        if method not in self._refusals:
            self._refusals[method] = self._refusal(await continuation(handler_call_details))
        return self._refusals[method]

    def _refusal(self, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
        """A handler of the method's kind that reads nothing and answers UNAUTHENTICATED (a coroutine in every
        kind's place: grpc.aio lets a stream's handler be one)."""
        async def refuse(request, context: grpc.aio.ServicerContext):
            self._log(context.peer())
            given = ("no token was given" if not dict(context.invocation_metadata() or ()).get(TOKEN_HEADER)
                     else "the token given is not this server's")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"{given}: this pfs server serves only callers with its token; give the token in "
                                f"{self._token_file}: PFS_TOKEN or PFS_TOKEN_FILE (or pfs --token-file)")

        if handler is None:  # an unknown method: refused all the same, before grpc says it does not exist
            return grpc.unary_unary_rpc_method_handler(refuse)
        kind = {(False, False): "unary_unary", (False, True): "unary_stream",
                (True, False): "stream_unary", (True, True): "stream_stream"}
        name = kind[(handler.request_streaming, handler.response_streaming)]
        return handler._replace(request_deserializer=None, **{name: refuse})

    def _log(self, peer: str) -> None:
        host = peer.rsplit(":", 1)[0]  # "ipv4:127.0.0.1:PORT": every connection has a port of its own
        now = time.monotonic()
        if now - self._logged.get(host, -LOG_EVERY) < LOG_EVERY:
            return
        self._logged = {h: t for h, t in self._logged.items() if now - t < LOG_EVERY}
        self._logged[host] = now
        log.warning("refused calls without this server's token from %s (logged once a minute)", host)
