"""``estimate``: runs the network on each backend, counts its events, prices them on each profile,
and adds the dense baselines; returns an ``EnergyReport``."""

from __future__ import annotations

import platform

import torch

from .. import __version__
from ..profiles import list_profiles, load_profile
from .counts import compare_event_counts, dense_activity, dense_macs, spiking_counts
from .pricing import (BREAK_EVEN, DENSE_PROFILES, DENSE_VARIANTS, FALLBACK_PROFILE, fallback_profile,
                      parse_profiles, price_dense, price_spiking)
from .report import EnergyReport


def estimate(model, net, token_ids, backends=("reference",), profiles="all", timesteps: int = 8,
             coding: str = "rate", mode: str = "discrete", max_spikes: int = 4, device="cpu",
             dtype=None, text_name: str = "token ids", progress: bool = False,
             backend_options: dict | None = None, log=None) -> EnergyReport:
    """Simulates ``net`` on every backend, counts events, prices them per profile; dense baselines too.

    In mode 'biophysical' ``timesteps`` means nothing: rates divide by the simulator's own steps."""
    from ..backends import parse_backends
    from ..distributed import simulate_sharded, world_size

    from ..backends.registry import normalize_ids

    ids = normalize_ids(token_ids, net.dims.V)  # float ids refused, not truncated
    backends = parse_backends(backends)
    profs = parse_profiles(profiles)
    fallback = fallback_profile()
    results, counts = {}, {}
    for backend in backends:
        if log:
            log(f"running {backend}: coding={coding} T={timesteps} mode={mode} ({int(ids.numel())} tokens)")
        opts = (backend_options or {}).get(backend, {})
        results[backend] = simulate_sharded(net, ids, backend=backend, timesteps=timesteps, coding=coding,
                                            mode=mode, device=device, max_spikes=max_spikes, dtype=dtype,
                                            progress=progress, **opts)  # split across torchrun ranks, if any
        counts[backend] = spiking_counts(results[backend], net)
    rows = []
    for backend in backends:
        for p in sorted(profs, key=lambda p: p.kind != "neuromorphic"):  # stable: keeps the user's order
            row = price_spiking(counts[backend], p, fallback)
            row["backend"] = backend
            rows.append(row)
    if log:
        log("measuring activation density of the dense model")
    density = dense_activity(model, ids) if model is not None else None
    dense_profiles = [load_profile(n) for n in DENSE_PROFILES if n in list_profiles()]
    keys = {(p.key, str(p.path)) for p in dense_profiles}
    dense_profiles += [p for p in profs if p.kind == "conventional" and (p.key, str(p.path)) not in keys]
    rows += dense_rows(net.dims, dense_profiles, int(ids.shape[1]), density, fallback)
    add_ratios(rows)
    meta = {
        "bdh_spiking_version": __version__,
        "torch": torch.__version__,
        "host": platform.node(),
        "model": getattr(model, "provenance", {}).get("checkpoint", "in-memory model") if model is not None
        else net.provenance.get("checkpoint"),
        "dims": net.dims.as_dict(),
        "gating": net.gating,
        "text": {"name": text_name, "tokens": int(ids.numel()), "sequences": int(ids.shape[0]),
                 "seq_len": int(ids.shape[1])},
        "timesteps": timesteps if mode != "biophysical" else None,
        "coding": coding,
        "mode": mode,
        "max_spikes": max_spikes if coding == "multispike" else None,
        "backends": backends,
        "profiles": [{"key": p.key, "name": p.name, "kind": p.kind, "path": str(p.path)} for p in profs],
        "dense_profiles": [p.key for p in dense_profiles],
        "dense_density": density,
        "dense_macs_per_token": {"recurrent": dense_macs(net.dims, "recurrent"),
                                 "parallel": dense_macs(net.dims, "parallel", int(ids.shape[1]))},
        "break_even": BREAK_EVEN,
        "cross_backend": compare_event_counts(results),
        "counts": {b: counts[b] for b in backends},
        "counting_rules": "docs/energy.md",
        "world_size": world_size(),
    }
    return EnergyReport(meta, rows)


def dense_rows(dims, dense_profiles, seq_len: int, density, fallback) -> list:
    """The dense model's variants priced on each conventional profile (activation-sparse: measured only)."""
    rows = []
    for p in dense_profiles:
        for variant in DENSE_VARIANTS:
            if variant.endswith("sparse-fp32") and density is None:
                continue
            rows.append(price_dense(dims, p, variant, seq_len=seq_len, density=density, fallback=fallback))
    return rows


def add_ratios(rows: list) -> None:
    """Each row's energy (or lower bound) over the dense recurrent FP32 model's on digital45nm."""
    ref = next((r for r in rows if r["kind"] == "dense" and r["variant"] == "recurrent-fp32"
                and r["profile"] == FALLBACK_PROFILE), None)
    for r in rows:
        e = r["energy_per_token_j"] if r["energy_per_token_j"] is not None else r["energy_per_token_lower_bound_j"]
        r["ratio_vs_dense_45nm"] = (e / ref["energy_per_token_j"]) if ref and ref["energy_per_token_j"] else None
