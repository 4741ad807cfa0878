"""Library-independent torch layers and runner shared by the snnTorch and Norse backends
(docs/backends.md, "snnTorch" and "Norse").

Neither library has plastic synapses of this kind, LayerNorm or gating, so these are ours, small
``nn.Module`` layers in plain torch: ``StaticSynapse`` (the folded encoders), ``HebbianSynapse``
(event-driven fixed-frame plastic synapses), ``LayerNorm``, ``Gate``, ``ResidualDecoder`` and
``SpikingBDHLayer`` (one layer, its two populations built by the backend). Also shared:
``Population``, the base of the backends' layer-synchronous neuron populations (settings and
the margin to a firing boundary; the library neuron itself is the backend's), and
``simulate_with``, the chunked token loop, event statistics, records and result assembly, into
which each backend plugs its population class.

This module imports neither snnTorch nor Norse, so each backend stays importable without the
other library.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn
from ..progress import bar as tqdm

from ..semantics import (Plasticity, SimSettings, accumulate_stats, boundary_distance, chunk_bounds, decode,
                         fold_weights, gate_current, gate_output, initial_membrane, layer_norm, new_stats,
                         oscillator_cos_sin, oscillator_payload, plastic_chunk, residual_update, stats_to_cpu)
from .base import RECORDABLE, Recorder, SimulationResult, make_result  # noqa: F401

# -- populations --------------------------------------------------------------------------------
class Population(nn.Module):
    """Base of a layer-synchronous population: constant current for T steps from v = v_init.

    A backend subclass builds its library neuron and defines ``steps(current, margins=False)
    -> (counts, margins)``, its library neuron stepped T times on every element: the counts
    (spikes, or graded payload summed over the steps) and, if asked, the smallest ``distance``
    of the integrated (pre-reset) membrane to a firing boundary over the steps (as the
    reference's margins), else None.
    """

    def __init__(self, settings: SimSettings, v_init: float):
        super().__init__()
        self.coding = settings.coding
        self.timesteps = settings.timesteps
        self.max_spikes = settings.max_spikes
        self.v_init = initial_membrane(self.coding, v_init)

    def distance(self, v: torch.Tensor) -> torch.Tensor:
        """Distance of the integrated membrane v to the nearest firing boundary of the coding."""
        return boundary_distance(v, self.coding, self.max_spikes)

    def forward(self, current: torch.Tensor, margins: bool = False):
        """(counts, margins or None) of T steps of ``current`` by the library neuron (``steps``).

        Without margins on the CPU, only the neurons with a positive current are stepped (as
        ``semantics.run_population``): with v_init < 1 a neuron whose current is <= 0 never reaches
        a boundary, so its count is 0 and skipping it changes no count. On CUDA every neuron is
        stepped (selecting them would synchronise the device).
        """
        if margins or current.is_cuda:
            return self.steps(current, margins)
        flat = current.reshape(-1)
        idx = (flat > 0).nonzero().squeeze(1)
        counts = torch.zeros_like(flat)
        counts[idx] = self.steps(flat[idx], False)[0]
        return counts.view_as(current), None

    def release(self):
        """Frees what the library keeps of this population after a run (nothing by default)."""


PopulationFactory = Callable[[SimSettings, float], Population]


# -- graded layers ------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """LayerNorm without affine parameters over the last axis (semantics.layer_norm)."""

    def forward(self, x):
        return layer_norm(x)


class StaticSynapse(nn.Module):
    """Dense static projection of graded inputs onto a population, per head:
    (..., D) -> (..., H, N) for the encoder, (..., H, D) -> (..., H, N) for the value encoder."""

    def __init__(self, weight: torch.Tensor, per_head_input: bool):
        super().__init__()
        self.register_buffer("weight", weight)  # H,D,N (folded: E / theta)
        self.spec = "...hd,hdn->...hn" if per_head_input else "...d,hdn->...hn"

    def forward(self, x):
        return torch.einsum(self.spec, x, self.weight)


class HebbianSynapse(nn.Module):
    """Plastic x -> residual synapses in the fixed frame, event-driven.

    State S is held column-major, ``S_cols[b, h, n, :]`` = column n of head h (the D synapses of
    x neuron n), so a column is one contiguous row. Only the columns whose payload q != 0 are
    read (a sparse-dense product over the active payloads only) for the readout ``u = S q`` and
    written (index_add of the active rows) by the write
    ``S += x ⊗ q``; the write adds exactly the products x_d * q_n the dense update adds.
    """

    def __init__(self, batch: int, heads: int, dim: int, neurons: int, device, dtype, event_driven: bool = True):
        super().__init__()
        self.shape = (batch, heads, neurons, dim)
        self.event_driven = event_driven  # False: touch every synapse (the benchmark's baseline)
        self.register_buffer("S_cols", torch.zeros(self.shape, device=device, dtype=dtype))

    def reset(self):
        self.S_cols.zero_()

    def decay(self, factor: float):
        self.S_cols.mul_(factor)  # a global per-token leak of every synapse, not event-driven

    def active_columns(self, q: torch.Tensor):
        """(rows into the flattened columns, their b*H + h, their b, their payloads) of the q != 0 columns."""
        B, H, N, _ = self.shape
        b, h, n = torch.nonzero(q, as_tuple=True)
        bh = b * H + h
        return bh * N + n, bh, b, q[b, h, n]

    def read(self, q: torch.Tensor, active=None) -> torch.Tensor:
        """u[b, h] = sum over active columns n of S[b, h, :, n] q[b, h, n]  (q: B,H,N -> u: B,H,D)."""
        B, H, N, D = self.shape
        if not self.event_driven:
            return torch.einsum("bhnd,bhn->bhd", self.S_cols, q)
        rows, bh, _, qv = active if active is not None else self.active_columns(q)
        # the active payloads as a sparse (B*H) x (B*H*N) matrix: only their columns are touched
        events = torch.sparse_coo_tensor(torch.stack((bh, rows)), qv, (B * H, B * H * N), is_coalesced=True,
                                         check_invariants=False)
        return torch.sparse.mm(events, self.S_cols.view(-1, D)).view(B, H, D)

    def write(self, x: torch.Tensor, q: torch.Tensor, active=None):
        """S[b, h, :, n] += x[b] q[b, h, n] for the active columns (x: B,D)."""
        D = self.shape[-1]
        if not self.event_driven:
            self.S_cols += q[..., None] * x[:, None, None, :]
            return
        rows, _, b, qv = active if active is not None else self.active_columns(q)
        self.S_cols.view(-1, D).index_add_(0, rows, x[b] * qv[:, None])

    def state(self) -> torch.Tensor:
        return self.S_cols.transpose(-1, -2)  # B,H,D,N (the fixed-frame layout of the IR)

    def forward(self, x: torch.Tensor, q: torch.Tensor, t0: int, plasticity: Plasticity) -> torch.Tensor:
        """Tokens t0, t0+1, ... in order (x: B,Tc,D; q: B,Tc,H,N): switches, read, then write."""
        u = torch.empty(*q.shape[:-1], self.shape[-1], device=q.device, dtype=self.S_cols.dtype)
        for i in range(q.shape[1]):
            rule = plasticity.at(t0 + i)
            if rule.reset:
                self.reset()
            elif rule.decay is not None:
                self.decay(rule.decay)
            qt = q[:, i]
            active = self.active_columns(qt) if self.event_driven else None
            u[:, i] = self.read(qt, active)  # a token never reads its own write
            if rule.write:
                self.write(x[:, i], qt, active)
        return u


class ChunkedPlasticSynapse(nn.Module):
    """Plastic x -> residual synapses of a whole chunk of tokens at once (the default form).

    The readouts of a chunk are chunked linear attention plus the carried fixed-frame state
    (``semantics.plastic_chunk``, the reference's own implementation); the chunks come from
    ``semantics.chunk_bounds`` (never straddling a reset), so every switch keeps its token.
    Same interface as ``HebbianSynapse`` (the token-by-token form, ``stepwise=True``).
    """

    def __init__(self, batch: int, heads: int, dim: int, neurons: int, device, dtype):
        super().__init__()
        self.register_buffer("S", torch.zeros(batch, heads, dim, neurons, device=device, dtype=dtype))

    def state(self) -> torch.Tensor:
        return self.S  # B,H,D,N

    def forward(self, x: torch.Tensor, q: torch.Tensor, t0: int, plasticity: Plasticity) -> torch.Tensor:
        u, self.S = plastic_chunk(self.S, x, q, t0, plasticity)
        return u


class Gate(nn.Module):
    """Gain gating: y current = a_hat * z, output = decoded y. Product gating: current = z,
    output = a_hat * decoded y (the product node)."""

    def __init__(self, gating: str):
        super().__init__()
        self.gating = gating

    def current(self, z, a_hat):
        return gate_current(self.gating, z, a_hat)

    def forward(self, decoded, a_hat):
        return gate_output(self.gating, decoded, a_hat)


class ResidualDecoder(nn.Module):
    """m = g (head-major, HN) @ Dec; x' = LN(x + LN(m))."""

    def __init__(self, decoder: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", decoder)

    def forward(self, x, g):
        return residual_update(x, g, self.weight)


class SpikingBDHLayer(nn.Module):
    """One layer: x population, oscillator payload, plastic synapses, y population, decoder.

    Runs a chunk of consecutive tokens (B,Tc,D) layer-synchronously: every population of every
    token of the chunk is stepped T times at once (its currents depend only on that token's
    layer input), the plastic synapses for the whole chunk (``ChunkedPlasticSynapse``) or, with
    ``stepwise``, token by token in order (``HebbianSynapse``: read, then write). The x and y
    populations are built by ``population(settings, v_init)``, the backend's library neurons.
    """

    def __init__(self, w: dict, layer: int, net, settings: SimSettings, batch: int, device, dtype,
                 population: PopulationFactory, event_driven: bool = True, stepwise: bool = False):
        super().__init__()
        d = net.dims
        self.settings = settings
        self.encoder = StaticSynapse(w["W_x"][layer], per_head_input=False)
        self.encoder_v = StaticSynapse(w["W_y"][layer], per_head_input=True)
        self.register_buffer("theta_x", w["theta_x"][layer])
        self.register_buffer("theta_y", w["theta_y"][layer])
        self.x_neurons = population(settings, net.v_init)
        self.y_neurons = population(settings, net.v_init)
        self.hebbian = (HebbianSynapse(batch, d.H, d.D, d.N, device, dtype, event_driven) if stepwise
                        else ChunkedPlasticSynapse(batch, d.H, d.D, d.N, device, dtype))
        self.attn_norm = LayerNorm()
        self.gate = Gate(net.gating)
        self.decoder = ResidualDecoder(w["decoder"])

    def forward(self, x, cos, sin, t0: int, plasticity: Plasticity, margins: bool = False):
        T = self.settings.timesteps
        cx, mx = self.x_neurons(self.encoder(x), margins)  # B,Tc,H,N
        a_hat = decode(cx, self.theta_x, T)
        q = oscillator_payload(a_hat, cos[:, None, :], sin[:, None, :])  # pair phases of each token
        u = self.hebbian(x, q, t0, plasticity)  # B,Tc,H,D
        z = self.encoder_v(self.attn_norm(u))
        cy, my = self.y_neurons(self.gate.current(z, a_hat), margins)
        g = self.gate(decode(cy, self.theta_y, T), a_hat)
        return self.decoder(x, g), (cx, cy, mx, my, a_hat, q, g)


# -- the run ------------------------------------------------------------------------------------
def _run(name, ids, layers, w, embed_norm, settings, plasticity, chunk, keys, stats, rec, logits, progress):
    T = ids.shape[1]
    device = ids.device
    margins = "margins" in keys
    with torch.no_grad():
        for t0, t1 in tqdm(chunk_bounds(T, chunk, plasticity), desc=name, disable=not progress, leave=False):
            where = (slice(None), slice(t0, t1))
            cos, sin = oscillator_cos_sin(w["freqs"], torch.arange(t0, t1, device=device))  # Tc,N
            x = embed_norm(w["embed"][ids[:, t0:t1]])  # B,Tc,D
            for layer, block in enumerate(layers):
                x, (cx, cy, mx, my, a_hat, q, g) = block(x, cos, sin, t0, plasticity, margins)
                accumulate_stats(stats, where, settings, cx, cy, q, g)
                rec.put(where, layer, cx, cy, mx, my, a_hat, g)
            logits[:, t0:t1] = x @ w["lm_head"]
        if "state" in keys:
            rec.final_state(torch.stack([block.hebbian.state() for block in layers]))  # L,B,H,D,N


def simulate_with(population: PopulationFactory, net, ids, settings: SimSettings, *, name: str, library: str,
                  device="cpu", record=(), plasticity=None, dtype=torch.float64, progress: bool = False,
                  chunk: int = 64, event_driven: bool = True, stepwise: bool = False) -> SimulationResult:
    """Runs the network on ids (B, T) with the populations built by ``population(settings, v_init)``.

    name: the backend's name (progress bar, result); library: "<library> <version>" for the
    result's settings. chunk: tokens computed together (1 = strictly token by token; any value
    gives the same counts). stepwise: the plastic synapses token by token, event-driven
    (``HebbianSynapse``; the test oracle) instead of the chunked form; event_driven=False (implies
    stepwise) reads and writes every plastic synapse every token (same results; the benchmark's
    baseline for the event-driven speed-up).
    Every population is released after the run. Inputs were checked by ``backends.simulate``.
    """
    started = time.perf_counter()
    device = torch.device(device)
    plasticity = plasticity or Plasticity()
    ids = ids.to(device)
    batch, n_tokens = ids.shape
    d = net.dims
    w = fold_weights(net, device, dtype)
    stepwise = stepwise or not event_driven
    layers = [SpikingBDHLayer(w, layer, net, settings, batch, device, dtype, population, event_driven,
                              stepwise).to(device) for layer in range(d.L)]
    stats = new_stats(batch, n_tokens, device)  # on the device: no host sync in the token loop
    rec = Recorder(record, batch, n_tokens, d, dtype)
    logits = torch.empty(batch, n_tokens, d.V, device=device, dtype=dtype)
    try:
        _run(name, ids, layers, w, LayerNorm(), settings, plasticity, chunk, set(record), stats, rec, logits, progress)
    finally:
        for block in layers:
            block.x_neurons.release()
            block.y_neurons.release()
    return make_result(name, net, settings, logits, stats_to_cpu(stats), rec.out, started, dtype, device, chunk=chunk,
                       library=library, plastic="stepwise" if stepwise else "chunked")
