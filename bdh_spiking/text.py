"""Byte-level text: reading corpora, the official train/validation split, shipped samples.

The package ships two short, disjoint excerpts of the Tiny Shakespeare corpus so that
conversion and evaluation always have text to work on (no download, no ../shared):
``calibration.txt`` comes from the training split, ``heldout.txt`` from the validation split.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import TextError

TRAIN_FRACTION = 0.9  # the official split: the last 10% is validation
SHIPPED = {"calibration": "calibration.txt", "heldout": "heldout.txt"}


def shipped_text_path(name: str) -> Path:
    return Path(str(resources.files("bdh_spiking") / "data" / SHIPPED[name]))


def read_bytes(path: str | Path, min_len: int = 1, what: str = "text") -> np.ndarray:
    """A file as uint8 bytes; any byte is valid text, but there must be enough of it."""
    path = Path(path)
    if not path.exists():
        raise TextError(f"{what} file not found: {path}")
    if path.is_dir():
        raise TextError(f"{what} path is a directory: {path}")
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if len(data) == 0:
        raise TextError(f"{what} file is empty: {path}")
    if len(data) < min_len:
        raise TextError(f"{what} file {path} has {len(data)} bytes, fewer than the {min_len} needed")
    return data


def split(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = int(TRAIN_FRACTION * len(data))
    return data[:cut], data[cut:]


def to_ids(data: bytes | str | np.ndarray) -> torch.Tensor:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(bytes(data), dtype=np.uint8)
    return torch.from_numpy(np.asarray(data, dtype=np.int64).copy())


def windows(data: np.ndarray, length: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of ``length`` bytes, as a (W, length) int64 tensor."""
    count = len(data) // length
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise TextError(f"text of {len(data)} bytes is shorter than one sequence of {length}")
    return to_ids(data[: count * length]).view(count, length)


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8", errors="backslashreplace")
