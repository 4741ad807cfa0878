"""The fixed-point (Loihi 2 style) integer semantics: primitives, tables and one layer's arithmetic.

docs/spiking-semantics.md, section "Fixed-point mode", is the specification. Every value is an
int64 torch tensor; numpy executors (Lava's fixed_pt ProcessModels) call these on
``torch.from_numpy`` views. Rounding is half away from zero everywhere except the readout, which
floors (as Lava's bit-accurate Dense); every clamp is a counted saturation (``Saturations``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .neurons import initial_membrane

LN_INPUT_BITS = 14  # LayerNorm inputs are first shifted to at most this many magnitude bits
# every saturation the integer semantics can perform, in the order the executors record them
SAT_KEYS = ("ln", "x_current", "x_membrane", "x_payload", "x_decoded", "q", "plastic", "y_current", "y_membrane",
            "y_payload", "y_decoded", "g")
_POW2 = torch.tensor([1 << j for j in range(63)], dtype=torch.int64)


# -- primitives ---------------------------------------------------------------------------------
def round_half_away(x) -> np.ndarray:
    """Round half away from zero of float64 values -> int64 (exact for |x| < 2**52)."""
    x = np.asarray(x, dtype=np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


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


def oscillator_table(freqs, n_tokens: int, frac_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of every token position (the official float32 phases, oscillator_cos_sin) as int64
    with ``frac_bits`` fraction bits: round half away from zero of value * 2**frac_bits."""
    from .oscillator import oscillator_cos_sin

    cos, sin = oscillator_cos_sin(torch.as_tensor(np.asarray(freqs), dtype=torch.float32), torch.arange(n_tokens))
    scale = 2.0 ** frac_bits
    return round_half_away(cos.double().numpy() * scale), round_half_away(sin.double().numpy() * scale)


def decay_int(decay: float, frac_bits: int) -> int:
    """The decay factor exp(-1/tau) as an integer with frac_bits fraction bits (round half away)."""
    return int(round_half_away(decay * 2.0 ** frac_bits))


class Saturations:
    """Counts every clamp, per kind and layer."""

    def __init__(self, n_layers: int = 1):
        self.per_layer = [{k: 0 for k in SAT_KEYS} for _ in range(n_layers)]

    def clamp(self, x: torch.Tensor, lo: int, hi: int, key: str, layer: int = 0) -> torch.Tensor:
        n = int(((x < lo) | (x > hi)).sum())
        if n:
            self.per_layer[layer][key] += n
            x = x.clamp(lo, hi)
        return x

    def totals(self) -> dict:
        return {k: sum(d[k] for d in self.per_layer) for k in SAT_KEYS}

    def clear(self) -> None:
        for d in self.per_layer:
            for k in d:
                d[k] = 0


