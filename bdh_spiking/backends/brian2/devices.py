"""Brian2 devices of mode 'biophysical': runtime (Python drives Brian2's code objects; the codegen
target chooses cython or numpy) or standalone (Brian2 writes the whole network as one C++ program:
cpp_standalone with OpenMP threads, cuda_standalone through brian2cuda), checked before any work.

Only rungs whose network is all Brian2 objects (no NetworkOperation; semantics/ladder.py) can run
standalone. A standalone project is built in a cache directory outside the working tree,
``$BDH_SPIKING_CACHE/brian2/standalone/<hash>`` or ``~/.cache/bdh-spiking/brian2/standalone/<hash>``,
one per network structure (sizes, batch, rung, parameters, threads, Brian2 version, CPU model):
Brian2 rewrites only the files whose text changed, so a second run of the same structure
recompiles nothing."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

from ...errors import ConfigError
from ...semantics.ladder import runs_standalone

DEVICES = ("auto", "runtime", "cpp_standalone", "cuda_standalone")
CACHE_ENV = "BDH_SPIKING_CACHE"
# what 'auto' means for the rungs that can run standalone (tests set runtime: no compile)
DEVICE_ENV = "BDH_SPIKING_BRIAN2_DEVICE"
_WARNED: set = set()


def cxx_compiler() -> str | None:
    """The C++ compiler cpp_standalone would call ($CXX or g++/c++ on PATH), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def check_device(device: str | None, rung: str, threads=None) -> str:
    """The device a run of ``rung`` uses; every refusal is a one-line ConfigError before any work.

    'auto' (None): cpp_standalone for a rung that runs standalone when a C++ compiler is found,
    else runtime (one warning per process when the compiler is missing); always runtime for a
    rung that still needs the NetworkOperation."""
    device = device or "auto"
    if device not in DEVICES:
        raise ConfigError(f"unknown brian2 device {device!r}: use one of {', '.join(DEVICES)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    standalone_ok = runs_standalone(rung)
    if threads is not None and threads > 1 and standalone_ok and device != "runtime" and "threads" not in _WARNED:
        _WARNED.add("threads")
        warnings.warn(f"brian2: with {threads} OpenMP threads the order in which a step's synaptic events are "
                      "summed varies from run to run, so spikes and logits are not reproducible (1 thread is)",
                      RuntimeWarning, stacklevel=3)
    if device == "auto":
        if not standalone_ok:
            return "runtime"
        env = os.environ.get(DEVICE_ENV, "").strip()
        if env and env not in DEVICES:
            raise ConfigError(f"{DEVICE_ENV}={env!r} is not a brian2 device: use one of {', '.join(DEVICES)}")
        if env and env != "auto":
            return check_device(env, rung, threads)
        if cxx_compiler() is None:
            if "nocxx" not in _WARNED:
                _WARNED.add("nocxx")
                warnings.warn("brian2: no C++ compiler found (g++): rung psc runs on the runtime device, "
                              "not cpp_standalone", RuntimeWarning, stacklevel=3)
            return "runtime"
        return "cpp_standalone"
    if device != "runtime" and not standalone_ok:
        raise ConfigError(f"brian2 device {device} needs a network of Brian2 objects only; rung {rung} still "
                          "computes its graded stage in a Python NetworkOperation: use --brian2-device runtime "
                          "(or the ladder from psc on)")
    if device == "cpp_standalone" and cxx_compiler() is None:
        raise ConfigError("brian2 device cpp_standalone needs a C++ compiler (g++ or $CXX); none was found")
    if device == "cuda_standalone" and importlib.util.find_spec("brian2cuda") is None:
        raise ConfigError("brian2 device cuda_standalone needs brian2cuda (pip install 'bdh-spiking[brian2cuda]'; "
                          "untested here: no GPU)")
    return device


def cpu_name() -> str:
    """This machine's CPU model (a standalone build is compiled for it: -march=native)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def standalone_dir(key: dict) -> Path:
    """The build directory of a standalone project: one per network structure (``key``)."""
    import brian2

    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base) / "brian2" / "standalone"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = Path(xdg) / "bdh-spiking" / "brian2" / "standalone"
    text = json.dumps(dict(key, brian2=brian2.__version__, cpu=cpu_name()), sort_keys=True, default=str)
    return root / hashlib.sha256(text.encode()).hexdigest()[:16]


class BuildLock:
    """An exclusive lock on a standalone build directory: two runs of the same network structure
    (two processes, or two threads) share the directory, and concurrent builds corrupt make's files."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".lock"

    def acquire(self) -> "BuildLock":
        self._file = open(self.path, "w")
        fcntl.flock(self._file, fcntl.LOCK_EX)  # blocks until the other run has finished
        return self

    def release(self) -> None:
        try:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._file.close()


class StandaloneSession:
    """set_device(..., build_on_run=False) on entry; ``build()`` compiles (incrementally) and runs the
    project; on exit the device is reinitialised and runtime mode restored, so later runs (and
    other rungs) in the same process start clean."""

    def __init__(self, device: str, directory: Path, threads: int | None, compile_args: list):
        self.device, self.directory, self.threads, self.compile_args = device, Path(directory), threads, compile_args

    def __enter__(self):
        import brian2

        if self.device == "cuda_standalone":
            import brian2cuda  # noqa: F401 - registers the device
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = BuildLock(self.directory).acquire()
        brian2.set_device(self.device, directory=str(self.directory), build_on_run=False)
        brian2.prefs.devices.cpp_standalone.openmp_threads = int(self.threads or 0)
        brian2.prefs.codegen.cpp.extra_compile_args_gcc = list(self.compile_args)
        # Brian2's default is make -j (one compiler per file at once: dozens on a 2-core machine)
        brian2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{min(os.cpu_count() or 1, 4)}"]
        return self

    def build(self):
        from brian2 import device

        device.build(directory=str(self.directory), compile=True, run=True, clean=False, with_output=False)

    def __exit__(self, *exc):
        import brian2
        from brian2 import device

        try:
            device.reinit()
        finally:
            brian2.set_device("runtime")
            brian2.prefs.devices.cpp_standalone.openmp_threads = 0
            self._lock.release()
        return False


def stable_clock(dt, name: str):
    """A Brian2 Clock whose hash is a function of its name. Brian2 writes the clocks of a standalone
    run into main.cpp in the iteration order of a set of clocks; with the default (address-based)
    hash that order changes from run to run, so every run rewrote main.cpp and make recompiled it
    and rescanned every source's dependencies (about 7 s per run on the default model)."""
    import zlib

    import brian2 as b2

    class StableClock(b2.Clock):
        # Brian2 lets a group's own class (not its bases) override its variables: Clock's properties again
        locals().update({k: v for k, v in vars(b2.Clock).items() if isinstance(v, property)})

        def __init__(self, dt, name):
            object.__setattr__(self, "_stable_hash", zlib.crc32(name.encode()))
            super().__init__(dt=dt, name=name)

        def __hash__(self):  # Brian2's instance tracking hashes the clock before __init__ ran
            return self.__dict__.get("_stable_hash", object.__hash__(self))

    return StableClock(dt=dt, name=name)
