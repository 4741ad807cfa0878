"""Mode 'fixed-point' of the reference executor: Loihi 2 style integer semantics, token by token.

The normative transcription of docs/spiking-semantics.md, section "Fixed-point mode". Every value is
a torch int64 integer; only the logits are turned into float64 at the very end (an exact power-of-two
scaling of integers). The reference module dispatches here for ``mode='fixed-point'``; the Lava
backend's ``fixed_pt`` ProcessModels implement the same arithmetic in numpy and must give EQUAL counts.

A float network is quantized on the fly with the defaults (``conversion.quantize.ensure_quantized``:
a warning says so, and ``result.settings['quantization']`` records it).

Saturations are counted per kind (``conversion.quantize.SAT_KEYS``), summed over layers, tokens and
sequences, and returned in ``result.events['saturations']`` (with ``saturations_total``);
per layer in ``result.settings['saturations_per_layer']``.
"""

from __future__ import annotations

import math
import time

import torch

from ..conversion.quantize import (LN_INPUT_BITS, SAT_KEYS, decay_int, ensure_quantized, oscillator_table,
                                   qparams)
from ..semantics import Plasticity, SimSettings
from .base import EVENT_KEYS, SimulationResult, event_counts

RECORDABLE = ("counts", "margins", "decoded", "state")
_POW2 = torch.tensor([1 << j for j in range(63)], dtype=torch.int64)


# -- integer primitives (numpy twins in lava_backend/fixed_point.py) ---------------------------
def rdiv(a: torch.Tensor, b) -> torch.Tensor:
    """a / b rounded half away from zero, b > 0."""
    q = torch.div(2 * a.abs() + b, 2 * b, rounding_mode="floor")
    return torch.where(a < 0, -q, q)


def shift(a: torch.Tensor, s) -> torch.Tensor:
    """a * 2**-s rounded half away from zero (s > 0), a (s = 0), a * 2**-s exactly (s < 0)."""
    if isinstance(s, int):
        if s == 0:
            return a
        if s < 0:
            return a << (-s)
        mag = (a.abs() + (1 << (s - 1))) >> s
        return torch.where(a < 0, -mag, mag)
    s = torch.as_tensor(s, dtype=torch.int64)
    pos, neg = s.clamp(min=0), (-s).clamp(min=0)
    half = torch.where(pos > 0, torch.ones_like(pos) << (pos - 1).clamp(min=0), torch.zeros_like(pos))
    mag = (a.abs() + half) >> pos
    return torch.where(a < 0, -mag, mag) << neg