# -- one layer's arithmetic ---------------------------------------------------------------------
@dataclasses.dataclass
class IntegerLayerMath:
    """The integer rules of one layer at one token, parameterised by the formats of a quantization.

    k: the unit threshold is Th = 2**k state units; F: fraction bits of graded values; smax, pmax,
    Smax: half ranges of membranes/currents, payloads and plastic synapses. ``sat`` counts clamps;
    ``layer`` says under which layer they are counted.
    """

    timesteps: int
    coding: str
    max_spikes: int
    gating: str
    k: int
    F: int
    state_bits: int
    payload_bits: int
    plastic_bits: int
    v0_state: int  # v_init in state units (quantization's v0)
    n_embd: int
    sat: Saturations
    layer: int = 0

    @classmethod
    def of(cls, quant, settings, gating: str, n_embd: int, sat: Saturations) -> "IntegerLayerMath":
        f = quant.format
        return cls(timesteps=settings.timesteps, coding=settings.coding, max_spikes=settings.max_spikes,
                   gating=gating, k=f.threshold_exp, F=f.frac_bits, state_bits=f.state_bits,
                   payload_bits=f.payload_bits, plastic_bits=f.plastic_bits, v0_state=quant.v0, n_embd=n_embd,
                   sat=sat)

    @property
    def Th(self) -> int:
        return 1 << self.k

    @property
    def smax(self) -> int:
        return 1 << (self.state_bits - 1)

    @property
    def pmax(self) -> int:
        return 1 << (self.payload_bits - 1)

    @property
    def Smax(self) -> int:
        return 1 << (self.plastic_bits - 1)

    @property
    def v0(self) -> int:
        return int(initial_membrane(self.coding, self.v0_state))

    @property
    def K_ln(self) -> int:
        return math.isqrt(self.n_embd << (2 * self.F))

    def clamp(self, x, lo, hi, key):
        return self.sat.clamp(x, lo, hi, key, self.layer)

    def payload_clamp(self, x, key):
        return self.clamp(x, -self.pmax, self.pmax - 1, key)

    def ln(self, z: torch.Tensor) -> torch.Tensor:
        """Integer LayerNorm over the last axis -> F fraction bits (doc: 'Integer LayerNorm')."""
        D = z.shape[-1]
        m = z.abs().amax(-1, keepdim=True)
        z = shift(z, (bit_length(m) - LN_INPUT_BITS).clamp(min=0))
        c = D * z - z.sum(-1, keepdim=True)
        R = isqrt((c * c).sum(-1, keepdim=True))
        y = torch.where(R > 0, rdiv(c * self.K_ln, R.clamp(min=1)), torch.zeros_like(c))
        return self.payload_clamp(y, "ln")

    def current(self, acc: torch.Tensor, shifts, pop: str) -> torch.Tensor:
        """Accumulator -> membrane current in state units (per-neuron right shift)."""
        return self.clamp(shift(acc, shifts), -self.smax, self.smax - 1, f"{pop}_current")

    def y_current(self, accy: torch.Tensor, a: torch.Tensor, shifts) -> torch.Tensor:
        if self.gating == "gain":  # a (frac F) times the accumulator, one rounding
            return self.current(a * accy, self.F + shifts, "y")
        return self.current(accy, shifts, "y")

    def neuron_step(self, v: torch.Tensor, J: torch.Tensor, pop: str):
        """One timestep in state units: returns (v, emitted payload in state units, margin float64)."""
        Th = self.Th
        v = self.clamp(v + J, -self.smax, self.smax - 1, f"{pop}_membrane")
        if self.coding == "rate":
            margin = (v - Th).abs().double() / Th
            fire = (v > Th).to(torch.int64)
            return v - fire * Th, fire * Th, margin
        if self.coding == "multispike":
            near = torch.clamp(torch.round(v.double() / Th), 1.0, float(self.max_spikes))
            margin = (v.double() / Th - near).abs()
            n = torch.clamp((v - 1) >> self.k, 0, self.max_spikes)
            return v - n * Th, n * Th, margin
        margin = v.abs().double() / Th  # graded: payload max(v, 0) saturated to the payload width; v = 0
        payload = self.clamp(v.clamp(min=0), 0, self.pmax - 1, f"{pop}_payload")
        return torch.zeros_like(v), payload, margin

    def population(self, J: torch.Tensor, pop: str):
        """T timesteps from v0: (payload sum P in state units, smallest margin)."""
        v = torch.full_like(J, self.v0)
        P = torch.zeros_like(J)
        margin = torch.full(J.shape, math.inf, dtype=torch.float64, device=J.device)
        for _ in range(self.timesteps):
            v, emitted, m = self.neuron_step(v, J, pop)
            P = P + emitted
            margin = torch.minimum(margin, m)
        return P, margin

    def decode(self, P: torch.Tensor, theta: torch.Tensor, pop: str) -> torch.Tensor:
        return self.payload_clamp(rdiv(P * theta, self.timesteps << self.k), f"{pop}_decoded")

    def payload(self, a: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """q = R_t a with integer cos/sin tables (F fraction bits)."""
        rot = torch.stack((-a[..., 1::2], a[..., ::2]), dim=-1).reshape(a.shape)
        return self.payload_clamp(shift(a * cos + rot * sin, self.F), "q")

    def plastic(self, S: torch.Tensor, x: torch.Tensor, q: torch.Tensor, rule, lam: int):
        """One token on S (B,H,D,N): switches (rule: plasticity.TokenRule), read u (B,H,D), write.
        Returns (S, u)."""
        F = self.F
        if rule.reset:
            S = torch.zeros_like(S)
        elif rule.decay is not None:
            S = shift(S * lam, F)
        u = shift(S * q[:, :, None, :], F).sum(-1)  # read before the write
        if rule.write:
            S = self.clamp(S + shift(x[:, None, :, None] * q[:, :, None, :], F), -self.Smax, self.Smax - 1, "plastic")
        return S, u

    def gate(self, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return b if self.gating == "gain" else self.payload_clamp(shift(a * b, self.F), "g")

    def residual(self, x: torch.Tensor, accm: torch.Tensor) -> torch.Tensor:
        return self.ln(x + self.ln(accm))
