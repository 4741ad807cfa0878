"""Constraint fine-tuning (``bdh-train --constraints RUNG``): the dense form of a rung of the
biophysical ladder, an ``Activation`` (semantics/activation.py, the one replacement mechanism)
that computes in the dense forward pass what the converted network at that rung decodes
(docs/spiking-semantics.md, "The fidelity ladder"; docs/spiking-aware.md, "Constraint
fine-tuning").

A biophysical x or y neuron with threshold theta gets the folded current I = current / theta,
fires through the rung's drive mu(I) for one counting window from ``v_start``, and is decoded by
the rung's rate -> current map from count / W_eff (W_eff: the window less the synaptic rise):

    rate-linearized: mu = f^-1(r_max min(I, 1)),   decoded I = count / (r_max W_eff)
    lif:             mu = 1 + g I (bias at rheobase, gain g: I = 1 fires at r_max),
                     decoded I = (f^-1(count / W_eff) - 1) / g   (at most LifCurve.current_cap(W_eff))
    psc:             decoded I = f(1 + g I) / r_max   (what the psc synapses pass on: the rate, read
                     linearly; no count, no inverse)
    activation       = theta * decoded I

with the LIF count in closed form (``lif.lif_count``, constant drive over W_eff). Gradients are
straight-through: 1 where the rung represents the current (0 < I < top: 1 for rate-linearized,
whose rate is clipped there; unbounded for lif, whose rate keeps rising towards 1/t_ref), 0 where
silent or clipped. The network's synaptic rise is folded into W_eff, which its decoder also uses;
the transient of a pipelined window's starting current is not modelled (its decoder subtracts the
expected spikes of it). ``psc`` is the stationary rate of the lif rung's curve, read linearly (no
spike-count quantization: its downstream units receive filtered spike trains, not counts), with
the curve's own slope as gradient, evaluated at max(I, I_1) (I_1: the current of one spike per byte,
about 0.0012 at 100 ms; the true slope is infinite at I = 0+); 0 at I <= 0. The rungs above psc keep
its neuron: dale and onoff are exact rewrites of psc (nothing more to train: refused, naming psc);
local-plasticity and divisive-norm add their dense forms (semantics/bio_forms.py: the local payload,
bounded decaying plastic state, divisive normalisation), installed beside the activation by
``rung_forms``. Rungs without a dense form are refused by name.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import ConfigError
from .activation import Activation
from .ladder import BUILT, LADDER
from .lif import LifCurve, lif_count, lif_drive_for_rate

# the rungs with a dense form: their neurons' rate map, and from local-plasticity on the forms of
# semantics/bio_forms.py (payload, plastic state, normalisation) beside it
DENSE_FORMS = ("rate-linearized", "lif", "psc", "local-plasticity", "divisive-norm")
# the rungs whose x and y neurons are psc's (stationary rate read linearly, no window)
PSC_NEURON = LADDER[LADDER.index("psc"):]
# why a built rung has no dense form to train through (the refusal says it)
NO_DENSE_FORM = {
    "dale": "has nothing to train: its E/I split is exact, so its dense form is psc's (use --constraints psc)",
    "onoff": "has nothing to train: its ON/OFF pairs are exact, so its dense form is psc's (use --constraints psc)",
}
Y_WINDOW_LOST_STEPS = 3  # the y window loses its read and load steps (backends/brian2/biophysical.py)
NEURON_KEYS = ("tau_m_ms", "t_ref_ms", "max_rate_hz", "v_start")


def check_rung(rung: str) -> str:
    """The rung name of ``--constraints``, or a one-line ConfigError naming the supported rungs."""
    supported = ", ".join(DENSE_FORMS)
    if rung not in LADDER:
        raise ConfigError(f"--constraints: unknown rung {rung!r} (supported: {supported})")
    if rung not in DENSE_FORMS:
        state = NO_DENSE_FORM.get(rung, "has no dense form yet") if rung in BUILT else "is not built yet"
        raise ConfigError(f"--constraints: rung {rung!r} {state} (supported: {supported})")
    return rung


def windows_ms(params: dict, n_layer: int, rung: str = "lif") -> dict:
    """The counting windows (ms) of the biophysical executor with these parameters: x gets a
    whole stage (token_ms pipelined, token_ms / 2L sequential, in whole dt steps), y three steps
    less; W_eff subtracts the synaptic rise of a current switched on at the window's start. Rung
    psc has no window: a byte's token_ms (its counts and decoded records are per byte)."""
    if rung in PSC_NEURON:
        return {k: float(params["token_ms"]) for k in ("x", "y", "x_eff", "y_eff")}
    stage_ms = params["token_ms"] / (2 * n_layer) if params["schedule"] == "sequential" else params["token_ms"]
    steps = int(round(stage_ms / params["dt_ms"]))
    out = {"x": steps * params["dt_ms"], "y": (steps - Y_WINDOW_LOST_STEPS) * params["dt_ms"]}
    tau = params["tau_syn_ms"]
    out.update({f"{pop}_eff": w - tau * (1.0 - math.exp(-w / tau)) for pop, w in list(out.items())})
    return out


