"""Atomic file writing: a reader never sees a half-written file, an interrupt leaves none."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside ``path``; renames it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yields a fresh temporary directory beside ``path``; on success it replaces ``path`` (an
    existing directory there is moved aside, then removed), on failure it is removed and ``path``
    keeps its old state. A reader sees the old directory or the complete new one."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "dir")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """fig.savefig to a temporary file beside ``path``, renamed over it on success."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return path


def finite_json(obj, where: str = "", replaced: list | None = None):
    """``obj`` with every NaN/Inf float replaced by None; the JSON paths replaced are appended
    to ``replaced`` (so the writer can say why a value is null)."""
    import math

    replaced = [] if replaced is None else replaced
    if isinstance(obj, dict):
        return {k: finite_json(v, f"{where}.{k}" if where else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{where}[{i}]", replaced) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        replaced.append(f"{where} ({obj})")
        return None
    return obj


def json_text(obj, default=None, indent: int = 1) -> str:
    """Strict JSON (``allow_nan=False``): non-finite floats become null, and a top-level mapping
    gains ``"null_not_finite"`` listing where and what they were."""
    plain = json.loads(json.dumps(obj, default=default, allow_nan=True))
    replaced: list = []
    clean = finite_json(plain, replaced=replaced)
    if replaced and isinstance(clean, dict):
        clean["null_not_finite"] = {"why": "these values were NaN or infinite, which JSON cannot hold",
                                    "fields": replaced}
    return json.dumps(clean, indent=indent, allow_nan=False)


@contextlib.contextmanager
def staged_files(directory: str | os.PathLike):
    """Yields a temporary directory beside ``directory``; on success each file written there is
    renamed into ``directory`` (created if need be), on failure none is. For outputs that share a
    directory with other files (plots): every file is complete before any replaces an old one."""
    import shutil

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name or 'out'}.", suffix=".part", dir=directory.parent))
    try:
        yield tmp
        directory.mkdir(parents=True, exist_ok=True)
        for item in sorted(tmp.iterdir()):
            os.replace(item, directory / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
