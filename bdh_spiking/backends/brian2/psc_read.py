"""The plastic read driven by x's spikes: ``plastic_read = "event"`` (the default), every rung from psc on.

The summed read (psc.py) recomputes u_d = sum_n S_nd q_n on every graded step, a pass over all
N x D plastic synapses each millisecond. Within a byte the phases are constant and the payload q is
linear in the x neurons' filtered trains a (PscNetwork.payload_weights: q_n = c_n a_n + s_p a_p with
p the pair partner), so u_d = sum_n W_nd a_n with W_nd = c_n S_nd + s'_n P_nd, where s'_n is the
coefficient of a_n in the partner's payload and P_nd = S_pd the partner's weight on the same unit.
u is then an exponential postsynaptic current: each spike of n adds ka_n W_nd to u_d, u decays
with a's tau_syn, and the synapses work only when x fires. At the byte's write step (the one pass
over all synapses per byte) weights and phases change together: u_d += a_n (W_new - W_old), exact
for every spike (the spike pathway runs after the write, with the new weights). A uniform decay of
the weights (rung local-plasticity) scales u with them.

This mixin sits on top of the rungs' mixins: it turns the write they define (one statement
``S = f(S, X_pre, Y_post)``) into the write of S and of P, P from the partner's copies of the
presynaptic variables X (taken at the write step), so P equals the partner's S bit for bit.
Specification: docs/spiking-semantics.md, "Rung 3, psc" (the plastic read)."""

from __future__ import annotations

import re

import numpy as np

from ...errors import ConfigError

# cx, sx: the payload weights in effect (c_n, s'_n); cxo, sxo: the byte before's, during the write step
EVENT_X = "cx : 1\nsx : 1\ncxo : 1\nsxo : 1\npn : integer (constant)\n"
SPIKE = "u_post += ka_pre * (cx_pre * S + sx_pre * P)"
READ_DELTA = "u_post += a_pre * (cx_pre * Sn + sx_pre * Pn - (cxo_pre * S + sxo_pre * P))"
PRE_NAME = re.compile(r"\b(\w+)_pre\b")


class EventRead:
    """Mixin on top of the psc network and its rungs: the event-driven plastic read (module doc)."""

    def _write(self) -> tuple:
        """(the rungs' write expression f, the presynaptic variables it reads)."""
        code = super().hebb_synapse()["on_pre"]["write"].strip()
        match = re.fullmatch(r"S = ([^\n]+)", code)
        if match is None:
            raise ConfigError(f"plastic_read event: the plastic write must be one statement 'S = ...', got {code!r}")
        return match.group(1), sorted(set(PRE_NAME.findall(match.group(1))))

    def namespace(self, ids):
        ns = super().namespace(ids)
        ns["u_keep"] = 1.0 - self.par["dt_ms"] / self.par["tau_syn_ms"]  # a's Euler step, for its sum u
        return ns

    def x_extra(self) -> str:
        partner = "".join(f"{v}p : 1\n{v}l : 1 (linked)\n" for v in self._write()[1])  # copy, link
        return super().x_extra() + EVENT_X + partner

    def hebb_synapse(self) -> dict:
        expr = self._write()[0]
        partner = re.sub(r"\bS\b", "P", PRE_NAME.sub(r"\1p_pre", expr))
        write = f"Sn = {expr}\nPn = {partner}\n{READ_DELTA}\nS = Sn\nP = Pn"
        return {"model": "S : 1\nP : 1", "on_pre": {"write": write, "pre": SPIKE},
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
        own, partner = self.payload_weights()
        # x's write event runs before the synapses: the next byte's weights (its phase at t + dt), the
        # partner's presynaptic variables for P
        copies = "".join(f"\n{v}p = {v}l" for v in self._write()[1])
        x.run_on_event("write", f"cxo = cx\nsxo = sx\ncx = {own.format(t='t + dt')}\n"
                                f"sx = {partner.format(t='t + dt')}{copies}", when="before_synapses")
        x.cx, x.sx = own.format(t="t"), partner.format(t="t")  # byte 0's (the clocks read 0 when built)
        return g

    def _synapses(self, g: dict, ns: dict) -> dict:
        syn = super()._synapses(g, ns)
        syn["hebb"].P = 0.0
        syn["hebb"].write.order = -2  # (pre pathways are order -1) the write (new weights) before the step's spikes
        decay = self.plastic_decay()
        if decay is not None:  # every weight scales by the same factor at once: so does u = sum W a
            syn["hebb"].run_regularly(f"P = P * {decay}", when="start", name="bdh_psc_hebb_decay_p")
            g["attn"].run_regularly(f"u = u * {decay}", clock=self.graded, when="start", name="bdh_psc_attn_decay_s")
        return syn

    def _link(self, g: dict) -> None:
        from brian2 import linked_var

        super()._link(g)
        idx = np.arange(len(g["x"]))
        for v in self._write()[1]:  # the partner's presynaptic variables (synapses cannot read links: copied)
            setattr(g["x"], f"{v}l", linked_var(g["x"], v, index=idx ^ 1))
