"""Backend registry and ``simulate``. A backend module is imported only when asked for, so a
missing simulator fails only then, with the pip extra that installs it."""

from __future__ import annotations

import importlib

import torch

from ..device import resolve_device  # noqa: F401 (part of this module's interface)
from ..errors import BackendUnavailable, ConfigError
from ..semantics import Plasticity, SimSettings

# name -> (module, pip extra or None, the Python package it needs)
BACKENDS = {
    "reference": ("bdh_spiking.backends.reference", None, None),
    "snntorch": ("bdh_spiking.backends.snntorch_backend", "snntorch", "snntorch"),
    "norse": ("bdh_spiking.backends.norse_backend", "norse", "norse"),
    "lava": ("bdh_spiking.backends.lava_backend", "lava", "lava"),
    "brian2": ("bdh_spiking.backends.brian2_backend", "brian2", "brian2"),
}


def backend_names() -> list[str]:
    return list(BACKENDS)


def parse_backends(spec: str | list | tuple) -> list[str]:
    """'reference', 'a,b' or 'all' (every backend whose module exists and simulator imports)."""
    names = spec if isinstance(spec, (list, tuple)) else [s.strip() for s in str(spec).split(",") if s.strip()]
    if names == ["all"]:
        return [n for n in BACKENDS if available(n)]
    for n in names:
        if n not in BACKENDS:
            raise ConfigError(f"unknown backend {n!r}: valid backends are {', '.join(BACKENDS)} (or 'all')")
    return list(names)


def available(name: str) -> bool:
    try:
        load_backend(name)
        return True
    except BackendUnavailable:
        return False


def load_backend(name: str):
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: valid backends are {', '.join(BACKENDS)} (or 'all')")
    module, extra, package = BACKENDS[name]
    if package is not None and importlib.util.find_spec(package) is None:
        raise BackendUnavailable(f"backend {name!r} needs the {package} simulator: "
                                 f"pip install 'bdh-spiking[{extra}]'")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise BackendUnavailable(f"backend {name!r} is not part of this bdh-spiking version yet") from None
        raise BackendUnavailable(f"backend {name!r} could not import {exc.name}: "
                                 f"pip install 'bdh-spiking[{extra}]'") from None


def simulate(net, token_ids, backend: str = "reference", timesteps: int = 8, coding: str = "multispike",
             mode: str = "discrete", device="cpu", record=(), plasticity=None, max_spikes: int = 4,
             dtype=torch.float64, progress: bool = False, **options):
    """Runs ``net`` on token ids (T,) or (B, T) and returns a SimulationResult:
    logits (B,T,V), per-token event statistics, event totals, and the records asked for
    ('counts', 'margins', 'decoded', 'state')."""
    settings = SimSettings(timesteps=timesteps, coding=coding, max_spikes=max_spikes, mode=mode).validate()
    plast = plasticity if isinstance(plasticity, Plasticity) else Plasticity.from_dict(plasticity)
    ids = torch.as_tensor(token_ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ConfigError(f"token ids must have shape (T,) or (B, T) with T >= 1, got {tuple(ids.shape)}")
    if int(ids.min()) < 0 or int(ids.max()) >= net.dims["V"]:
        raise ConfigError(f"token ids must lie in [0, {net.dims['V']})")
    dev = resolve_device(device)
    module = load_backend(backend)
    return module.simulate(net, ids, settings, device=dev, record=record, plasticity=plast, dtype=dtype,
                           progress=progress, **options)
