"""The Brian2 backend: modes 'discrete' (exact, ``discrete``) and 'biophysical' (LIF neurons in
physical units, ``biophysical``), on one codegen set-up (``codegen``) and one wiring
(``topology``). Brian2 itself is imported only when a network is built."""

from __future__ import annotations

import torch

from ...semantics import SimSettings
from ..base import SimulationResult
from .codegen import TARGET_ENV, TARGETS, check_target, default_cache_dir, resolve_target
from .discrete import run_population

NAME = "brian2"

__all__ = ["simulate", "check_target", "resolve_target", "default_cache_dir", "run_population", "TARGETS",
           "TARGET_ENV"]


def simulate(net, ids, settings: SimSettings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress=False, **options) -> SimulationResult:
    """The backend entry point (called by ``backends.simulate``, which has checked every input but
    the codegen target and the biophysical parameters' values, which only Brian2 knows)."""
    options = dict(options, target=resolve_target(options.get("target"), options.get("cache_dir")))
    if settings.mode == "biophysical":
        from .biophysical import simulate_biophysical

        return simulate_biophysical(net, ids, settings, plasticity, record, progress, options)
    from .discrete import simulate_discrete

    return simulate_discrete(net, ids, settings, plasticity, record, progress, options)
