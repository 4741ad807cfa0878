"""Backends: one leaf per simulator, each lowering the same network; ``registry`` holds their
contracts and ``simulate``; ``base`` what every backend returns."""

from ..device import resolve_device  # noqa: F401 (part of this package's interface)
from .registry import (BACKENDS, CONTRACTS, available, backend_names, contract, load_backend,  # noqa: F401
                       parse_backends, simulate)

__all__ = ["simulate", "backend_names", "parse_backends", "available", "load_backend", "contract", "CONTRACTS",
           "BACKENDS"]
