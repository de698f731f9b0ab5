"""Blocking code (the store, the jobs) under grpc's event loop, which must never wait on it.

A call's blocking work runs in the loop's default pool of threads (a bounded one: see server/main.py),
handed one step at a time, so a call holds a thread only while it works: never while its client reads
slowly or while it waits for news. The one exception is a request stream fed to blocking code (put-chunks:
the store consumes an iterator): that consumer waits for the client between messages, so it runs in a
thread of its own rather than one the pool's other calls need, and StreamLimit bounds how many there are.
"""

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()  # what a step gives at the end of its iterator (StopIteration cannot cross into a future)


async def pulled(items: Generator[T, None, None]) -> AsyncIterator[T]:
    """ITEMS, each next() run in the pool; closed in the pool too when the call ends early."""
    lock = threading.Lock()  # a step still running when the call was cancelled ends before close() runs

    def step():
        with lock:
            return next(items, _END)

    def close() -> None:
        with lock:
            items.close()

    try:
        while (item := await asyncio.to_thread(step)) is not _END:
            yield item
    finally:  # not awaited: a cancelled call ends now, its generator's cleanup follows in the pool
        asyncio.get_running_loop().run_in_executor(None, close)


async def consumed(consume: Callable[[Iterator[T]], R], items: AsyncIterator[T]) -> R:
    """CONSUME run, in a thread of its own, over ITEMS: each read on the loop when the consumer asks for it."""
    loop = asyncio.get_running_loop()
    reading: list[concurrent.futures.Future] = []  # the read in flight: cancelled if the call ends first

    def blocking() -> Iterator[T]:
        while True:
            read = asyncio.run_coroutine_threadsafe(_next(items), loop)
            reading[:] = [read]
            item = read.result()
            if item is _END:
                return
            yield item

    done: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return  # the call ended before the thread began
        try:
            done.set_result(consume(blocking()))
        except BaseException as exc:  # noqa: BLE001 - whatever it is, the call answers it
            done.set_exception(exc)

    threading.Thread(target=run, name="request-stream", daemon=True).start()
    try:
        return await asyncio.wrap_future(done)
    finally:
        for read in reading:
            read.cancel()


async def _next(items: AsyncIterator[T]):
    return await anext(items, _END)
