"""Why rung ``psc`` is far from the dense model: its three likely causes separated by experiment
(docs/spiking-semantics.md, "Rung 3, psc", Measured).

(1) the activation a psc neuron passes on is the LIF curve theta * f(1 + g I) / r_max, not ReLU;
(2) a neuron's filtered spike train is a noisy rate estimate (tau_syn, tau_gate, tau_elig), and the
    Hebbian write multiplies two of them once per byte;
(3) the layers settle concurrently within a byte (deeper layers see their input for less of it).

The reference for (2) and (3) is the dense model with cause (1) put in: the dense form of the psc
rung (``semantics/constraints.py``, ``--constraints psc``: x and y activations replaced by the curve's
stationary rate, read linearly; no spikes, no dynamics). Every psc run is compared with the plain
dense model (top-1, dCE, KL: what the ladder table reports) and with that curve model (top-1, KL,
per-layer decoded correlation of x and of the gated y): what is left against the curve model is
(2) + (3). Longer ``token_ms`` with the filters fixed gives the layers more time to settle and
leaves the filters' noise at the end of a byte unchanged, so it isolates (3); longer filter time
constants (with a byte long enough to settle through them) reduce (2).

    python benchmarks/psc_fidelity.py [--bytes 8] [--settings base,tok200,...] [--threads 1]
        [--checkpoint bdh_spiking/data/default_model.pt] [--json out.json]

Prints one table row per setting (the CPU named), plus the dense references measured in the same
run. The psc runs are deterministic (noise 0).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from bdh_spiking.backends import simulate
from bdh_spiking.backends.brian2.params import load_params
from bdh_spiking.checkpoint import load_checkpoint
from bdh_spiking.conversion import convert
from bdh_spiking.dense_probe import dense_reference
from bdh_spiking.semantics import fold_weights
from bdh_spiking.semantics.activation import Activation, replaced
from bdh_spiking.semantics.constraints import RungActivation, RungNeuron
from bdh_spiking.text import read_bytes

# name -> psc parameter overrides (token_ms, filter time constants); defaults: 100, 5, 20, 20 ms
SETTINGS = {
    "base": {},
    "tok200": {"token_ms": 200.0},
    "tok400": {"token_ms": 400.0},
    "slow_e": {"tau_gate_ms": 80.0, "tau_elig_ms": 80.0},
    "tok400_slow_e": {"token_ms": 400.0, "tau_gate_ms": 80.0, "tau_elig_ms": 80.0},
    "tok400_slow_all": {"token_ms": 400.0, "tau_syn_ms": 20.0, "tau_gate_ms": 80.0, "tau_elig_ms": 80.0},
    "tok200_slow_e": {"token_ms": 200.0, "tau_gate_ms": 80.0, "tau_elig_ms": 80.0},
    "tok200_fast_e": {"token_ms": 200.0, "tau_gate_ms": 5.0, "tau_elig_ms": 5.0},
}


class Recording(Activation):
    """Wraps an activation and keeps each layer's x and y outputs (B, H, T, N) of one forward."""

    def __init__(self, inner: Activation):
        self.inner, self.a, self.b = inner, {}, {}

    def x(self, layer, current):
        self.a[layer] = self.inner.x(layer, current)
        return self.a[layer]

    def y(self, layer, current):
        self.b[layer] = self.inner.y(layer, current)
        return self.b[layer]


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    den = float((a * a).sum().sqrt() * (b * b).sum().sqrt())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def logit_measures(ref: torch.Tensor, other: torch.Tensor, ids: torch.Tensor) -> dict:
    tg = ids[:, 1:].reshape(-1)
    ce = lambda lg: float(F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), tg))  # noqa: E731
    lp = F.log_softmax(ref, -1)
    return {"top1": float((ref.argmax(-1) == other.argmax(-1)).double().mean()),
            "dce": (ce(other) - ce(ref)) / ce(ref),
            "kl": float((lp.exp() * (lp - F.log_softmax(other, -1))).sum(-1).mean())}


def curve_reference(model, net, ids: torch.Tensor, params: dict) -> dict:
    """The dense model with the psc rung's dense form (cause 1 alone): logits, x, gated y per layer."""
    w = fold_weights(net, torch.device("cpu"), torch.float64)
    model = copy.deepcopy(model).to(torch.float64).eval()  # as dense_reference: float64, float32 phases
    model.attn.freqs = model.attn.freqs.to(torch.float32)
    act = Recording(RungActivation(RungNeuron.from_params("psc", params, net.dims.L), w["theta_x"], w["theta_y"]))
    with torch.no_grad(), replaced(model, act):
        logits, _ = model(ids)
    L = net.dims.L
    a = torch.stack([act.a[i].transpose(1, 2) for i in range(L)], 2)  # B, T, L, H, N
    g = torch.stack([(act.a[i] * act.b[i]).transpose(1, 2) for i in range(L)], 2)
    return {"logits": logits.double(), "a": a, "g": g}


