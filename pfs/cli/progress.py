"""Progress bars for long transfers: shown on a terminal, silent when piped."""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def drawn() -> bool:
    """Whether progress is drawn: on a terminal only."""
    return sys.stderr.isatty()


@contextmanager
def progress(total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """Yields a callback that advances a byte counter drawn on stderr, if stderr is a terminal."""
    if not drawn():
        yield lambda n: None
        return
    from tqdm import tqdm  # here, not at the top: it costs every command 70 ms to import

    with tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        yield bar.update


@contextmanager
def phases(label: str) -> Iterator[Callable[[str, int, int], None]]:
    """Yields a callback that draws "LABEL: PHASE" with a count, DONE of TOTAL (0: not known yet), on stderr,
    if stderr is a terminal."""
    if not drawn():
        yield lambda phase, done, total: None
        return
    from tqdm import tqdm

    with tqdm(desc=label, leave=False) as bar:
        def show(phase: str, done: int, total: int) -> None:
            bar.set_description(f"{label}: {phase}", refresh=False)
            bar.total = total or None
            bar.n = done
            bar.refresh()

        yield show
