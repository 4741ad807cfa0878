"""The small shared pieces of the spiking semantics that no executor may re-derive.

docs/spiking-semantics.md is the specification; this module is its executable vocabulary:
threshold folding, the neuron update inside one timestep, decoding of counts, the oscillator
phases of x-neuron pairs, and the plastic rule with its switches. Every backend imports these
(or reproduces them with its library's primitives and is tested against them).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .model import layer_norm, rope_cos_sin, rotate_pairs

CODINGS = ("graded", "rate", "multispike")
MODES = ("discrete", "fixed-point", "biophysical")
TIE_EPS = 1e-9  # |v - boundary| below this at a deciding step is a near-threshold tie
GRADED_RTOL = 1e-9  # graded payloads are floats: equal means equal to this relative tolerance
MAX_TIMESTEPS = 4096

__all__ = [
    "CODINGS", "MODES", "TIE_EPS", "SimSettings", "Plasticity", "fold_weights", "neuron_step",
    "run_population", "decode", "oscillator_cos_sin", "oscillator_payload", "layer_norm",
]


@dataclasses.dataclass(frozen=True)
class SimSettings:
    timesteps: int = 8
    coding: str = "rate"
    max_spikes: int = 4  # multispike: at most this many spikes per neuron per step
    mode: str = "discrete"

    def validate(self) -> "SimSettings":
        from .errors import ConfigError

        if self.coding not in CODINGS:
            raise ConfigError(f"unknown coding {self.coding!r}: use one of {', '.join(CODINGS)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            raise ConfigError(f"timesteps must be an integer >= 1, got {self.timesteps!r}")
        if self.timesteps > MAX_TIMESTEPS:
            raise ConfigError(f"timesteps {self.timesteps} is absurdly large (max {MAX_TIMESTEPS})")
        if self.coding == "multispike" and (not isinstance(self.max_spikes, int) or self.max_spikes < 1):
            raise ConfigError(f"max spikes per step must be an integer >= 1, got {self.max_spikes!r}")
        return self


@dataclasses.dataclass(frozen=True)
class Plasticity:
    """Switches on the Hebbian working memory (intact when all are None).

    freeze_after k: tokens with index >= k no longer write (reads continue).
    reset_every m: the state is zeroed at the start of every token whose index is a multiple of m.
    decay_tau_tokens tau: at the start of every token t > 0 the state is multiplied by exp(-1/tau).
    """

    freeze_after: int | None = None
    reset_every: int | None = None
    decay_tau_tokens: float | None = None

    @classmethod
    def from_dict(cls, spec: dict | None) -> "Plasticity":
        from .errors import ConfigError

        spec = dict(spec or {})
        unknown = set(spec) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown plasticity switch(es) {sorted(unknown)}: use freeze_after, "
                              "reset_every, decay_tau_tokens")
        p = cls(**spec)
        if p.freeze_after is not None and (int(p.freeze_after) != p.freeze_after or p.freeze_after < 0):
            raise ConfigError(f"freeze_after must be an integer >= 0, got {p.freeze_after}")
        if p.reset_every is not None and (int(p.reset_every) != p.reset_every or p.reset_every < 1):
            raise ConfigError(f"reset_every must be an integer >= 1, got {p.reset_every}")
        if p.decay_tau_tokens is not None and not p.decay_tau_tokens > 0:
            raise ConfigError(f"decay time constant must be > 0, got {p.decay_tau_tokens}")
        return p

    @property
    def intact(self) -> bool:
        return self.freeze_after is None and self.reset_every is None and self.decay_tau_tokens is None

    @property
    def decay(self) -> float:
        return 1.0 if self.decay_tau_tokens is None else math.exp(-1.0 / self.decay_tau_tokens)

    def writes(self, t: int) -> bool:
        return self.freeze_after is None or t < self.freeze_after

    def resets(self, t: int) -> bool:
        return self.reset_every is not None and t % self.reset_every == 0


def fold_weights(net, device=None, dtype=torch.float64) -> dict:
    """Per-layer weights with thresholds folded in, so every spiking neuron has threshold 1.

    W_x[l, h, :, n] = E[h, :, n] / theta_x[l, h, n]   and likewise W_y with E_v and theta_y.
    Computed once here so every backend sees bit-identical weights.
    """
    def t(name):
        return torch.as_tensor(net.arrays[name], dtype=dtype, device=device)

    enc, enc_v = t("encoder"), t("encoder_v")
    return {
        "W_x": enc.unsqueeze(0) / t("theta_x").unsqueeze(2),  # L,H,D,N
        "W_y": enc_v.unsqueeze(0) / t("theta_y").unsqueeze(2),  # L,H,D,N
        "theta_x": t("theta_x"),
        "theta_y": t("theta_y"),
        "embed": t("embed"),
        "decoder": t("decoder"),
        "lm_head": t("lm_head"),
        "freqs": torch.as_tensor(net.arrays["freqs"], dtype=torch.float32, device=device),
    }


def neuron_step(v: torch.Tensor, current: torch.Tensor, coding: str, max_spikes: int = 1, margin: bool = True):
    """One timestep of a population of unit-threshold IF neurons: integrate, fire, reset.

    rate:       v += I; s = 1 if v > 1 else 0; v -= s
    multispike: v += I; s = clamp(ceil(v) - 1, 0, K); v -= s   (s = number of integers 1 <= j <= K below v)
    graded:     v += I; s = max(v, 0) (one graded spike carrying that payload); v = 0
    Returns (v, s, distance of v from the nearest firing boundary after integration; for graded
    spikes the boundary is 0, where the neuron switches between silent and sending; None when
    margin=False).
    """
    v = v.clone()
    s, dist = neuron_step_(v, current, coding, max_spikes, margin)
    return v, s, dist


def neuron_step_(v: torch.Tensor, current: torch.Tensor, coding: str, max_spikes: int = 1, margin: bool = True):
    """``neuron_step`` updating v in place (the same operations); returns (s, distance)."""
    v.add_(current)
    if coding == "rate":
        dist = (v - 1.0).abs() if margin else None
        s = (v > 1.0).to(v.dtype)
        v.sub_(s)
        return s, dist
    if coding == "multispike":
        dist = (v - torch.clamp(torch.round(v), min=1.0, max=float(max_spikes))).abs() if margin else None
        s = torch.ceil(v).sub_(1.0).clamp_(min=0.0, max=float(max_spikes))
        v.sub_(s)
        return s, dist
    if coding == "graded":
        dist = v.abs() if margin else None
        s = torch.clamp(v, min=0.0)
        v.zero_()
        return s, dist
    raise ValueError(f"unknown coding {coding!r}")


def run_population(current: torch.Tensor, settings: SimSettings, v_init: float, margins: bool = True):
    """T timesteps of constant input current (threshold units) from v = v_init (0 for graded).

    Returns (counts, margin): counts summed over the T steps (spikes, or graded payload), and the
    smallest distance to a firing boundary seen at any step (None when margins=False).

    Only neurons with a positive current are stepped: with v_init < 1 a neuron whose current is
    <= 0 never reaches a boundary (its count is 0 and its membrane stays <= v_init), so skipping
    it changes no count, and the stepped neurons see exactly the loop written out.
    """
    flat = current.reshape(-1)
    idx = (flat > 0).nonzero().squeeze(1)
    v0 = 0.0 if settings.coding == "graded" else v_init
    j = flat[idx]
    v = torch.full_like(j, v0)
    c = torch.zeros_like(j)
    m = torch.full_like(j, math.inf) if margins else None
    for _ in range(settings.timesteps):
        s, dist = neuron_step_(v, j, settings.coding, settings.max_spikes, margins)
        c += s
        if margins:
            torch.minimum(m, dist, out=m)
    counts = torch.zeros_like(flat)
    counts[idx] = c
    margin = None
    if margins:
        # silent neurons: distance to the boundary after the first step (their closest approach)
        boundary = 0.0 if settings.coding == "graded" else 1.0
        margin = ((v0 + flat) - boundary).abs()
        margin[idx] = m
        margin = margin.view_as(current)
    return counts.view_as(current), margin


def decode(counts: torch.Tensor, theta: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Decoded activity: count * theta / T (in that order of operations)."""
    return counts * theta / timesteps


def oscillator_cos_sin(freqs: torch.Tensor, positions: torch.Tensor):
    """Phases of the x-neuron pair oscillators: float32 cos/sin of ((t * freqs) % 1) * 2 pi."""
    return rope_cos_sin(freqs, positions)


def oscillator_payload(a_hat: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """q = R_t a: pair (2k, 2k+1) sends (a_2k c - a_2k+1 s, a_2k+1 c + a_2k s)."""
    return rotate_pairs(a_hat, cos, sin)
