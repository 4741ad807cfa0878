"""The plastic read of rung psc (and dale) driven by x's spikes: ``plastic_read = "event"``.

The summed read (psc.py) recomputes u_d = sum_n S_nd q_n on every graded step, a pass over all
N x D plastic synapses each millisecond. Within a byte the weights and the oscillator phases are
constant and q is linear in the x neurons' filtered trains a, so u_d = sum_n W_nd a_n with
W_nd = c_n S_nd + s'_n P_nd (c_n the neuron's cos, s'_n = -sg_n sin_p its partner p's signed sin,
P_nd = S_pd the partner's weight on the same unit). u is then an exponential postsynaptic current:
each spike of n adds ka_n W_nd to u_d, u decays with a's tau_syn, and the synapses work only
when x fires. At the byte's write step (the one pass over all synapses per byte) the weights and
phases change together: u_d += a_n (W_new - W_old), exact for every spike (the spike pathway runs
after the write, with the new weights). P is kept by the same write rule with the partner's
eligibility trace, so it equals the partner's S bit for bit.
Specification: docs/spiking-semantics.md, "Rung 3, psc" (the plastic read)."""

from __future__ import annotations

import numpy as np
import torch

from ...semantics import oscillator_cos_sin

# cx, sx: the phase in effect (c_n, s'_n); cxo, sxo: the byte before's, during the write step; qep:
# the partner's eligibility trace (its q through the same equation as qe: the same numbers), for P
EVENT_X = """cx : 1
sx : 1
cxo : 1
sxo : 1
dqep/dt = (qpl - qep) / tau_e : 1
qpl : 1 (linked)
pn : integer (constant)
"""
# x's write event runs before the synapses: byte t+1's phase, read at the write step's end (t + dt)
REPHASE = "cxo = cx\nsxo = sx\ncx = cosp(t + dt, nn)\nsx = -sg * sinp(t + dt, pn)"
WRITE = """Sn = keepn(t) * (S + wrt(t) * xw_post * qe_pre)
Pn = keepn(t) * (P + wrt(t) * xw_post * qep_pre)
u_post += a_pre * (cx_pre * Sn + sx_pre * Pn - (cxo_pre * S + sxo_pre * P))
S = Sn
P = Pn"""
SPIKE = "u_post += ka_pre * (cx_pre * S + sx_pre * P)"


class EventRead:
    """Mixin of psc.PscNetwork (directly above it): the event-driven plastic read (module doc)."""

    def namespace(self, ids):
        ns = super().namespace(ids)
        ns["u_keep"] = 1.0 - self.par["dt_ms"] / self.par["tau_syn_ms"]  # a's Euler step, for its sum u
        return ns

    def x_extra(self) -> str:
        return super().x_extra() + EVENT_X

    def hebb_synapse(self) -> dict:
        return {"model": "S : 1\nP : 1", "on_pre": {"write": WRITE, "pre": SPIKE},
                "on_event": {"write": "write", "pre": "spike"}}

    def _graded_groups(self, ns: dict) -> dict:
        g = super()._graded_groups(ns)
        # u decays with the x trains it sums (fine clock), before the spikes of the step are added
        g["attn"].run_regularly("u = u * u_keep", clock=self.fine, when="groups", name="bdh_psc_attn_decay")
        return g

    def _neurons(self, ns: dict) -> dict:
        g = super()._neurons(ns)
        x = g["x"]
        n = np.asarray(x.nn[:]).astype(np.int64)
        x.pn = n ^ 1
        cos, sin = oscillator_cos_sin(self.w["freqs"], torch.arange(1))  # byte 0's phase
        c, s = cos[0].double().numpy(), sin[0].double().numpy()
        x.cx = c[n]
        x.sx = -np.asarray(x.sg[:]) * s[n ^ 1]
        x.run_on_event("write", REPHASE, when="before_synapses")
        return g

    def _synapses(self, g: dict, ns: dict) -> dict:
        syn = super()._synapses(g, ns)
        syn["hebb"].P = 0.0
        syn["hebb"].write.order = -2  # (pre pathways are order -1) the write (new weights, new phase) before the step's spikes
        return syn

    def _link(self, g: dict) -> None:
        from brian2 import linked_var

        super()._link(g)
        idx = np.arange(len(g["x"]))
        g["x"].qpl = linked_var(g["x"], "q", index=idx ^ 1)  # the partner's payload (synapses read no links)
