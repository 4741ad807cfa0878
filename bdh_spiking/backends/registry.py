"""The backends, what each one promises (its contract), and ``simulate``, which checks a request
against the contract once, before any work, so that no backend re-checks (or skips) it.

A backend module is imported only when it runs, so a missing simulator fails only then, with the
pip extra that installs it. The registry knows no conversion: a float network asked for mode
'fixed-point' is quantized here by the semantics' quantizer (with a warning).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

import numpy as np
import torch

from ..device import resolve_device
from ..errors import BackendUnavailable, ConfigError
from ..semantics import Plasticity, SimSettings, check_chunk, is_int
from ..semantics.ladder import parse_ladder

RECORDABLE = ("counts", "margins", "decoded", "state")
BIO_RECORDABLE = ("spikes", "v", "weights")
BRIAN2_BIO_OPTIONS = ("params_file", "monitor_neurons", "monitor_dt_ms", "seed", "dt_ms", "token_ms", "schedule",
                      "tau_m_ms", "t_ref_ms", "max_rate_hz", "max_rate", "v_start", "noise", "tau_syn_ms", "rule",
                      "tau_pre_ms", "tau_post_ms", "ladder", "graded_dt_ms", "dendrite_dt_ms", "tau_gate_ms",
                      "tau_elig_ms", "plastic_read", "brian2_device", "threads")
# rungs local-plasticity and divisive-norm (issue 16): their parameters by name too
BRIAN2_BIO_OPTIONS += ("w_max", "tau_decay_ms", "local_payload", "norm_sigma", "tau_pool_ms", "subtract_mean")
F64 = (torch.float64,)
FLOATS = (torch.float64, torch.float32)


@dataclasses.dataclass(frozen=True)
class Contract:
    """What a backend runs: modes, devices, dtypes (of mode 'discrete'; 'fixed-point' is int64
    whatever is asked), options per mode, and what it can record per mode."""

    module: str
    package: str | None  # the simulator it imports (None: torch only)
    extra: str | None  # the pip extra that installs it
    modes: tuple
    devices: tuple
    dtypes: tuple
    options: dict  # mode -> option names
    records: dict = dataclasses.field(default_factory=dict)  # mode -> recordable keys (default RECORDABLE)
    default_dtypes: dict = dataclasses.field(default_factory=dict)  # device type -> dtype when none is asked

    def default_dtype(self, device: torch.device):
        """The dtype of ``simulate(..., dtype=None)`` on this device (float64 unless the contract says)."""
        return self.default_dtypes.get(device.type, torch.float64)

    def recordable(self, mode: str) -> tuple:
        return self.records.get(mode, RECORDABLE)


CONTRACTS = {
    "reference": Contract("bdh_spiking.backends.reference", None, None, ("discrete", "fixed-point"),
                          ("cpu", "cuda"), FLOATS, {"discrete": ("stepwise", "chunk"), "fixed-point": ()}),
    "snntorch": Contract("bdh_spiking.backends.snntorch_backend", "snntorch", "snntorch", ("discrete",),
                         ("cpu", "cuda"), FLOATS, {"discrete": ("chunk", "stepwise", "event_driven")},
                         default_dtypes={"cuda": torch.float32}),
    "norse": Contract("bdh_spiking.backends.norse_backend", "norse", "norse", ("discrete",),
                      ("cpu", "cuda"), FLOATS, {"discrete": ("chunk", "stepwise", "event_driven")},
                      default_dtypes={"cuda": torch.float32}),
    "lava": Contract("bdh_spiking.backends.lava", "lava", "lava", ("discrete", "fixed-point"), ("cpu",), F64,
                     {"discrete": ("save_lava_dir", "lava_graph"), "fixed-point": ("save_lava_dir", "lava_graph")}),
    "brian2": Contract("bdh_spiking.backends.brian2", "brian2", "brian2", ("discrete", "biophysical"), ("cpu",), F64,
                       {"discrete": ("target", "cache_dir"),
                        "biophysical": ("target", "cache_dir") + BRIAN2_BIO_OPTIONS},
                       {"biophysical": RECORDABLE + BIO_RECORDABLE}),
}
BACKENDS = {name: (c.module, c.extra, c.package) for name, c in CONTRACTS.items()}


def backend_names() -> list[str]:
    return list(CONTRACTS)


def contract(name) -> Contract:
    if name not in CONTRACTS:
        raise ConfigError(f"unknown backend {name!r}: valid backends are {', '.join(CONTRACTS)} (or 'all' alone)")
    return CONTRACTS[name]


def parse_backends(spec) -> list[str]:
    """'reference', 'a,b' or 'all' (every backend whose module exists and simulator imports)."""
    names = list(spec) if isinstance(spec, (list, tuple)) else [s.strip() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise ConfigError(f"no backend named in {spec!r}: name one or more of {', '.join(CONTRACTS)}, or 'all'")
    if names == ["all"]:
        return [n for n in CONTRACTS if available(n)]
    if "all" in names:
        raise ConfigError("'all' stands alone: name backends one by one (e.g. reference,lava) or use 'all'")
    for n in names:
        contract(n)
    if len(set(names)) != len(names):
        raise ConfigError(f"backend named twice in {spec!r}")
    return list(names)


def available(name: str) -> bool:
    try:
        load_backend(name)
        return True
    except BackendUnavailable:
        return False


def load_backend(name: str):
    c = contract(name)
    if c.package is not None and importlib.util.find_spec(c.package) is None:
        raise BackendUnavailable(f"backend {name!r} needs the {c.package} simulator: "
                                 f"pip install 'bdh-spiking[{c.extra}]'")
    try:
        return importlib.import_module(c.module)
    except ModuleNotFoundError as exc:
        if exc.name == c.module:
            raise BackendUnavailable(f"backend {name!r} is not part of this bdh-spiking version yet") from None
        raise BackendUnavailable(f"backend {name!r} could not import {exc.name}: "
                                 f"pip install 'bdh-spiking[{c.extra}]'") from None


# -- normalising a request --------------------------------------------------------------------------
def normalize_ids(token_ids, vocab: int) -> torch.Tensor:
    """Token ids (T,) or (B, T) of integers in [0, vocab) -> int64 (B, T); anything else refused."""
    ids = token_ids if isinstance(token_ids, torch.Tensor) else torch.as_tensor(np.asarray(token_ids))
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ConfigError(f"token ids must be integers, got dtype {str(ids.dtype).replace('torch.', '')}")
    ids = ids.to(torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
        raise ConfigError(f"token ids must have shape (T,) or (B, T) with B, T >= 1, got {tuple(ids.shape)}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ConfigError(f"token ids must lie in [0, {vocab})")
    return ids


def normalize_record(record, allowed: tuple) -> tuple:
    """('counts',) from 'counts' or any iterable of names; unknown names refused."""
    keys = (record,) if isinstance(record, str) else tuple(record or ())
    if not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"record takes names ({', '.join(allowed)}), got {record!r}")
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ConfigError(f"cannot record {unknown}: choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(keys))


def normalize_options(name: str, mode: str, options: dict) -> dict:
    allowed = contract(name).options.get(mode, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        other = {m for m, names in contract(name).options.items() if set(unknown) <= set(names)}
        where = f" (they belong to mode {', '.join(sorted(other))})" if other else ""
        raise ConfigError(f"unknown options {unknown} for the {name} backend in mode {mode!r}{where}; "
                          f"it takes: {', '.join(allowed) or 'none'}")
    out = dict(options)
    if "chunk" in out:
        out["chunk"] = check_chunk(out["chunk"])
    if "lava_graph" in out and out["lava_graph"] not in ("fused", "explicit"):
        raise ConfigError(f"option lava_graph must be 'fused' or 'explicit', got {out['lava_graph']!r}")
    if out.get("ladder") is not None:  # the fidelity ladder's rungs (mode biophysical)
        out["ladder"] = parse_ladder(out["ladder"])
    if out.get("brian2_device") is not None or out.get("threads") is not None:  # devices: before any work
        from ..semantics.ladder import DEFAULT_RUNG
        from .brian2.devices import check_device

        check_device(out.get("brian2_device"), (out.get("ladder") or (DEFAULT_RUNG,))[-1], out.get("threads"))
    for flag in ("stepwise", "event_driven"):
        if flag in out and not isinstance(out[flag], bool):
            raise ConfigError(f"option {flag} must be True or False, got {out[flag]!r}")
    return out


def check_request(name: str, settings: SimSettings, device: torch.device, dtype) -> Contract:
    c = contract(name)
    if settings.mode not in c.modes:
        raise ConfigError(f"the {name} backend runs mode(s) {', '.join(repr(m) for m in c.modes)}, "
                          f"not {settings.mode!r}")
    if device.type not in c.devices:
        raise ConfigError(f"the {name} backend runs on {' or '.join(c.devices)} only (device {str(device)!r} asked for)")
    if settings.mode != "fixed-point" and dtype not in c.dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in c.dtypes)
        raise ConfigError(f"the {name} backend computes in {names} (dtype {str(dtype).replace('torch.', '')} "
                          "asked for)")
    return c


def simulate(net, token_ids, backend: str = "reference", timesteps: int = 8, coding: str = "multispike",
             mode: str = "discrete", device="cpu", record=(), plasticity=None, max_spikes: int = 4,
             dtype=None, progress: bool = False, log=None, **options):
    """Runs ``net`` on token ids (T,) or (B, T) and returns a SimulationResult: logits (B,T,V),
    per-token event statistics, event totals, and the records asked for ('counts', 'margins',
    'decoded', 'state'; Brian2's biophysical mode also 'spikes', 'v', 'weights').

    Everything is checked here, before any work: settings, backend contract (mode, device, dtype,
    options), records, plasticity switches, token ids and the network itself. dtype None: the
    backend's default for the device (float64; snnTorch and Norse on CUDA: float32), stated in
    ``result.settings["dtype"]``."""
    settings = SimSettings(timesteps=timesteps, coding=coding, max_spikes=max_spikes, mode=mode).validate()
    dev = torch.device(resolve_device(device))
    if dtype is None:
        dtype = contract(backend).default_dtype(dev)
    c = check_request(backend, settings, dev, dtype)
    keys = normalize_record(record, c.recordable(mode))
    opts = normalize_options(backend, mode, options)
    plast = Plasticity.coerce(plasticity)
    net.validate()
    ids = normalize_ids(token_ids, net.dims.V)
    if plast.perturbed:
        if backend != "reference" or mode != "discrete":
            raise ConfigError("the plasticity switches noise and lesion are implemented by the reference "
                              f"backend in mode 'discrete' only (asked: {backend}, mode {mode!r})")
        plast.check_lesion(net.dims, ids.shape[0])
    how = None
    if mode == "fixed-point":
        from ..semantics.quantize import ensure_quantized

        net, how = ensure_quantized(net, log)
    module = load_backend(backend)
    result = module.simulate(net, ids, settings, device=dev, record=keys, plasticity=plast, dtype=dtype,
                             progress=progress, **opts)
    if how is not None:
        result.settings["quantization"] = how
    return result


__all__ = ["CONTRACTS", "Contract", "simulate", "backend_names", "parse_backends", "available", "load_backend",
           "RECORDABLE", "BIO_RECORDABLE", "is_int"]
