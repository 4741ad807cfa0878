"""Progress bars that do not flood logs: on a terminal a tqdm bar redrawn in place; when stderr
is not a terminal (a pipe, a log file, CI) one plain line at most every ``LOG_INTERVAL_S``
seconds, plus the first and the last state of each bar."""

from __future__ import annotations

import sys
import time

LOG_INTERVAL_S = 30.0  # seconds between progress lines when stderr is not a terminal


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines, at most one per
    ``interval`` seconds; ``finish`` writes the last state if it was held back."""

    def __init__(self, stream, interval: float):
        self.stream, self.interval = stream, interval
        self.last_emit, self.pending = None, None

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if not line:
            return
        now = time.monotonic()
        if self.last_emit is None or now - self.last_emit >= self.interval:
            self.stream.write(line + "\n")
            self.last_emit, self.pending = now, None
        else:
            self.pending = line

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        if self.pending:
            self.stream.write(self.pending + "\n")
            self.stream.flush()
            self.pending = None


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, desc: str = "", total=None, disable: bool = False, leave: bool = False, **kwargs):
    """tqdm(iterable, ...) with the project's rule: redraws on a terminal, periodic lines elsewhere."""
    if _is_terminal(sys.stderr):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, **kwargs)
    from tqdm import tqdm

    class _Periodic(tqdm):
        def close(self):
            super().close()
            lines.finish()

    lines = _Lines(sys.stderr, LOG_INTERVAL_S)
    kwargs.update(file=lines, mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, ncols=100, ascii=True,
                  dynamic_ncols=False)
    return _Periodic(iterable, desc=desc, total=total, disable=disable, leave=False, **kwargs)
