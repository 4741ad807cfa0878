"""The rungs of the biophysical mode's fidelity ladder as changes of the Brian2 network's equations
(docs/spiking-semantics.md, "The fidelity ladder"; names and order: semantics/ladder.py).

A network starts from an empty ``NetworkSpec``; each rung of the ladder up to the one asked for
applies itself in order (cumulative), replacing the parts it makes biological: the x and y
neurons' drive equation, the constants it needs, and the rate <-> current map that the decoding
and the clipped-fraction measure read. The executor knows no rung by name."""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import ConfigError
from ...semantics.ladder import rungs_through
from ...semantics.lif import LifCurve
from .psc_dale import DaleSplit
from .psc_divnorm import DivisiveNormPart, check_divnorm_params
from .psc_local import LocalPlasticityPart, check_local_params
from .psc_onoff import OnOffPairs


class LinearCurve:
    """rate = max_rate * clip(I, 0, 1): the rate-linearized neuron (lif_drive inverts the LIF curve)."""

    def __init__(self, max_rate_hz: float):
        self.max_rate_hz = max_rate_hz

    def rate_hz(self, current):
        return self.max_rate_hz * np.clip(current, 0.0, 1.0)

    def current(self, rate_hz, window_ms=None):  # noqa: ARG002 (linear: every count resolves)
        return np.asarray(rate_hz, dtype=np.float64) / self.max_rate_hz


@dataclasses.dataclass
class NetworkSpec:
    """What the rungs decide: the drive mu of the x and y LIF neurons (a Brian2 subexpression), the
    namespace entries it needs, the neuron's rate <-> folded-current map and the top current (the
    folded current a neuron's designed top rate stands for; mass above it counts as clipped)."""

    rungs: tuple = ()
    drive: str | None = None
    namespace: dict = dataclasses.field(default_factory=dict)
    curve: object = None
    top_current: float = 1.0
    executor: str = "windows"  # "windows": biophysical.py (NetworkOperation); "psc": psc.py (Brian2 only)
    # from rung psc on: the rungs' changes of the psc network, mixins of psc.PscNetwork in ladder order
    # (psc.network_class composes them so that a later rung's override sees the earlier rungs' network)
    parts: list = dataclasses.field(default_factory=list)
    # from rung psc on: how the plastic synapses are read, "event" (psc_read.py) or "summed" (psc.py)
    plastic_read: str | None = None

    def check(self):
        if self.drive is None or self.curve is None:
            raise ConfigError(f"ladder {','.join(self.rungs)}: no rung set the neurons' drive")
        return self


class RateLinearized:
    """Rung 1, the baseline: a LIF neuron whose drive inverts its own f-I curve, so the rate is
    max_rate * I for a folded current I in [0, 1] and max_rate above (clipped)."""

    name = "rate-linearized"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        spec.drive = "mu = lif_drive(I, win, inv_rmax, neg_tref, tmax, inv_tau_m) : 1"
        spec.curve = LinearCurve(par["max_rate_hz"])
        spec.top_current = 1.0


class Lif:
    """Rung 2: the neuron's own f-I curve. A tonic bias at rheobase plus a calibrated gain (I = 1
    fires at max_rate_hz); no inversion, no clip; decoding inverts the curve (semantics/lif.py)."""

    name = "lif"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        curve = LifCurve(par["tau_m_ms"], par["t_ref_ms"], par["max_rate_hz"])
        spec.drive = "mu = win * (lif_bias + lif_gain * I) : 1"
        spec.namespace.update(lif_bias=curve.bias, lif_gain=curve.gain)
        spec.curve = curve
        spec.top_current = 1.0


class Psc:
    """Rung 3: spikes reach other neurons as postsynaptic currents, the graded nodes are Brian2
    equations (psc.py): no window, no reset, no NetworkOperation. The neuron keeps the lif rung's
    curve and tonic bias (always on, there is no window); what a downstream neuron receives is the
    filtered spike train, i.e. the rate, read linearly by its synapses (no inverse of the curve)."""

    name = "psc"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        spec.drive = "mu = lif_bias + lif_gain * I : 1"
        spec.executor = "psc"
        spec.plastic_read = par["plastic_read"]


class Dale:
    """Rung 4: Dale's law. Every static projection split by sign: negative weights go through
    inhibitory interneurons (psc_dale.py); dale_violations is 0 on the built network."""

    name = "dale"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        spec.parts.append(DaleSplit)


class OnOff:
    """Rung 5: the signed rates (residual stream, attention readout, rotated payload) carried by
    pairs of non-negative ON/OFF units (psc_onoff.py); negative_rates is 0 on the built network."""

    name = "onoff"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        spec.parts.append(OnOffPairs)


class LocalPlasticity:
    """Rung 6: the Hebbian write reads only the synapse's presynaptic trace (x's own filtered train,
    no pair partner) and its postsynaptic readout unit's own variable (the residual input it receives
    through a one-to-one synapse); weights bounded by w_max, continuous decay tau_decay_ms (psc_local.py)."""

    name = "local-plasticity"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        check_local_params(par)
        spec.parts.append(LocalPlasticityPart)


class DivisiveNorm:
    """Rung 7: every LayerNorm replaced by inhibitory pools with their own dynamics, n = (z - M) /
    (norm_sigma + P): a divisive pool P and (with subtract_mean, off by default) a subtractive M (psc_divnorm.py)."""

    name = "divisive-norm"

    def apply(self, spec: NetworkSpec, par: dict) -> None:
        check_divnorm_params(par)
        spec.parts.append(DivisiveNormPart)


RUNG_CLASSES = {cls.name: cls for cls in (RateLinearized, Lif, Psc, Dale, OnOff, LocalPlasticity, DivisiveNorm)}


def network_spec(rung: str, par: dict) -> NetworkSpec:
    """The equations of the network at ``rung``: every rung up to it applied in ladder order."""
    names = rungs_through(rung)
    spec = NetworkSpec(rungs=names)
    for name in names:
        if name not in RUNG_CLASSES:
            raise ConfigError(f"ladder: the brian2 backend has no equations for rung {name!r}")
        RUNG_CLASSES[name]().apply(spec, par)
    return spec.check()
