"""Out-of-range activations: how much of the dense model's x and y activation mass on a text lies
above the top level the converted neurons can represent, and the warning when any does.

A neuron with threshold theta, T steps and at most K spikes per step (rate coding: K = 1) decodes
at most K theta (K spikes at every step, whatever T is); graded coding has no top level. What lies
above is clipped. x neurons encode a = ReLU(x E); y neurons encode b = ReLU(LN(u) E_v) (gating
'product') or a * b (gating 'gain'). Computed from the dense reference activations (float64) and
the network's thresholds, so it measures the text, not a simulator.
"""

from __future__ import annotations

import torch

from .semantics.activation import clipped_mass


def top_spikes(coding: str, max_spikes: int) -> int | None:
    """K of the top level K theta: max_spikes for multispike, 1 for rate, None (no top) for graded."""
    return {"multispike": int(max_spikes), "rate": 1}.get(coding)


def clipping(dense, net, coding: str, max_spikes: int) -> dict:
    """clipped_fraction (x and y mass together), per population, and the share of activation
    values (not mass) above the top level. dense: ``dense_probe.DenseReference``."""
    K = top_spikes(coding, max_spikes)
    y_values = dense.b if net.gating == "product" else dense.g
    pops = {"x": (dense.a, net.arrays["theta_x"]), "y": (y_values, net.arrays["theta_y"])}
    out, over_all, total_all = {}, 0.0, 0.0
    for pop, (values, theta) in pops.items():
        if K is None or values is None:
            out[f"clipped_fraction_{pop}"] = 0.0 if K is None else None
            out[f"clipped_values_{pop}"] = 0.0 if K is None else None
            continue
        th = torch.as_tensor(theta, dtype=values.dtype)  # L,H,N against B,T,L,H,N
        over, total = clipped_mass(values, th, K)
        over_all, total_all = over_all + over, total_all + total
        out[f"clipped_fraction_{pop}"] = over / total if total > 0 else 0.0
        out[f"clipped_values_{pop}"] = float((values > K * th).double().mean())
    out["clipped_fraction"] = over_all / total_all if total_all > 0 else 0.0
    return out


def _pct(v: float) -> str:
    """A share as a percentage that never reads 0.000% when it is not 0."""
    return f"{v:.3%}" if v == 0 or v >= 5e-6 else f"{100 * v:.1e}%"


def clipping_warning(run: dict, text_name: str) -> str | None:
    """A one-line warning when the evaluation activations exceed the range the thresholds represent."""
    frac = run.get("clipped_fraction") or 0.0
    if frac <= 0:
        return None
    return (f"warning: on {text_name}, {_pct(frac)} of the x/y activation mass lies above the top level the "
            f"thresholds represent ({run['coding']}, K={top_spikes(run['coding'], run.get('max_spikes') or 1)}: "
            f"x {_pct(run.get('clipped_fraction_x') or 0.0)}, y {_pct(run.get('clipped_fraction_y') or 0.0)}) and is clipped; "
            "activations exceed the calibrated range (a text unlike the calibration text? see docs/spiking-aware.md)")
