"""A copy in memory of records the metadata store keeps, read again every EVERY seconds by a thread of its own, so
that checks on every call (tokens, roles) cost no transaction, and what another server of the cluster changed
counts here within EVERY seconds (what this server changes, it puts in its copy at once: reload())."""

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
EVERY = 1.0  # seconds


class Mirror(Generic[T]):
    def __init__(self, load: Callable[[], T], name: str) -> None:
        self._load = load
        self._name = name
        self.value: T = load()
        self._stopping = threading.Event()
        threading.Thread(target=self._refresh, name=name, daemon=True).start()

    def reload(self) -> None:
        self.value = self._load()

    def close(self) -> None:
        self._stopping.set()

    def _refresh(self) -> None:
        while not self._stopping.wait(EVERY):
            try:
                self.reload()
            except Exception as err:  # noqa: BLE001 - the copy as last read serves until the store is back
                log.debug("cannot read the %s again: %s", self._name, err)