def bit_length(m: torch.Tensor) -> torch.Tensor:
    """Exact bit length of non-negative int64 values."""
    return (m.unsqueeze(-1) >= _POW2.to(m.device)).sum(-1)


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) exactly, for 0 <= v < 2**62."""
    r = torch.floor(torch.sqrt(v.double())).to(torch.int64)
    for _ in range(2):
        r = torch.where(r * r > v, r - 1, r)
    for _ in range(2):
        r = torch.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


class Saturations:
    """Counts every clamp, per kind and layer."""

    def __init__(self, L: int):
        self.per_layer = [{k: 0 for k in SAT_KEYS} for _ in range(L)]

    def clamp(self, x: torch.Tensor, lo: int, hi: int, key: str, layer: int) -> torch.Tensor:
        n = int(((x < lo) | (x > hi)).sum())
        if n:
            self.per_layer[layer][key] += n
            x = x.clamp(lo, hi)
        return x

    def totals(self) -> dict:
        return {k: sum(d[k] for d in self.per_layer) for k in SAT_KEYS}


def ln_int(z: torch.Tensor, K: int, lo: int, hi: int, sat: Saturations, layer: int) -> torch.Tensor:
    """Integer LayerNorm over the last axis -> frac_bits fixed point (doc: 'Integer LayerNorm')."""
    D = z.shape[-1]
    m = z.abs().amax(-1, keepdim=True)
    z = shift(z, (bit_length(m) - LN_INPUT_BITS).clamp(min=0))
    c = D * z - z.sum(-1, keepdim=True)
    R = isqrt((c * c).sum(-1, keepdim=True))
    y = torch.where(R > 0, rdiv(c * K, R.clamp(min=1)), torch.zeros_like(c))
    return sat.clamp(y, lo, hi, "ln", layer)


# -- the executor ------------------------------------------------------------------------
class FixedPointExecutor:
    name = "reference"

    def __init__(self, net, settings: SimSettings, device="cpu", plasticity: Plasticity | None = None,
                 record=(), progress: bool = False, log=None):
        unknown = set(record) - set(RECORDABLE)
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"cannot record {sorted(unknown)}: choose from {', '.join(RECORDABLE)}")
        self.net, self.how = ensure_quantized(net, log)
        self.s = settings
        self.p = plasticity or Plasticity()
        self.record = tuple(record)
        self.progress = progress
        self.dev = torch.device(device)
        q = qparams(self.net)
        self.q = q
        t = lambda name: torch.as_tensor(q[name], dtype=torch.int64, device=self.dev)  # noqa: E731
        self.Wx, self.Wy = t("q_W_x"), t("q_W_y")  # L,H,D,N
        self.sx, self.sy = t("q_W_x_shift"), t("q_W_y_shift")  # L,H,N
        self.thx, self.thy = t("q_theta_x"), t("q_theta_y")  # L,H,N
        self.embed, self.dec, self.lm = t("q_embed"), t("q_decoder"), t("q_lm_head")
        self.k, self.F = q["k"], q["F"]
        self.smax, self.pmax, self.Smax = (1 << (q["state_bits"] - 1)), (1 << (q["payload_bits"] - 1)), \
            (1 << (q["plastic_bits"] - 1))
        self.K_ln = math.isqrt(self.net.dims["D"] << (2 * self.F))
        self.v0 = 0 if settings.coding == "graded" else q["v0"]
        self.lam = decay_int(self.p.decay, self.F)

    # -- one population for T steps ---------------------------------------------------------
    def population(self, J, sat, layer, pop):
        s, k = self.s, self.k
        Th = 1 << k
        v = torch.full_like(J, self.v0)
        P = torch.zeros_like(J)
        margin = torch.full(J.shape, math.inf, dtype=torch.float64, device=J.device)
        for _ in range(s.timesteps):
            v = sat.clamp(v + J, -self.smax, self.smax - 1, f"{pop}_membrane", layer)
            if s.coding == "rate":
                margin = torch.minimum(margin, (v - Th).abs().double() / Th)
                fire = (v > Th).to(torch.int64)
                v = v - fire * Th
                P = P + fire * Th
            elif s.coding == "multispike":
                near = torch.clamp(torch.round(v.double() / Th), 1.0, float(s.max_spikes))
                margin = torch.minimum(margin, (v.double() / Th - near).abs())
                n = torch.clamp((v - 1) >> k, 0, s.max_spikes)
                v = v - n * Th
                P = P + n * Th
            else:  # graded: payload max(v, 0), saturated to the payload width; v = 0
                margin = torch.minimum(margin, v.abs().double() / Th)
                P = P + sat.clamp(v.clamp(min=0), 0, self.pmax - 1, f"{pop}_payload", layer)
                v = torch.zeros_like(v)
        return P, margin

    def decode(self, P, theta, sat, layer, key):
        a = rdiv(P * theta, self.s.timesteps << self.k)
        return sat.clamp(a, -self.pmax, self.pmax - 1, key, layer)

    def spike_events(self, counts):
        return (counts > 0).to(counts.dtype) * self.s.timesteps if self.s.coding == "graded" else counts

    def run(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        ids = ids.to(self.dev)
        B, n = ids.shape
        d = self.net.dims
        L, H, D, N = d["L"], d["H"], d["D"], d["N"]
        F, k = self.F, self.k
        lo, hi = -self.pmax, self.pmax - 1
        sat = Saturations(L)
        cos, sin = (torch.as_tensor(a, dtype=torch.int64, device=self.dev)
                    for a in oscillator_table(self.net.arrays["freqs"], n, F))
        S = torch.zeros(L, B, H, D, N, dtype=torch.int64, device=self.dev)
        stats = {key: torch.zeros(B, n, dtype=torch.float64) for key in EVENT_KEYS}
        shape = (B, n, L, H, N)
        rec = {}
        if "counts" in self.record:
            rec["x_counts"], rec["y_counts"] = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
        if "margins" in self.record:
            rec["x_margins"], rec["y_margins"] = (torch.full(shape, math.inf, dtype=torch.float64) for _ in range(2))
        if "decoded" in self.record:
            rec["a_hat"], rec["g_hat"] = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
        logits_int = torch.empty(B, n, d["V"], dtype=torch.int64)
        Th = float(1 << k)
        from tqdm.auto import tqdm

        for t in tqdm(range(n), desc="reference (fixed-point)", disable=not self.progress, leave=False):
            x = ln_int(self.embed[ids[:, t]], self.K_ln, lo, hi, sat, 0)  # B,D
            c, s_ = cos[t], sin[t]
            for layer in range(L):
                acc = torch.einsum("bd,hdn->bhn", x, self.Wx[layer])
                Jx = sat.clamp(shift(acc, self.sx[layer]), -self.smax, self.smax - 1, "x_current", layer)
                Px, mx = self.population(Jx, sat, layer, "x")
                a = self.decode(Px, self.thx[layer], sat, layer, "x_decoded")
                rot = torch.stack((-a[..., 1::2], a[..., ::2]), dim=-1).reshape(a.shape)
                q = sat.clamp(shift(a * c + rot * s_, F), lo, hi, "q", layer)  # B,H,N
                if self.p.resets(t):
                    S[layer].zero_()
                elif t > 0 and self.p.decay != 1.0:
                    S[layer] = shift(S[layer] * self.lam, F)
                u = shift(S[layer] * q[:, :, None, :], F).sum(-1)  # B,H,D: read before the write
                if self.p.writes(t):
                    S[layer] = sat.clamp(S[layer] + shift(x[:, None, :, None] * q[:, :, None, :], F),
                                         -self.Smax, self.Smax - 1, "plastic", layer)
                lnu = ln_int(u, self.K_ln, lo, hi, sat, layer)
                accy = torch.einsum("bhd,hdn->bhn", lnu, self.Wy[layer])
                if self.net.gating == "gain":  # a (frac F) times the accumulator, one rounding
                    Jy = sat.clamp(shift(a * accy, F + self.sy[layer]), -self.smax, self.smax - 1, "y_current", layer)
                else:
                    Jy = sat.clamp(shift(accy, self.sy[layer]), -self.smax, self.smax - 1, "y_current", layer)
                Py, my = self.population(Jy, sat, layer, "y")
                b = self.decode(Py, self.thy[layer], sat, layer, "y_decoded")
                g = b if self.net.gating == "gain" else sat.clamp(shift(a * b, F), lo, hi, "g", layer)
                accm = g.reshape(B, H * N) @ self.dec
                x = ln_int(x + ln_int(accm, self.K_ln, lo, hi, sat, layer), self.K_ln, lo, hi, sat, layer)
                cx, cy = Px.double() / Th, Py.double() / Th
                where = (slice(None), t)
                stats["x_spikes"][where] += self.spike_events(cx).sum((1, 2)).cpu()
                stats["y_spikes"][where] += self.spike_events(cy).sum((1, 2)).cpu()
                stats["x_active"][where] += (cx > 0).sum((1, 2)).double().cpu()
                stats["y_active"][where] += (cy > 0).sum((1, 2)).double().cpu()
                stats["active_columns"][where] += (q != 0).sum((1, 2)).double().cpu()
                stats["g_nonzero"][where] += (g != 0).sum((1, 2)).double().cpu()
                idx = (slice(None), t, layer)
                if "counts" in self.record:
                    rec["x_counts"][idx], rec["y_counts"][idx] = cx.cpu(), cy.cpu()
                if "margins" in self.record:
                    rec["x_margins"][idx], rec["y_margins"][idx] = mx.cpu(), my.cpu()
                if "decoded" in self.record:
                    rec["a_hat"][idx], rec["g_hat"][idx] = a.double().cpu() / 2.0 ** F, g.double().cpu() / 2.0 ** F
            logits_int[:, t] = ((x @ self.lm) >> self.q["lm_shift"]).cpu()  # floor, as Lava's bit-accurate Dense
        if "state" in self.record:
            rec["state"] = S.double().cpu() / 2.0 ** F  # L,B,H,D,N fixed frame
        logits = logits_int.double() * 2.0 ** self.q["logit_scale_exp"]
        return self._result(logits, stats, rec, sat, started)

    def _result(self, logits, stats, rec, sat, started):
        settings = {"timesteps": self.s.timesteps, "coding": self.s.coding, "max_spikes": self.s.max_spikes,
                    "mode": self.s.mode, "gating": self.net.gating, "dtype": "int64", "device": str(self.dev),
                    "quantization": self.how, "saturations_per_layer": sat.per_layer}
        result = SimulationResult(logits=logits, stats=stats, records=rec, backend=self.name, settings=settings,
                                  wall_s=time.perf_counter() - started)
        result.events = event_counts(stats, self.net, self.s)
        totals = sat.totals()
        result.events["saturations"] = totals
        result.events["saturations_total"] = sum(totals.values())
        return result


def simulate(net, ids, settings, device="cpu", record=(), plasticity=None, dtype=torch.float64, progress=False,
             stepwise: bool = False, chunk: int = 64, mode_check: bool = True, log=None):
    """Mode 'fixed-point' of the reference executor (always token by token: ``stepwise`` and ``chunk``
    change nothing; ``dtype`` is ignored, the arithmetic is int64)."""
    return FixedPointExecutor(net, settings, device, plasticity, record, progress, log).run(ids)


def compare_to_discrete(net, ids, timesteps: int = 8, coding: str = "rate", max_spikes: int = 4,
                        plasticity=None) -> dict:
    """Fixed-point against discrete mode on the same network and tokens (reference executor):
    top-1 agreement of the logits, fraction of equal spike counts per population, logit error."""
    from . import simulate as sim

    kw = dict(timesteps=timesteps, coding=coding, max_spikes=max_spikes, plasticity=plasticity, record=("counts",))
    disc = sim(net, ids, mode="discrete", **kw)
    fxp = sim(net, ids, mode="fixed-point", **kw)
    scale = float(disc.logits.abs().max())
    out = {"top1_agreement_vs_discrete": float((fxp.logits.argmax(-1) == disc.logits.argmax(-1)).double().mean()),
           "max_rel_dlogit_vs_discrete": float((fxp.logits - disc.logits).abs().max()) / scale if scale else 0.0,
           "saturations_total": fxp.events["saturations_total"]}
    for pop in ("x", "y"):
        a, b = disc.records[f"{pop}_counts"], fxp.records[f"{pop}_counts"]
        out[f"{pop}_counts_equal_fraction"] = float((a == b).double().mean())
        out[f"{pop}_mean_abs_count_diff"] = float((a - b).abs().mean())
    return out
