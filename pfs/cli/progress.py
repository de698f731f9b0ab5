"""Progress bars for long transfers: shown on a terminal, silent when piped."""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress(total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """Yields a callback that advances a byte counter drawn on stderr, if stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update
