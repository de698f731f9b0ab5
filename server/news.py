"""News that the store changed (a commit finished, a job or a pipeline changed), for whoever waits for it.

One notify() from any thread (a call's thread, a controller's, a listener on another server's news) wakes
both kinds of waiter: threads blocked in wait() (the pipeline controller's loops) and coroutines in
wait_async() (subscribe-commit and flush-commit on the gRPC event loop, which hold no thread while they
wait). A waiter that looks at the store and then waits must not miss news that arrived while it looked:
it reads `generation` before it looks and passes it to wait_async(), which returns at once if news came
since. No notification says what changed; a waiter looks again.
"""

import asyncio
import contextlib
import threading

from pfs.core.errors import Unavailable

RECHECK = 30.0  # seconds an async waiter waits for news before it looks anyway, in case a notification was lost


class News:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0  # notifications so far
        self._stopping = False  # set once: every wait ends (the server is stopping)
        # one future per event loop that has waiters, shared by all of them: a notification costs one
        # call_soon_threadsafe per loop however many coroutines wait
        self._woken: dict[asyncio.AbstractEventLoop, asyncio.Future] = {}

    @property
    def generation(self) -> int:
        """A mark to pass to wait_async(): read it before looking at the store."""
        with self._changed:
            return self._generation

    def notify(self) -> None:
        """Wakes every waiter, thread or coroutine; callable from any thread."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
            woken, self._woken = self._woken, {}
        for loop, future in woken.items():
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits there any more
                loop.call_soon_threadsafe(_settle, future)

    def stop(self) -> None:
        """Ends every wait, now and to come, with Unavailable: the server is stopping."""
        with self._changed:
            self._stopping = True
        self.notify()

    def wait(self, timeout: float) -> None:
        """Blocks this thread until news comes or TIMEOUT seconds pass; Unavailable once stopping."""
        with self._changed:
            if not self._stopping:
                self._changed.wait(timeout)
            self._check()

    async def wait_async(self, since: int, timeout: float = RECHECK) -> None:
        """Waits, holding no thread, until news came after mark SINCE (at once if it already has) or TIMEOUT
        seconds pass; Unavailable once stopping."""
        loop = asyncio.get_running_loop()
        with self._changed:
            self._check()
            if self._generation != since:
                return
            future = self._woken.get(loop)
            if future is None:
                future = self._woken[loop] = loop.create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), timeout)  # shielded: other waiters share it
        with self._changed:
            self._check()

    def _check(self) -> None:
        if self._stopping:
            raise Unavailable("the server is stopping; call again once it is back")


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
