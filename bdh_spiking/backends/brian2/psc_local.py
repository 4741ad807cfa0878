"""Rung local-plasticity (issue 16, rung 6): the Hebbian write of the psc network uses only what the
synapse sees, weights are bounded and decay continuously in time.

* post factor: the readout unit (l, b, h, d) receives the layer's residual input x_d through a real
  one-to-one synapse from the residual unit (l, b, d) into a variable of its own, ``xp`` (a teaching
  compartment, apart from the read u it sums from the plastic synapses); its eligibility trace xw
  follows xp. Before this rung xw followed a linked variable reading the residual unit's state.
* pre factor: the x neuron's own filtered train, without its pair partner's (no rotation): the
  payload is q = cos(phase) * a (``local_payload = "cos"``) or q = a (``"none"``).
* bounds and decay: dS/dt = -S / tau_decay between writes (integrated exactly: S <- S exp(-graded_dt /
  tau_decay) at the start of every graded step); the write S <- clip(S + w_t * xw * qe, -w_max, w_max) at the per-byte plasticity pulse.
* the plasticity switches: freeze_after gates the pulse (w_t = 0) while the decay goes on;
  decay_tau_tokens adds a decay rate: 1 / tau = 1 / tau_decay_ms + 1 / (decay_tau_tokens token_ms);
  reset_every (zeroing every synapse at once, not a local process) is refused before any work.
Specification: docs/spiking-semantics.md, "Rung 6, `local-plasticity`"."""

from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from .psc import PAYLOAD

LOCAL_PAYLOADS = {"cos": "q = cosp(t, nn) * a", "none": "q = a"}


def check_local_params(par: dict) -> None:
    """The [local] parameters, one-line errors (rungs.LocalPlasticity.apply, before any work)."""
    if not par["w_max"] > 0:
        raise ConfigError(f"rung local-plasticity: w_max must be > 0, got {par['w_max']:g}")
    if not par["tau_decay_ms"] > 0:
        raise ConfigError(f"rung local-plasticity: tau_decay_ms must be > 0 (inf: no decay), got "
                          f"{par['tau_decay_ms']:g}")
    if par["local_payload"] not in LOCAL_PAYLOADS:
        raise ConfigError(f"rung local-plasticity: unknown local_payload {par['local_payload']!r} "
                          f"(use {' or '.join(LOCAL_PAYLOADS)})")


def decay_tau_ms(par: dict, plasticity) -> float:
    """The synapses' decay time constant: tau_decay_ms, with the switch decay_tau_tokens's rate added."""
    rate = 1.0 / par["tau_decay_ms"]
    if plasticity.decay_tau_tokens is not None:
        rate += 1.0 / (plasticity.decay_tau_tokens * par["token_ms"])
    return math.inf if rate == 0 else 1.0 / rate


class LocalPlasticityPart:
    """Mixin of psc.PscNetwork: payload_code, hebb_synapse, attn_model, _synapses, namespace."""

    def __init__(self, net, spec, par, plasticity, keys):
        if plasticity.reset_every is not None:
            raise ConfigError("rung local-plasticity: reset_every zeroes every synapse at once, which no local "
                              "rule does; use decay_tau_tokens (a continuous decay) instead")
        super().__init__(net, spec, par, plasticity, keys)
        self.tau_decay_ms = decay_tau_ms(par, plasticity)

    def namespace(self, ids):
        ns = super().namespace(ids)
        ns["w_max"] = self.par["w_max"]
        ns["decay_step"] = math.exp(-self.par["graded_dt_ms"] / self.tau_decay_ms)
        return ns

    def payload_code(self) -> str:
        # psc's rotation replaced by the own-trace payload; what the rungs below add (onoff: the pair) stays
        below = super().payload_code()
        if PAYLOAD not in below:
            raise ConfigError("rung local-plasticity: the payload below it is not psc's rotation")
        return below.replace(PAYLOAD, LOCAL_PAYLOADS[self.par["local_payload"]])

    def payload_weights(self) -> tuple:
        own = {"cos": "cosp({t}, nn)", "none": "1"}[self.par["local_payload"]]
        return own, "0"  # no partner term

    def plastic_decay(self):
        return "decay_step" if math.isfinite(self.tau_decay_ms) else None

    def attn_model(self) -> str:
        model = super().attn_model()
        old = "dxw/dt = (xl - xw) / tau_e : 1\n"
        if old not in model or "xl : 1 (linked)\n" not in model:
            raise ConfigError("rung local-plasticity: the readout unit's model has no eligibility trace of xl")
        # xp: the residual input received through the one-to-one synapse res -> readout (summed, one term)
        return model.replace(old, "dxw/dt = (xp - xw) / tau_e : 1\nxp : 1\n").replace("xl : 1 (linked)\n", "")

    def hebb_synapse(self) -> dict:
        # dS/dt = -S / tau_decay is integrated exactly by a step on the graded clock (_synapses: sympy
        # cannot parse a variable named S, so no Brian2 state updater is used for it)
        # q_pre, qe_pre: the payload as the rungs below carry it (onoff: q_on - q_off, each its own synapse)
        return {"model": self.presynaptic("S : 1\nu_post = S * q_pre : 1 (summed)"),
                "on_pre": {"write": self.presynaptic("S = clip(S + wrt(t) * xw_post * qe_pre, -w_max, w_max)")},
                "on_event": {"write": "write"}}

    def _synapses(self, g: dict, ns: dict) -> dict:
        import brian2 as b2

        syn = super()._synapses(g, ns)
        L, B, H, D = self.dims.L, self.B, self.dims.H, self.dims.D
        a = np.arange(L * B * H * D)
        post = b2.Synapses(g["res"], g["attn"], "xp_post = xin_pre : 1 (summed)", name="bdh_psc_local_post",
                           clock=self.graded, namespace=ns)
        post.connect(i=(a // (H * D)) * D + a % D, j=a)  # residual unit (l, b, d) -> readout (l, b, h, d)
        syn["local_post"] = post
        if math.isfinite(self.tau_decay_ms):  # exp(-graded_dt / tau_decay) per graded step: exact
            syn["hebb"].run_regularly("S = S * decay_step", when="start", name="bdh_psc_hebb_decay")
        return syn
