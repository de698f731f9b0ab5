"""A bound on the calls that last as long as a client wants: past it, one more is refused, never queued.

The server is grpc's asyncio server: a call that waits for news (subscribe-commit, flush-commit) is a
coroutine holding no thread, and a response stream holds a pool thread only while it makes each message
(server/rpc/blocking.py). Still, each such call holds memory and a gRPC call for as long as it lasts, and a
request stream (put-chunks) holds a thread of its own while its client sends slowly, since the store
consumes it as blocking code. So at most LIMIT of them run at once (--max-streams); one more is answered
RESOURCE_EXHAUSTED at once, in one line, and the server's threads and memory stay bounded whatever clients do.
A user's token holds at most a quarter of them (SHARE), so that no user can take them all from the others, the
root and the jobs' workers (whose tokens the server makes, one a job, and whose commands never see them).
Of those, at most UPLOADS may be put-chunks calls: each holds up to a few of its requests (64 MiB each at most)
while they are received, checked and written, about 330 MB at most, so a user's memory is bounded on its own
(a quarter of 1,024 such calls would be 84 GB); a put-file uses one at a time.
"""

import contextlib
import functools
from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc

from server.pps import job_tokens
from server.rpc.auth import caller
from server.rpc.handlers import around
from server.tokens import ROOT, Tokens

SHARE = 4  # a user's token holds at most 1/SHARE of the calls at once
UPLOADS = 4  # and at most this many of them put-chunks calls
UPLOAD = "/pfs.Chunks/PutChunks"
WAITING_UNARY = frozenset({"/pps.PPS/FlushCommit"})  # unary calls that wait for news as long as it takes


class StreamLimit(grpc.aio.ServerInterceptor):
    """Lets at most LIMIT streaming (or waiting) calls run at once; one more is RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int, tokens: Tokens | None = None) -> None:
        """TOKENS: those of the server's callers (None: a server without tokens, whose callers are all the root)."""
        self.limit = limit
        self.share = max(1, limit // SHARE)
        self._tokens = tokens
        self._running = 0  # counted on the event loop's thread alone: no lock
        self._users: Counter[str] = Counter()  # each user's calls running
        self._uploads: Counter[str] = Counter()  # each user's put-chunks calls running
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method not in self._handlers:
            handler = await continuation(handler_call_details)
            long = handler is not None and (handler.request_streaming or handler.response_streaming
                                            or method in WAITING_UNARY)
            slot = functools.partial(self._slot, upload=method == UPLOAD)
            self._handlers[method] = around(handler, slot) if long else handler
        return self._handlers[method]

    @contextlib.asynccontextmanager
    async def _slot(self, request, context: grpc.aio.ServicerContext, upload: bool) -> AsyncIterator:
        if self._running >= self.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the server already serves {self.limit} streaming calls (subscribe-commit, "
                                "flush-commit, logs -f, transfers); call again once some have ended")
        user = self._user(context)
        if user is not None and self._users[user] >= self.share:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{user} already has {self.share} streaming calls running, the most one user may "
                                f"(a quarter of the server's {self.limit}); call again once some have ended")
        counts = [self._users, *([self._uploads] if upload else [])]
        if upload and user is not None and self._uploads[user] >= UPLOADS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{user} already has {UPLOADS} uploads (put-chunks calls) running, the most one user "
                                "may; call again once some have ended")
        self._running += 1
        for count in counts:
            count[user] += 1
        try:
            yield request
        finally:  # also when the client went away and grpc cancelled the call
            self._running -= 1
            for count in counts:
                count[user] -= 1
                if not count[user]:
                    del count[user]

    def _user(self, context: grpc.aio.ServicerContext) -> str | None:
        """The user whose share a call counts in: its token's subject; None for the root and the jobs."""
        if self._tokens is None:
            return None
        subject = caller(self._tokens, context.invocation_metadata()).subject
        return None if subject == ROOT or subject.startswith(job_tokens.PREFIX) else subject
