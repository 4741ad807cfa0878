"""Progress bars that do not flood logs: on a terminal a tqdm bar redrawn in place; when stderr
is not a terminal (a pipe, a log file, CI) one plain line every ``LOG_INTERVAL_S`` seconds."""

from __future__ import annotations

import sys

LOG_INTERVAL_S = 30.0  # seconds between progress lines when stderr is not a terminal


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, desc: str = "", total=None, disable: bool = False, leave: bool = False, **kwargs):
    """tqdm(iterable, ...) with the project's rule: redraws on a terminal, periodic lines elsewhere."""
    from tqdm.auto import tqdm

    stream = sys.stderr
    if not _is_terminal(stream):
        kwargs.update(file=_Lines(stream), mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S,
                      ncols=100, ascii=True, dynamic_ncols=False)
        leave = False
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=leave, **kwargs)
