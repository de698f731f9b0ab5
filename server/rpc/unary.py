"""A bound on each user's calls that send one request: a few run at once, a few more wait their turn, and one
beyond those is refused.

grpc reads a unary request whole (up to 64 MiB) before any handler or interceptor sees it, and holds it while the
call runs: 40 ListRepo calls of one token, each padded to 60 MB, took the server to 5.4 GB, and nothing bounded
how many a user sent. So a user's calls of a method with a unary request are served as calls with a request
stream (the wire is the same; server/rpc/handlers.py), which take a turn of their user's before they read it. At
most RUNNING of a user's calls read and run at once, up to WAITING more wait, and one more is refused
RESOURCE_EXHAUSTED at once. A call waiting its turn may still hold what its client sent: grpc's transport takes
in a stream's data while other calls on its connection are read (40 calls of 60 MB, 8 read at a time: 2.9 GB),
so what is bounded is how many calls a user has in flight, each at most 64 MiB (100 calls of 30 MB sent at once:
6.6 GB before, 3.4 GB now). Calls that wait for news (flush-commit) and those answering with a stream
(subscribe-commit, get-file) hold a turn only while their request is read: how many of those run is
server/rpc/streams.py's bound. The root's calls and the jobs' workers' (whose tokens the server makes, and whose
commands never see them) are not counted.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from pfs.core.errors import Unauthenticated
from server.pps import job_tokens
from server.rpc.auth import caller
from server.rpc.handlers import handler_of_stream
from server.rpc.streams import WAITING_UNARY
from server.tokens import ROOT, Tokens

RUNNING = 8  # a user's calls reading their request, or running, at once
WAITING = 24  # and waiting for one of those turns


@dataclass
class _Turns:
    """One user's calls: how many hold or wait for a turn, and the turns."""

    calls: int = 0
    turns: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RUNNING))


class UnaryLimit(grpc.aio.ServerInterceptor):
    """Has each user's calls with a unary request take a turn (of RUNNING) before their request is read."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._users: dict[str, _Turns] = {}  # on the event loop's thread alone: no lock
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        if method not in self._handlers:
            self._handlers[method] = await continuation(handler_call_details)
        handler = self._handlers[method]
        if handler is None or handler.request_streaming:
            return handler
        try:
            user = self._user(handler_call_details.invocation_metadata)
        except Unauthenticated:  # revoked since the call came in: the call's own check refuses it
            return handler
        if user is None:
            return handler
        return self._in_turn(handler, user, whole=not handler.response_streaming and method not in WAITING_UNARY)

    def _in_turn(self, handler: grpc.RpcMethodHandler, user: str, whole: bool) -> grpc.RpcMethodHandler:
        """HANDLER with its request read in a turn of USER's, and the call run in it too if WHOLE."""
        if handler.response_streaming:
            streaming = handler.unary_stream

            async def answers(requests, context: grpc.aio.ServicerContext) -> AsyncIterator:
                async with self._turn(user, context):
                    request = await _only(requests, context)
                async for response in streaming(request, context):
                    yield response

            return handler_of_stream(handler, answers)
        unary = handler.unary_unary

        async def answer(requests, context: grpc.aio.ServicerContext):
            if whole:
                async with self._turn(user, context):
                    return await unary(await _only(requests, context), context)
            async with self._turn(user, context):
                request = await _only(requests, context)
            return await unary(request, context)

        return handler_of_stream(handler, answer)

    @contextlib.asynccontextmanager
    async def _turn(self, user: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        turns = self._users.setdefault(user, _Turns())
        if turns.calls >= RUNNING + WAITING:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{user} already has {RUNNING + WAITING} calls running or waiting, the most one "
                                "user may; call again once some have ended")
        turns.calls += 1
        try:
            async with turns.turns:
                yield
        finally:  # also when the client went away and grpc cancelled the call
            turns.calls -= 1
            if not turns.calls:
                del self._users[user]

    def _user(self, metadata) -> str | None:
        """The user whose turns a call takes: its token's subject; None for the root and the jobs."""
        subject = caller(self._tokens, metadata).subject
        return None if subject == ROOT or subject.startswith(job_tokens.PREFIX) else subject


async def _only(requests, context: grpc.aio.ServicerContext):
    """The one request of a call made as unary."""
    async for request in requests:
        return request
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
