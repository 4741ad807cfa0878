"""The leaky integrate-and-fire neuron's f-I curve, its inverse and the gain calibration built on
them (docs/spiking-semantics.md, "Biophysical mode", rung ``lif``).

A LIF neuron tau_m dv/dt = mu - v, threshold 1, reset 0, absolute refractory period t_ref, driven
by a constant input mu (threshold units) fires at

    f(mu) = 1 / (t_ref + tau_m ln(mu / (mu - 1)))   for mu > 1,   0 otherwise.

The rung ``lif`` keeps that curve (no inversion inside the neuron). A neuron's folded current
I = (activation / theta) enters as mu = 1 + gain * I: a bias at rheobase (so the activation
threshold is 0, ReLU's kink) and one gain per population, calibrated so that I = 1 (the neuron's
designed top, theta) fires at ``max_rate_hz``. Decoding maps a measured rate back through the
inverse: I = (f^-1(r) - 1) / gain. Works on floats, numpy arrays and torch tensors (the torch
form is differentiable, for constraint training). Rates in Hz, times in ms.
"""

from __future__ import annotations

import dataclasses
import math

from ..errors import ConfigError


def _lib(x):
    import numpy as np

    try:
        import torch

        if isinstance(x, torch.Tensor):
            return torch
    except ImportError:  # pragma: no cover
        pass
    return np


def lif_rate_hz(mu, tau_m_ms: float, t_ref_ms: float):
    """f(mu): the stationary firing rate (Hz) of constant drive mu (threshold units)."""
    xp = _lib(mu)
    mu = mu if xp.__name__ == "torch" else xp.asarray(mu, dtype=float)
    above = mu > 1.0
    safe = xp.where(above, mu, 2.0 + 0.0 * mu)  # no log of a non-positive number, even unused
    isi_ms = t_ref_ms + tau_m_ms * xp.log(safe / (safe - 1.0))
    return xp.where(above, 1000.0 / isi_ms, 0.0 * safe)


def lif_drive_for_rate(rate_hz, tau_m_ms: float, t_ref_ms: float):
    """f^-1(r): the drive that fires at rate r (Hz), 0 < r < 1000 / t_ref; 1 (rheobase) at r <= 0."""
    xp = _lib(rate_hz)
    rate_hz = rate_hz if xp.__name__ == "torch" else xp.asarray(rate_hz, dtype=float)
    top = 1000.0 / t_ref_ms if t_ref_ms > 0 else math.inf
    r = xp.clip(rate_hz, 1e-12, top * (1.0 - 1e-9)) if math.isfinite(top) else xp.clip(rate_hz, 1e-12, None)
    free_ms = 1000.0 / r - t_ref_ms  # the time the membrane climbs from reset to threshold
    mu = 1.0 / (1.0 - xp.exp(-free_ms / tau_m_ms))
    return xp.where(rate_hz > 0, mu, 1.0 + 0.0 * mu)


