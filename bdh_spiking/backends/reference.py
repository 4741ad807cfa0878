"""The reference executor: defines the spiking semantics (docs/spiking-semantics.md) exactly.

Two forms of the same computation:

* ``run_stepwise``: token by token, every population's T timesteps written out, the plastic
  synapses read then written after each token. This is normative: the definition and the oracle.
* ``run`` (default): the same semantics, layer by layer over chunks of tokens. Spike counts
  depend only on each token's input currents, so a chunk's currents are computed at once and
  its neurons stepped T times together; the plastic synapses are applied as chunked linear
  attention plus the carried state. Memory is bounded by the chunk, never by the sequence.

Both use the shared vocabulary of ``semantics`` (folding, neuron step, decoding, oscillators).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ..semantics import (Plasticity, SimSettings, decode, fold_weights, layer_norm, oscillator_cos_sin,
                         oscillator_payload, run_population)
from .base import RECORDABLE, Recorder, SimulationResult, accumulate_stats, event_counts, new_stats  # noqa: F401


class ReferenceExecutor:
    name = "reference"

    def __init__(self, net, settings: SimSettings, device="cpu", dtype=torch.float64,
                 plasticity: Plasticity | None = None, record=(), chunk: int = 64, progress: bool = False):
        self.net = net
        self.s = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.p = plasticity or Plasticity()
        self.record = tuple(record)
        self.margins = "margins" in self.record
        self.chunk = chunk
        self.progress = progress
        self.w = fold_weights(net, self.device, dtype)
        self.d = net.dims

    # -- stages shared by both forms (leading dims: batch and, in chunks, tokens) --------
    def x_stage(self, x, layer):
        current = torch.einsum("...d,hdn->...hn", x, self.w["W_x"][layer])
        counts, margin = run_population(current, self.s, self.net.v_init, self.margins)
        return counts, margin, decode(counts, self.w["theta_x"][layer], self.s.timesteps)

    def y_stage(self, u_norm, a_hat, layer):
        z = torch.einsum("...hd,hdn->...hn", u_norm, self.w["W_y"][layer])
        current = a_hat * z if self.net.gating == "gain" else z
        counts, margin = run_population(current, self.s, self.net.v_init, self.margins)
        decoded = decode(counts, self.w["theta_y"][layer], self.s.timesteps)
        g = decoded if self.net.gating == "gain" else a_hat * decoded
        return counts, margin, g

    def decoder_stage(self, x, g):
        m = g.reshape(*g.shape[:-2], -1) @ self.w["decoder"]
        return layer_norm(x + layer_norm(m))

    # -- the normative token-by-token form ---------------------------------------------
    def initial_state(self, batch: int) -> torch.Tensor:
        """The plastic synapses of every layer, zero at the start of a sequence (L,B,H,D,N)."""
        d = self.d
        return torch.zeros(d["L"], batch, d["H"], d["D"], d["N"], device=self.device, dtype=self.dtype)

    def step(self, token: torch.Tensor, t: int, S: torch.Tensor, stats=None, rec=None) -> torch.Tensor:
        """Token t (B,) through every layer, updating S in place; returns the logits (B,V)."""
        cos, sin = oscillator_cos_sin(self.w["freqs"], torch.tensor([t], device=self.device))
        x = layer_norm(self.w["embed"][token.to(self.device)])
        for layer in range(self.d["L"]):
            cx, mx, a_hat = self.x_stage(x, layer)
            q = oscillator_payload(a_hat, cos[0], sin[0])  # B,H,N
            if self.p.resets(t):
                S[layer].zero_()
            elif t > 0 and self.p.decay != 1.0:
                S[layer].mul_(self.p.decay)
            u = torch.einsum("bhdn,bhn->bhd", S[layer], q)  # read before the write
            if self.p.writes(t):
                S[layer] += x[:, None, :, None] * q[:, :, None, :]
            cy, my, g = self.y_stage(layer_norm(u), a_hat, layer)
            x = self.decoder_stage(x, g)
            if stats is not None:
                accumulate_stats(stats, (slice(None), t), self.s, cx, cy, q, g)
            if rec is not None:
                rec.put((slice(None), t), layer, cx, cy, mx, my, a_hat, g)
        return x @ self.w["lm_head"]

    def run_stepwise(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        ids = ids.to(self.device)
        B, T = ids.shape
        S = self.initial_state(B)
        rec = Recorder(self.record, B, T, self.d, self.dtype)
        stats = new_stats(B, T)
        logits = [self.step(ids[:, t], t, S, stats, rec)
                  for t in tqdm(range(T), desc="reference (stepwise)", disable=not self.progress, leave=False)]
        rec.final_state(S)
        return self._result(torch.stack(logits, 1), stats, rec, started)

    # -- the fast chunked form ----------------------------------------------------------
    def run(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        ids = ids.to(self.device)
        B, T = ids.shape
        L, H, D, N = self.d["L"], self.d["H"], self.d["D"], self.d["N"]
        S = torch.zeros(L, B, H, D, N, device=self.device, dtype=self.dtype)
        rec = Recorder(self.record, B, T, self.d, self.dtype)
        stats = new_stats(B, T)
        logits = torch.empty(B, T, self.d["V"], device=self.device, dtype=self.dtype)
        bounds = _chunk_bounds(T, self.chunk, self.p.reset_every)
        for t0, t1 in tqdm(bounds, desc="reference", disable=not self.progress, leave=False):
            pos = torch.arange(t0, t1, device=self.device)
            cos, sin = oscillator_cos_sin(self.w["freqs"], pos)  # Tc,N
            x = layer_norm(self.w["embed"][ids[:, t0:t1]])  # B,Tc,D
            for layer in range(L):
                cx, mx, a_hat = self.x_stage(x, layer)  # B,Tc,H,N
                q = oscillator_payload(a_hat, cos[:, None, :], sin[:, None, :])
                u, S[layer] = self._plastic_chunk(S[layer], x, q, t0)
                cy, my, g = self.y_stage(layer_norm(u), a_hat, layer)
                x = self.decoder_stage(x, g)
                accumulate_stats(stats, (slice(None), slice(t0, t1)), self.s, cx, cy, q, g)
                rec.put((slice(None), slice(t0, t1)), layer, cx, cy, mx, my, a_hat, g)
            logits[:, t0:t1] = x @ self.w["lm_head"]
        rec.final_state(S)
        return self._result(logits, stats, rec, started)

    def _plastic_chunk(self, S, x, q, t0):
        """Readouts u_t = S_t q_t for the chunk's tokens and the state after its last write.

        S: B,H,D,N (fixed frame); x: B,Tc,D; q: B,Tc,H,N. Honours the plasticity switches:
        chunks never straddle a reset boundary (see _chunk_bounds).
        """
        Tc = x.shape[1]
        qh = q.transpose(1, 2)  # B,H,Tc,N
        if self.p.resets(t0):
            S = torch.zeros_like(S)
        pos = torch.arange(t0, t0 + Tc, device=self.device)
        write = torch.tensor([self.p.writes(int(t)) for t in pos], device=self.device, dtype=self.dtype)
        lam = self.p.decay
        scores = (qh @ qh.mT).tril(diagonal=-1) * write[None, None, None, :]
        if lam != 1.0:
            gap = (pos[:, None] - pos[None, :]).clamp(min=0).to(self.dtype)
            scores = scores * torch.pow(torch.tensor(lam, dtype=self.dtype, device=self.device), gap)
            carry = torch.pow(torch.tensor(lam, dtype=self.dtype, device=self.device),
                              (pos - t0 + 1).to(self.dtype))
            if t0 == 0:
                carry = torch.ones_like(carry)
            carry_new = lam ** (Tc - 1 + (1 if t0 > 0 else 0))
            weight_new = write * lam ** ((t0 + Tc - 1 - pos).to(self.dtype))
        else:
            carry = torch.ones(Tc, device=self.device, dtype=self.dtype)
            carry_new = 1.0
            weight_new = write
        u = scores @ x[:, None] + (qh @ S.mT) * carry[None, None, :, None]  # B,H,Tc,D
        S_new = carry_new * S + x[:, None].mT @ (qh * weight_new[None, None, :, None])
        return u.transpose(1, 2), S_new  # B,Tc,H,D

    def _result(self, logits, stats, rec, started):
        settings = {"timesteps": self.s.timesteps, "coding": self.s.coding, "max_spikes": self.s.max_spikes,
                    "mode": self.s.mode, "gating": self.net.gating, "dtype": str(self.dtype).replace("torch.", ""),
                    "device": str(self.device)}
        result = SimulationResult(logits=logits, stats=stats, records=rec.out, backend=self.name,
                                  settings=settings, wall_s=time.perf_counter() - started)
        result.events = event_counts(stats, self.net, self.s)
        return result


def _chunk_bounds(T: int, chunk: int, reset_every: int | None) -> list:
    cuts = set(range(0, T, chunk))
    if reset_every:
        cuts |= set(range(0, T, reset_every))
    cuts = sorted(cuts) + [T]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def simulate(net, ids, settings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress=False, stepwise: bool = False, chunk: int = 64, mode_check: bool = True):
    if settings.mode == "fixed-point":  # Loihi 2 integer semantics: a separate executor
        from .fixed_point import simulate as simulate_fixed_point

        return simulate_fixed_point(net, ids, settings, device=device, record=record, plasticity=plasticity,
                                    progress=progress)
    if mode_check and settings.mode not in ("discrete",):
        from ..errors import ConfigError

        raise ConfigError(f"the reference executor runs mode 'discrete' (mode {settings.mode!r} comes with "
                          "its own backend issue)")
    ex = ReferenceExecutor(net, settings, device, dtype, plasticity, record, chunk, progress)
    return ex.run_stepwise(ids) if stepwise else ex.run(ids)