def run_setting(net, ids, name: str, overrides: dict, threads: int) -> dict:
    started = time.perf_counter()
    res = simulate(net, ids, backend="brian2", mode="biophysical", ladder="psc", record=("counts", "decoded"),
                   threads=threads, **overrides)
    return {"name": name, "overrides": overrides, "result": res, "wall_s": time.perf_counter() - started}


def row(run: dict, dense, curve: dict, ids: torch.Tensor) -> dict:
    res = run["result"]
    logits = res.logits.double()
    rec, L = res.records, res.records["a_hat"].shape[2]
    out = {"setting": run["name"], "overrides": run["overrides"], "wall_s": round(run["wall_s"], 1),
           "vs_dense": logit_measures(dense.logits, logits, ids), "vs_curve": logit_measures(curve["logits"], logits, ids),
           "corr_x_vs_curve": [corr(curve["a"][:, :, i], rec["a_hat"][:, :, i]) for i in range(L)],
           "corr_y_vs_curve": [corr(curve["g"][:, :, i], rec["g_hat"][:, :, i]) for i in range(L)],
           "corr_x_vs_dense": [corr(dense.a[:, :, i], rec["a_hat"][:, :, i]) for i in range(L)],
           "corr_y_vs_dense": [corr(dense.g[:, :, i], rec["g_hat"][:, :, i]) for i in range(L)],
           "rate_hz_median": res.settings.get("rate_hz_median"), "fraction_active": res.settings.get("fraction_active")}
    return out


def fmt_corr(values) -> str:
    return " / ".join(f"{v:.3f}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="bdh_spiking/data/default_model.pt")
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = a.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown} (known: {', '.join(SETTINGS)})")
    model, _ = load_checkpoint(a.checkpoint)
    model.eval()
    net = convert(model, gating="product", design_max_spikes=1)
    data = read_bytes("bdh_spiking/data/heldout.txt")
    ids = torch.tensor(np.asarray(data[: a.bytes], dtype=np.int64))[None]
    dense = dense_reference(model, ids)
    params = load_params()
    curve = curve_reference(model, net, ids, params)
    cause1 = logit_measures(dense.logits, curve["logits"], ids)
    rows = []
    for name in names:
        rows.append(row(run_setting(net, ids, name, SETTINGS[name], a.threads), dense, curve, ids))
        print(f"  done {name} ({rows[-1]['wall_s']} s)", flush=True)
    print(f"psc fidelity: {a.checkpoint}, first {a.bytes} bytes of heldout.txt ({a.bytes - 1} CE targets), "
          f"brian2 cpp_standalone, {a.threads} thread, CPU {platform.processor() or platform.machine()} "
          f"({platform.node()}); defaults token_ms 100, tau_syn 5, tau_gate 20, tau_elig 20 ms, noise 0")
    print(f"cause (1) alone, dense curve model vs dense ReLU: top-1 {100 * cause1['top1']:.1f}%, "
          f"dCE {100 * cause1['dce']:+.2f}%, KL {cause1['kl']:.4f}")
    print("| setting | overrides | top-1 / dCE / KL vs dense | top-1 / KL vs curve model | corr x vs curve (layers) | "
          "corr y vs curve (layers) | corr x / y vs dense (last layer) | median rate | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, c = r["vs_dense"], r["vs_curve"]
        print(f"| {r['setting']} | {r['overrides'] or 'defaults'} | {100 * d['top1']:.1f}% / {100 * d['dce']:+.1f}% / "
              f"{d['kl']:.3f} | {100 * c['top1']:.1f}% / {c['kl']:.3f} | {fmt_corr(r['corr_x_vs_curve'])} | "
              f"{fmt_corr(r['corr_y_vs_curve'])} | {r['corr_x_vs_dense'][-1]:.3f} / {r['corr_y_vs_dense'][-1]:.3f} | "
              f"{r['rate_hz_median']:.0f} Hz | {r['wall_s']} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"checkpoint": a.checkpoint, "bytes": a.bytes, "cause1": cause1, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
