"""The reference executor: defines the spiking semantics (docs/spiking-semantics.md) exactly.

Two forms of the same computation, both built from ``semantics``:

* ``run_stepwise``: token by token, every population's T timesteps written out, the plastic
  synapses read then written after each token. This is normative: the definition and the oracle.
* ``run`` (default): the same semantics, layer by layer over chunks of tokens. Spike counts
  depend only on each token's input currents, so a chunk's currents are computed at once and
  its neurons stepped T times together; the plastic synapses are applied as chunked linear
  attention plus the carried state. Memory is bounded by the chunk, never by the sequence.

Mode 'fixed-point' is the integer executor in ``fixed_point.py``.
"""

from __future__ import annotations

import time

import torch
from ..progress import bar as tqdm

from ..semantics import (Plasticity, SimSettings, accumulate_stats, chunk_bounds, decode, fold_weights,
                         gate_current, gate_output, layer_norm, new_stats, noise_generator, oscillator_cos_sin,
                         oscillator_payload, perturb_step, plastic_chunk, plastic_step, residual_update,
                         run_population)
from .base import Recorder, SimulationResult, make_result

NAME = "reference"


class ReferenceExecutor:
    name = NAME

    def __init__(self, net, settings: SimSettings, device="cpu", dtype=torch.float64,
                 plasticity: Plasticity | None = None, record=(), chunk: int = 64, progress: bool = False):
        self.net = net
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.plasticity = plasticity or Plasticity()
        self.record = tuple(record)
        self.margins = "margins" in self.record
        self.chunk = chunk
        self.progress = progress
        self.weights = fold_weights(net, self.device, dtype)
        self.dims = net.dims
        self.noise = noise_generator(self.plasticity)  # synaptic noise draws (None without noise)

    # -- stages shared by both forms (leading dims: batch and, in chunks, tokens) --------
    def x_stage(self, x, layer):
        current = torch.einsum("...d,hdn->...hn", x, self.weights["W_x"][layer])
        counts, margin = run_population(current, self.settings, self.net.v_init, self.margins)
        return counts, margin, decode(counts, self.weights["theta_x"][layer], self.settings.timesteps)

    def y_stage(self, u_norm, a_hat, layer):
        z = torch.einsum("...hd,hdn->...hn", u_norm, self.weights["W_y"][layer])
        counts, margin = run_population(gate_current(self.net.gating, z, a_hat), self.settings, self.net.v_init,
                                        self.margins)
        decoded = decode(counts, self.weights["theta_y"][layer], self.settings.timesteps)
        return counts, margin, gate_output(self.net.gating, decoded, a_hat)

    def _stats(self, stats, where, cx, cy, q, g):
        accumulate_stats(stats, where, self.settings, cx, cy, q, g)

    # -- the normative token-by-token form ---------------------------------------------
    def initial_state(self, batch: int) -> torch.Tensor:
        """The plastic synapses of every layer, zero at the start of a sequence (L,B,H,D,N)."""
        d = self.dims
        return torch.zeros(d.L, batch, d.H, d.D, d.N, device=self.device, dtype=self.dtype)

    def step(self, token: torch.Tensor, t: int, S: torch.Tensor, stats=None, rec=None) -> torch.Tensor:
        """Token t (B,) through every layer, updating S in place; returns the logits (B,V)."""
        cos, sin = oscillator_cos_sin(self.weights["freqs"], torch.tensor([t], device=self.device))
        x = layer_norm(self.weights["embed"][token.to(self.device)])
        rule = self.plasticity.at(t)
        for layer in range(self.dims.L):
            cx, mx, a_hat = self.x_stage(x, layer)
            q = oscillator_payload(a_hat, cos[0], sin[0])  # B,H,N
            u = plastic_step(S[layer], x, q, rule)
            if self.plasticity.perturbed:
                perturb_step(S[layer], x, q, layer, self.plasticity, self.noise)
            cy, my, g = self.y_stage(layer_norm(u), a_hat, layer)
            x = residual_update(x, g, self.weights["decoder"])
            if stats is not None:
                self._stats(stats, (slice(None), t), cx, cy, q, g)
            if rec is not None:
                rec.put((slice(None), t), layer, cx, cy, mx, my, a_hat, g)
        return x @ self.weights["lm_head"]

    def run_stepwise(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        ids = ids.to(self.device)
        batch, n_tokens = ids.shape
        S = self.initial_state(batch)
        rec = Recorder(self.record, batch, n_tokens, self.dims, self.dtype)
        stats = new_stats(batch, n_tokens)
        logits = [self.step(ids[:, t], t, S, stats, rec)
                  for t in tqdm(range(n_tokens), desc="reference (stepwise)", disable=not self.progress, leave=False)]
        rec.final_state(S)
        return self._result(torch.stack(logits, 1), stats, rec, started)

    # -- the fast chunked form ----------------------------------------------------------
    def run(self, ids: torch.Tensor) -> SimulationResult:
        if self.plasticity.perturbed:  # synaptic noise and lesions: the normative form only
            return self.run_stepwise(ids)
        started = time.perf_counter()
        ids = ids.to(self.device)
        batch, n_tokens = ids.shape
        S = self.initial_state(batch)
        rec = Recorder(self.record, batch, n_tokens, self.dims, self.dtype)
        stats = new_stats(batch, n_tokens)
        logits = torch.empty(batch, n_tokens, self.dims.V, device=self.device, dtype=self.dtype)
        bounds = chunk_bounds(n_tokens, self.chunk, self.plasticity)
        for t0, t1 in tqdm(bounds, desc="reference", disable=not self.progress, leave=False):
            where = (slice(None), slice(t0, t1))
            cos, sin = oscillator_cos_sin(self.weights["freqs"], torch.arange(t0, t1, device=self.device))  # Tc,N
            x = layer_norm(self.weights["embed"][ids[:, t0:t1]])  # B,Tc,D
            for layer in range(self.dims.L):
                cx, mx, a_hat = self.x_stage(x, layer)  # B,Tc,H,N
                q = oscillator_payload(a_hat, cos[:, None, :], sin[:, None, :])
                u, S[layer] = plastic_chunk(S[layer], x, q, t0, self.plasticity)
                cy, my, g = self.y_stage(layer_norm(u), a_hat, layer)
                x = residual_update(x, g, self.weights["decoder"])
                self._stats(stats, where, cx, cy, q, g)
                rec.put(where, layer, cx, cy, mx, my, a_hat, g)
            logits[:, t0:t1] = x @ self.weights["lm_head"]
        rec.final_state(S)
        return self._result(logits, stats, rec, started)

    def _result(self, logits, stats, rec, started):
        return make_result(self.name, self.net, self.settings, logits, stats, rec.out, started, self.dtype,
                           self.device)


def simulate(net, ids, settings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress=False, stepwise: bool = False, chunk: int = 64):
    """The backend entry point (called by ``backends.simulate``, which has checked every input)."""
    if settings.mode == "fixed-point":  # Loihi 2 integer semantics: a separate executor
        from .fixed_point import simulate as simulate_fixed_point

        return simulate_fixed_point(net, ids, settings, device=device, record=record, plasticity=plasticity,
                                    progress=progress)
    ex = ReferenceExecutor(net, settings, device, dtype, plasticity, record, chunk, progress)
    return ex.run_stepwise(ids) if stepwise else ex.run(ids)
