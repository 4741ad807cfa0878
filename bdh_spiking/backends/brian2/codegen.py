"""Brian2 code generation set-up: the target (cython or numpy), its cache and the compiler fallback.

Both modes configure Brian2 here before building anything: float64 everywhere, and compiled code
built without -ffast-math and FMA contraction, so that v + I, S + x * q etc. round exactly as
torch does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import ConfigError

TARGETS = ("auto", "cython", "numpy")
# overrides what target 'auto' means (CI sets numpy: the cold cython compile takes ~2 minutes)
TARGET_ENV = "BDH_SPIKING_BRIAN2_TARGET"
EXACT_GCC_ARGS = ["-w", "-O2", "-fno-fast-math", "-ffp-contract=off", "-std=c++11"]
# standalone projects are built for this machine's CPU (their cache key names it): -O3 -march=native
# keep IEEE rounding with the same two flags (no fast-math, no FMA contraction); ~20% faster there
STANDALONE_GCC_ARGS = ["-w", "-O3", "-march=native", "-fno-fast-math", "-ffp-contract=off", "-std=c++11"]

_CYTHON_OK: dict = {}  # cache dir -> (works, reason): the test compile runs (and warns) once per process
_COLD_NOTICE: set = set()  # cache dirs whose "compiling" notice was printed


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bdh-spiking" / "brian2"


def _cython_works(cache: str) -> tuple[bool, str]:
    """(works, reason); the first failure in a process also warns (one line), later calls do not."""
    if cache not in _CYTHON_OK:
        import logging

        from brian2.codegen.runtime.cython_rt.cython_rt import CythonCodeObject

        # without a compiler Brian2 logs several multi-line warnings; ours is the one line below
        loggers = [logging.getLogger(n) for n in ("brian2.codegen.runtime.cython_rt.cython_rt",
                                                  "brian2.codegen.cpp_prefs")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            ok = bool(CythonCodeObject.is_available())
        except Exception:  # noqa: BLE001 - any failure means "no working compiler"
            ok = False
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
        _CYTHON_OK[cache] = (ok, "" if ok else "a test compilation with the C compiler failed")
        if not ok:
            import warnings

            warnings.warn("brian2: cython target unavailable (a test compilation with the C compiler failed; is a "
                          "C compiler installed?): falling back to the numpy target, which is several times slower",
                          RuntimeWarning, stacklevel=4)
    return _CYTHON_OK[cache]


def check_target(target: str | None = "auto") -> str:
    """Validates a target name and, for 'auto', the environment variable; compiles nothing (the CLIs
    call it before any work)."""
    target = target or "auto"
    if target not in TARGETS:
        raise ConfigError(f"unknown brian2 codegen target {target!r}: use one of {', '.join(TARGETS)}")
    if target == "auto":
        env = os.environ.get(TARGET_ENV, "").strip()
        if env and env not in TARGETS:
            raise ConfigError(f"{TARGET_ENV}={env!r} is not a brian2 codegen target: use one of {', '.join(TARGETS)}")
        target = env or "auto"
    return target


def resolve_target(target: str | None, cache_dir=None) -> str:
    """The codegen target to use: 'auto' (the default) is cython when a C compiler works, else
    numpy with a warning; an explicit 'cython' without a compiler also falls back, with a warning.
    The environment variable BDH_SPIKING_BRIAN2_TARGET sets what 'auto' means."""
    target = check_target(target)
    if target == "numpy":
        return "numpy"
    cache = configure("cython", cache_dir)
    if not _cython_works(cache)[0]:
        return "numpy"
    if cache not in _COLD_NOTICE and len(list(Path(cache).glob("*.so"))) <= 1:  # only the test compile: cold
        import sys

        _COLD_NOTICE.add(cache)
        print(f"brian2: compiling the network's code into {cache} (first run: a few minutes; later runs "
              "reuse it)", file=sys.stderr, flush=True)
    return "cython"


def configure(target: str, cache_dir) -> str:
    """Sets Brian2's global preferences for a resolved target; returns the cache directory."""
    from brian2 import prefs

    prefs.codegen.target = target
    prefs.core.default_float_dtype = np.float64
    cache = str(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if target == "cython":
        Path(cache).mkdir(parents=True, exist_ok=True)
        prefs.codegen.runtime.cython.cache_dir = cache
        prefs.codegen.cpp.extra_compile_args_gcc = list(EXACT_GCC_ARGS)
    return cache
