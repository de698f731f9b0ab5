"""A job's logs, sent to the server in batches while the command runs, and echoed here."""

import queue
import sys
import threading
import time

from pfs.client import Client
from pfs.core.errors import PfsError
from pfs.core.model import MAX_LOG_TEXT, LogLine

BATCH_LINES = 500
BATCH_SECONDS = 0.2
# lines waiting to be sent, at most: a command that prints faster than the server takes its lines waits for them
# (its pipe fills), rather than this process holding them all
QUEUE_LINES = 20 * BATCH_LINES


class Logs:
    """Log lines of one shard: each is printed on this process's stdout or stderr and sent to the server."""

    def __init__(self, client: Client, job_id: str, shard: int) -> None:
        self.client = client
        self.job_id = job_id
        self.shard = shard
        self._queue: queue.Queue[LogLine | None] = queue.Queue(QUEUE_LINES)
        self._sender = threading.Thread(target=self._send, name="logs", daemon=True)
        self._warned = False
        self._sender.start()

    def line(self, stream: str, text: str) -> None:
        print(text, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)
        self._queue.put(LogLine(self.job_id, self.shard, time.time(), stream, text[:MAX_LOG_TEXT]))

    def close(self) -> None:
        """Sends what is left and stops."""
        self._queue.put(None)
        self._sender.join()

    def _send(self) -> None:
        done = False
        while not done:
            batch: list[LogLine] = []
            deadline = time.monotonic() + BATCH_SECONDS
            while len(batch) < BATCH_LINES:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            if batch:
                self._put(batch)

    def _put(self, batch: list[LogLine]) -> None:
        try:
            self.client.put_logs(batch)
        except PfsError as err:  # the job goes on; its logs stay on this worker's stdout and stderr
            if not self._warned:
                print(f"job-shim: cannot send logs to the server: {err}", file=sys.stderr, flush=True)
                self._warned = True