@dataclasses.dataclass(frozen=True)
class LifCurve:
    """One population's calibrated map between folded current I (threshold units) and rate."""

    tau_m_ms: float
    t_ref_ms: float
    max_rate_hz: float

    def __post_init__(self):
        if self.tau_m_ms <= 0 or self.t_ref_ms < 0 or self.max_rate_hz <= 0:
            raise ConfigError("LIF curve: tau_m_ms > 0, t_ref_ms >= 0 and max_rate_hz > 0 are needed")
        if self.t_ref_ms > 0 and self.max_rate_hz >= 1000.0 / self.t_ref_ms:
            raise ConfigError(f"LIF curve: max_rate_hz {self.max_rate_hz:g} must be below 1/t_ref")

    @property
    def bias(self) -> float:
        """The tonic drive: rheobase, so any positive current fires and none at or below 0 does."""
        return 1.0

    @property
    def gain(self) -> float:
        """Drive per unit folded current: I = 1 fires at max_rate_hz."""
        return float(lif_drive_for_rate(self.max_rate_hz, self.tau_m_ms, self.t_ref_ms)) - self.bias

    def rate_hz(self, current):
        """The rate of folded current I (no clipping: above I = 1 the curve keeps rising towards 1/t_ref)."""
        return lif_rate_hz(self.bias + self.gain * current, self.tau_m_ms, self.t_ref_ms)

    def rate_slope_hz(self, current):
        """d rate / d I (Hz per unit folded current) of rate_hz at I > 0, 0 at I <= 0. Infinite as
        I -> 0+ (the curve rises like 1 / ln(1/I)): callers evaluate it above a floor."""
        xp = _lib(current)
        current = current if xp.__name__ == "torch" else xp.asarray(current, dtype=float)
        above = current > 0
        mu = self.bias + self.gain * xp.where(above, current, 1.0 + 0.0 * current)
        isi_ms = self.t_ref_ms + self.tau_m_ms * xp.log(mu / (mu - 1.0))
        slope = 1000.0 * self.gain * self.tau_m_ms / (mu * (mu - 1.0) * isi_ms * isi_ms)
        return xp.where(above, slope, 0.0 * slope)

    def rate_cap_hz(self, window_ms: float) -> float:
        """The highest rate a spike count over ``window_ms`` decodes on the curve: one count below
        the limit 1/t_ref (never below max_rate_hz). A count within one spike of the limit cannot be
        told from it, and the limit's current is infinite (the inverse curve diverges there), so the
        count does not resolve the curve above this rate."""
        if self.t_ref_ms <= 0:
            return math.inf
        return max(1000.0 / self.t_ref_ms - 1000.0 / window_ms, self.max_rate_hz)

    def current_cap(self, window_ms: float) -> float:
        """The largest folded current a count over ``window_ms`` decodes to (that of rate_cap_hz):
        about 75 for the shipped parameters and a 95 ms window."""
        return float(self.current(self.rate_cap_hz(window_ms)))

    def current(self, rate_hz, window_ms: float | None = None):
        """The folded current whose rate is rate_hz: the decoding map (rate -> activation / theta).
        ``window_ms``: the rate is a count over that window, decoded at most to ``current_cap``
        (rates above rate_cap_hz). None: an exact rate; rates at or above 1/t_ref (no finite current
        fires there) give +inf."""
        xp = _lib(rate_hz)
        rate_hz = rate_hz if xp.__name__ == "torch" else xp.asarray(rate_hz, dtype=float)
        if window_ms is not None:
            cap = self.rate_cap_hz(window_ms)
            if math.isfinite(cap):
                rate_hz = xp.clip(rate_hz, None, cap) if xp.__name__ == "numpy" else xp.clamp(rate_hz, max=cap)
        cur = (lif_drive_for_rate(rate_hz, self.tau_m_ms, self.t_ref_ms) - self.bias) / self.gain
        if self.t_ref_ms > 0:
            cur = xp.where(rate_hz >= 1000.0 / self.t_ref_ms, math.inf + 0.0 * cur, cur)
        return cur


def lif_count(mu, window_ms: float, tau_m_ms: float, t_ref_ms: float, v_start: float):
    """Spikes of a LIF neuron (threshold 1, reset 0, refractory t_ref) driven at constant mu from
    v_start (not refractory) for window_ms: the first spike at t1 = tau_m ln((mu - v0)/(mu - 1)),
    then one every t_ref + tau_m ln(mu/(mu - 1)); 0 when mu <= 1 or t1 > window. Closed form of
    the drive a window holds (numpy or torch, elementwise; no gradient meaning: integer counts)."""
    xp = _lib(mu)
    mu = mu if xp.__name__ == "torch" else xp.asarray(mu, dtype=float)
    above = mu > 1.0
    safe = xp.where(above, mu, 2.0 + 0.0 * mu)
    first_ms = tau_m_ms * xp.log((safe - v_start) / (safe - 1.0))
    isi_ms = t_ref_ms + tau_m_ms * xp.log(safe / (safe - 1.0))
    fires = above & (first_ms <= window_ms)
    later = xp.floor(xp.where(fires, window_ms - first_ms, 0.0 * safe) / isi_ms)
    return xp.where(fires, 1.0 + later, 0.0 * safe)
