"""snnTorch backend: the spiking network run on snnTorch's neurons (docs/backends.md, "snnTorch").

Native snnTorch: the rate-coded IF neuron is ``snntorch.Leaky(beta=1.0, threshold=1.0,
reset_mechanism="subtract", init_hidden=False)``, stepped as ``spk, mem = lif(cur, mem)`` with
``mem`` initialised to ``net.v_init`` at the start of every token. snnTorch applies the reset of a
spike at the *next* step (``mem_k = beta*mem_{k-1} + I - s_{k-1}*thr``, ``s_k = mem_k > thr``; the
returned ``mem`` is the pre-reset potential), which is the same recurrence as the semantics
``v += I; s = v > 1; v -= s`` written in the other order; only the order of the two float additions
differs, so counts can differ only at near-threshold ties (|v - 1| ~ 1e-16).

Ours, in snnTorch's style (subclasses of ``snntorch.Leaky`` overriding ``fire``/``mem_reset``):
``MultiSpikeLeaky`` (up to K spikes per step, subtracted at the next step like snnTorch's own
reset) and ``GradedLeaky`` (one graded spike carrying max(v, 0) each step, snnTorch's
reset-to-zero). snnTorch has no plastic synapse, LayerNorm or gating: ``HebbianSynapse``
(event-driven fixed-frame plastic synapses), ``LayerNorm``, ``Gate`` and ``ResidualDecoder`` are
small ``nn.Module`` layers written here.
"""

from __future__ import annotations

import math
import time

import snntorch
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..semantics import (Plasticity, SimSettings, decode, fold_weights, layer_norm, oscillator_cos_sin,
                         oscillator_payload)
from .base import EVENT_KEYS, SimulationResult, event_counts

NAME = "snntorch"
RECORDABLE = ("counts", "margins", "decoded", "state")


# -- neurons ------------------------------------------------------------------------------------
def rate_neuron() -> snntorch.Leaky:
    """snnTorch's own LIF configured as the semantics' IF neuron: no leak, unit threshold,
    reset by subtraction (applied by snnTorch at the next step), strict ``mem > threshold``."""
    return snntorch.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract", init_hidden=False)


class MultiSpikeLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` emitting up to K spikes per step (not an snnTorch feature: ours).

    fire: s = clamp(ceil(mem - thr), 0, K), i.e. the number of integers 1..K that mem exceeds
    (with thr = 1, equal to clamp(ceil(mem) - 1, 0, K) for every float mem);
    mem_reset: the same count, so snnTorch's subtractive reset removes s * thr at the next step.
    """

    def __init__(self, max_spikes: int):
        super().__init__(beta=1.0, threshold=1.0, reset_mechanism="subtract", init_hidden=False)
        self.max_spikes = int(max_spikes)

    def fire(self, mem):
        return torch.clamp(torch.ceil(mem - self.threshold), min=0.0, max=float(self.max_spikes))

    def mem_reset(self, mem):
        return self.fire(mem).detach()


class GradedLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` with one graded spike per step carrying max(mem, 0) (ours).

    Every step emits (a zero payload is still the step's event), so snnTorch's reset-to-zero
    mechanism is applied at every following step: mem_k = 0 * mem_{k-1} + I.
    """

    def __init__(self):
        super().__init__(beta=1.0, threshold=1.0, reset_mechanism="zero", init_hidden=False)

    def fire(self, mem):
        return torch.clamp(mem, min=0.0)

    def mem_reset(self, mem):
        return torch.ones_like(mem)


class IFPopulation(nn.Module):
    """A layer-synchronous population: constant current for T steps from mem = v_init.

    Returns the counts (spikes, or graded payload summed over the steps) and, if asked, the
    smallest distance of the pre-reset membrane to a firing boundary (as the reference's margins).
    """

    def __init__(self, settings: SimSettings, v_init: float):
        super().__init__()
        self.coding = settings.coding
        self.timesteps = settings.timesteps
        self.max_spikes = settings.max_spikes
        if self.coding == "rate":
            self.lif = rate_neuron()
        elif self.coding == "multispike":
            self.lif = MultiSpikeLeaky(settings.max_spikes)
        else:
            self.lif = GradedLeaky()
        self.v_init = 0.0 if self.coding == "graded" else float(v_init)

    def forward(self, current: torch.Tensor, margins: bool = False):
        mem = torch.full_like(current, self.v_init)
        counts = torch.zeros_like(current)
        margin = torch.full_like(current, math.inf) if margins else None
        for _ in range(self.timesteps):
            spk, mem = self.lif(current, mem)  # mem: the potential after integration, before reset
            counts = counts + spk
            if margins:
                if self.coding == "rate":
                    m = (mem - 1.0).abs()
                elif self.coding == "multispike":
                    m = (mem - torch.clamp(torch.round(mem), min=1.0, max=float(self.max_spikes))).abs()
                else:  # graded: the boundary between silent and sending is 0
                    m = mem.abs()
                margin = torch.minimum(margin, m)
        return counts, margin


# -- graded layers ------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm without affine parameters over the last axis (semantics.layer_norm)."""

    def forward(self, x):
        return layer_norm(x)


class StaticSynapse(nn.Module):
    """Dense static projection of graded inputs onto a population, per head: (B,D) or (B,H,D) -> (B,H,N)."""

    def __init__(self, weight: torch.Tensor, per_head_input: bool):
        super().__init__()
        self.register_buffer("weight", weight)  # H,D,N (folded)
        self.spec = "bhd,hdn->bhn" if per_head_input else "bd,hdn->bhn"

    def forward(self, x):
        return torch.einsum(self.spec, x, self.weight)


class HebbianSynapse(nn.Module):
    """Plastic x -> residual synapses in the fixed frame, event-driven.

    State S is held column-major, ``S_cols[b, h, n, :]`` = column n of head h (the D synapses of
    x neuron n), so a column is one contiguous row. Only the columns whose payload q != 0 are
    gathered for the readout ``u = S q`` and scattered back (index_add) by the write
    ``S += x ⊗ q``; the write adds exactly the products x_d * q_n the dense update adds.
    """

    def __init__(self, batch: int, heads: int, dim: int, neurons: int, device, dtype):
        super().__init__()
        self.shape = (batch, heads, neurons, dim)
        self.register_buffer("S_cols", torch.zeros(self.shape, device=device, dtype=dtype))

    def reset(self):
        self.S_cols.zero_()

    def decay(self, factor: float):
        self.S_cols.mul_(factor)  # a global per-token leak of every synapse, not event-driven

    def active_columns(self, q: torch.Tensor):
        """(rows into the flattened columns, their (b*H + h), their payloads) of the q != 0 columns."""
        B, H, N, _ = self.shape
        b, h, n = torch.nonzero(q, as_tuple=True)
        bh = b * H + h
        return bh * N + n, bh, b, q[b, h, n]

    def read(self, q: torch.Tensor, active=None) -> torch.Tensor:
        B, H, N, D = self.shape
        rows, bh, _, qv = active if active is not None else self.active_columns(q)
        cols = self.S_cols.view(-1, D).index_select(0, rows)
        u = torch.zeros(B * H, D, device=q.device, dtype=self.S_cols.dtype)
        u.index_add_(0, bh, cols * qv[:, None])
        return u.view(B, H, D)

    def write(self, x: torch.Tensor, q: torch.Tensor, active=None):
        D = self.shape[-1]
        rows, _, b, qv = active if active is not None else self.active_columns(q)
        self.S_cols.view(-1, D).index_add_(0, rows, x[b] * qv[:, None])

    def state(self) -> torch.Tensor:
        return self.S_cols.transpose(-1, -2)  # B,H,D,N (the fixed-frame layout of the IR)


class Gate(nn.Module):
    """Gain gating: y current = a_hat * z, output = decoded y. Product gating: current = z,
    output = a_hat * decoded y (the product node)."""

    def __init__(self, gating: str):
        super().__init__()
        self.gating = gating

    def current(self, z, a_hat):
        return a_hat * z if self.gating == "gain" else z

    def forward(self, decoded, a_hat):
        return decoded if self.gating == "gain" else a_hat * decoded


class ResidualDecoder(nn.Module):
    """m = g (head-major, HN) @ Dec; x' = LN(x + LN(m))."""

    def __init__(self, decoder: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", decoder)
        self.norm = LayerNorm()

    def forward(self, x, g):
        m = g.reshape(*g.shape[:-2], -1) @ self.weight
        return self.norm(x + self.norm(m))


class SpikingBDHLayer(nn.Module):
    """One layer: x population, oscillator payload, plastic synapses, y population, decoder."""

    def __init__(self, w: dict, layer: int, net, settings: SimSettings, batch: int, device, dtype):
        super().__init__()
        d = net.dims
        self.settings = settings
        self.encoder = StaticSynapse(w["W_x"][layer], per_head_input=False)
        self.encoder_v = StaticSynapse(w["W_y"][layer], per_head_input=True)
        self.register_buffer("theta_x", w["theta_x"][layer])
        self.register_buffer("theta_y", w["theta_y"][layer])
        self.x_neurons = IFPopulation(settings, net.v_init)
        self.y_neurons = IFPopulation(settings, net.v_init)
        self.hebbian = HebbianSynapse(batch, d["H"], d["D"], d["N"], device, dtype)
        self.attn_norm = LayerNorm()
        self.gate = Gate(net.gating)
        self.decoder = ResidualDecoder(w["decoder"])

    def forward(self, x, cos, sin, t: int, plasticity: Plasticity, margins: bool = False):
        T = self.settings.timesteps
        cx, mx = self.x_neurons(self.encoder(x), margins)
        a_hat = decode(cx, self.theta_x, T)
        q = oscillator_payload(a_hat, cos, sin)  # B,H,N
        if plasticity.resets(t):
            self.hebbian.reset()
        elif t > 0 and plasticity.decay != 1.0:
            self.hebbian.decay(plasticity.decay)
        active = self.hebbian.active_columns(q)
        u = self.hebbian.read(q, active)  # read before the write
        if plasticity.writes(t):
            self.hebbian.write(x, q, active)
        z = self.encoder_v(self.attn_norm(u))
        cy, my = self.y_neurons(self.gate.current(z, a_hat), margins)
        g = self.gate(decode(cy, self.theta_y, T), a_hat)
        return self.decoder(x, g), (cx, cy, mx, my, a_hat, q, g)


# -- the run ------------------------------------------------------------------------------------
def _spike_events(counts, settings):
    # graded coding: one graded spike per step while the current is positive
    return (counts > 0).to(counts.dtype) * settings.timesteps if settings.coding == "graded" else counts


def _accumulate(stats, t, settings, cx, cy, q, g):
    dims = (-2, -1)  # heads, neurons
    stats["x_spikes"][:, t] += _spike_events(cx, settings).sum(dims).double().cpu()
    stats["y_spikes"][:, t] += _spike_events(cy, settings).sum(dims).double().cpu()
    stats["x_active"][:, t] += (cx > 0).sum(dims).double().cpu()
    stats["y_active"][:, t] += (cy > 0).sum(dims).double().cpu()
    stats["active_columns"][:, t] += (q != 0).sum(dims).double().cpu()
    stats["g_nonzero"][:, t] += (g != 0).sum(dims).double().cpu()


def _check_record(record):
    keys = set(record)
    unknown = keys - set(RECORDABLE)
    if unknown:
        raise ConfigError(f"cannot record {sorted(unknown)}: choose from {', '.join(RECORDABLE)}")
    return keys


def simulate(net, ids, settings: SimSettings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress: bool = False, **options) -> SimulationResult:
    if options:
        raise ConfigError(f"the {NAME} backend takes no options {sorted(options)}")
    if settings.mode != "discrete":
        raise ConfigError(f"the {NAME} backend runs mode 'discrete' (got {settings.mode!r})")
    if settings.coding != "graded" and net.v_init > 1.0:
        raise ConfigError(f"the {NAME} backend needs v_init <= 1: snnTorch's delayed reset would subtract a "
                          f"spike at the first step from v_init = {net.v_init}")
    keys = _check_record(record)
    started = time.perf_counter()
    device = torch.device(device)
    plasticity = plasticity or Plasticity()
    ids = torch.as_tensor(ids, dtype=torch.int64).to(device)
    B, T = ids.shape
    d = net.dims
    L, H, N = d["L"], d["H"], d["N"]
    w = fold_weights(net, device, dtype)
    layers = [SpikingBDHLayer(w, layer, net, settings, B, device, dtype) for layer in range(L)]
    embed_norm = LayerNorm()

    stats = {k: torch.zeros(B, T, dtype=torch.float64) for k in EVENT_KEYS}
    shape = (B, T, L, H, N)
    rec = {}
    if "counts" in keys:
        rec["x_counts"], rec["y_counts"] = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
    if "margins" in keys:
        rec["x_margins"], rec["y_margins"] = (torch.full(shape, math.inf, dtype=dtype),
                                              torch.full(shape, math.inf, dtype=dtype))
    if "decoded" in keys:
        rec["a_hat"], rec["g_hat"] = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
    logits = torch.empty(B, T, d["V"], device=device, dtype=dtype)
    margins = "margins" in keys

    with torch.no_grad():
        for t in tqdm(range(T), desc=NAME, disable=not progress, leave=False):
            cos, sin = oscillator_cos_sin(w["freqs"], torch.tensor([t], device=device))
            x = embed_norm(w["embed"][ids[:, t]])
            for layer, block in enumerate(layers):
                x, (cx, cy, mx, my, a_hat, q, g) = block(x, cos[0], sin[0], t, plasticity, margins)
                _accumulate(stats, t, settings, cx, cy, q, g)
                if "counts" in keys:
                    rec["x_counts"][:, t, layer] = cx.cpu()
                    rec["y_counts"][:, t, layer] = cy.cpu()
                if margins:
                    rec["x_margins"][:, t, layer] = mx.cpu()
                    rec["y_margins"][:, t, layer] = my.cpu()
                if "decoded" in keys:
                    rec["a_hat"][:, t, layer] = a_hat.cpu()
                    rec["g_hat"][:, t, layer] = g.cpu()
            logits[:, t] = x @ w["lm_head"]
        if "state" in keys:
            rec["state"] = torch.stack([block.hebbian.state() for block in layers]).cpu()  # L,B,H,D,N

    run_settings = {"timesteps": settings.timesteps, "coding": settings.coding, "max_spikes": settings.max_spikes,
                    "mode": settings.mode, "gating": net.gating, "dtype": str(dtype).replace("torch.", ""),
                    "device": str(device), "library": f"snntorch {snntorch.__version__}"}
    result = SimulationResult(logits=logits, stats=stats, records=rec, backend=NAME, settings=run_settings,
                              wall_s=time.perf_counter() - started)
    result.events = event_counts(stats, net, settings)
    return result