@dataclasses.dataclass(frozen=True)
class RungNeuron:
    """A rung's x/y neuron: drive, closed-form count over a window and the decoding map."""

    rung: str
    tau_m_ms: float
    t_ref_ms: float
    max_rate_hz: float
    v_start: float
    windows: dict  # x, y, x_eff, y_eff (ms)

    @classmethod
    def from_params(cls, rung: str, params: dict, n_layer: int) -> "RungNeuron":
        return cls(check_rung(rung), *(float(params[k]) for k in NEURON_KEYS), windows_ms(params, n_layer, rung))

    @property
    def curve(self) -> LifCurve:
        return LifCurve(self.tau_m_ms, self.t_ref_ms, self.max_rate_hz)

    @property
    def reads_rate(self) -> bool:
        """psc's neuron (from rung psc on): its synapses read the stationary rate, no count."""
        return self.rung in PSC_NEURON

    @property
    def top_current(self) -> float:
        """Above this folded current the rung represents nothing more (gradient 0)."""
        return 1.0 if self.rung == "rate-linearized" else math.inf

    def drive(self, current: torch.Tensor) -> torch.Tensor:
        """mu(I) of the rung (0 for I <= 0: no drive, no spike)."""
        if self.rung == "rate-linearized":
            rate = self.max_rate_hz * torch.clamp(current, 0.0, 1.0)
            mu = lif_drive_for_rate(rate, self.tau_m_ms, self.t_ref_ms)
        else:
            mu = self.curve.bias + self.curve.gain * current
        return torch.where(current > 0, mu, torch.zeros_like(mu))

    def count(self, pop: str, current: torch.Tensor) -> torch.Tensor:
        return lif_count(self.drive(current), self.windows[f"{pop}_eff"], self.tau_m_ms, self.t_ref_ms,
                         self.v_start)

    def decode(self, pop: str, count: torch.Tensor) -> torch.Tensor:
        """count -> rate over W_eff -> the rung's folded current (what the network's decoder reads)."""
        window = self.windows[f"{pop}_eff"]
        rate = count / (window / 1000.0)
        if self.rung == "rate-linearized":
            return rate / self.max_rate_hz
        return self.curve.current(rate, window)

    def decoded(self, pop: str, current: torch.Tensor) -> torch.Tensor:
        if self.reads_rate:  # the stationary rate, read linearly by the synapses
            return self.curve.rate_hz(torch.clamp(current, min=0.0)) / self.max_rate_hz
        return self.decode(pop, self.count(pop, current))

    def slope_floor(self, pop: str) -> float:
        """psc: the current of one spike per byte; below it the slope is taken there (finite)."""
        return float(self.curve.current(1000.0 / self.windows[pop]))

    def slope(self, pop: str, current: torch.Tensor) -> torch.Tensor:
        """psc: d decoded / d I, the curve's slope at max(I, floor); 0 at I <= 0."""
        floored = torch.clamp(current, min=self.slope_floor(pop))
        return torch.where(current > 0, self.curve.rate_slope_hz(floored) / self.max_rate_hz, torch.zeros_like(current))

    def to_dict(self) -> dict:
        return {"rung": self.rung, **{k: getattr(self, k) for k in NEURON_KEYS}, "windows_ms": dict(self.windows)}

    @classmethod
    def from_dict(cls, d: dict) -> "RungNeuron":
        return cls(check_rung(d["rung"]), *(float(d[k]) for k in NEURON_KEYS),
                   {k: float(v) for k, v in d["windows_ms"].items()})


class RungActivation(Activation):
    """The converted network's x and y activations at a rung, in the dense forward pass:
    theta * decoded(current / theta), straight-through gradient inside the represented range
    (psc: the curve's slope, floored at one spike per byte).
    theta_x, theta_y: (L, H, N) thresholds (the biophysical conversion's: one spike per step)."""

    def __init__(self, neuron: RungNeuron, theta_x: torch.Tensor, theta_y: torch.Tensor):
        self.neuron = neuron
        self.theta = {"x": theta_x, "y": theta_y}

    def _apply(self, pop: str, layer: int, current: torch.Tensor) -> torch.Tensor:
        theta = self.theta[pop][layer].to(device=current.device, dtype=current.dtype).unsqueeze(-2)
        folded = current / theta
        with torch.no_grad():  # in float64, as the network's decoder (float32 would round rates to inf)
            decoded = self.neuron.decoded(pop, folded.detach().to(torch.float64)).to(current.dtype)
            if self.neuron.reads_rate:
                slope = self.neuron.slope(pop, folded.detach().to(torch.float64)).to(current.dtype)
        if self.neuron.reads_rate:
            return theta * (decoded + slope * (folded - folded.detach()))
        top = self.neuron.top_current
        passed = torch.clamp(folded, min=0.0, max=top if math.isfinite(top) else None)
        return theta * (passed + (decoded - passed).detach())

    def x(self, layer: int, current: torch.Tensor) -> torch.Tensor:
        return self._apply("x", layer, current)

    def y(self, layer: int, current: torch.Tensor) -> torch.Tensor:
        return self._apply("y", layer, current)


def rung_forms(rung: str, params: dict):
    """The dense forms (semantics/bio_forms.BioForms) a rung adds to its neuron, or None (the rungs
    up to onoff change only the activation)."""
    if LADDER.index(rung) < LADDER.index("local-plasticity"):
        return None
    from .bio_forms import rung_forms as forms_of

    return forms_of(rung, params)
