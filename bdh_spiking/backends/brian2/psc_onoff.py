"""Rung ``onoff`` (issue 16) on the psc network (with rung dale below it): the signed quantities
that stand for rates are carried by pairs of non-negative ON/OFF units.

- residual stream: the residual unit's input xin (read by E) is carried by the pair [xin]+, [-xin]+
  (threshold-linear units whose potentials are +-xin), and its output xo becomes a pair of threshold-linear units,
  tau_g dv_on/dt = LN(h) - v_on, x_on = [v_on]+ and tau_g dv_off/dt = -LN(h) - v_off, x_off = [v_off]+;
  what it sends on reads on - off through two synapses (w and -w): the next layer's input
  (synapses now, weights +1 and -1), E (W_x and -W_x) and the readout (two traces z_on, z_off whose
  difference the linear readout lm_head reads after the run);
- attention readout: un becomes the pair u_on, u_off of LN(u) in the same way, read by E_v (W_y, -W_y);
- payload: x's rotated payload q is rectified into q_on = [q]+, q_off = [-q]+ on the graded clock;
  the plastic synapse reads S q_on - S q_off (the two synapses of one weight S) and writes with the
  pair's eligibility traces.
Rung dale below splits every -w path through interneurons, so dale_violations stays 0. With
tau_g = graded_dt the pairs are exact: x_on - x_off = v_on, the value psc's xo had.
Specification: docs/spiking-semantics.md, "Rung 5, onoff"."""

from __future__ import annotations

import re

import numpy as np

from .psc import RES_COMMON
from .psc_dale import GradedProjection
from .topology import connectivity, projection_weights

ONOFF_RES_MODEL = """
dm/dt = -m / tau_syn : 1
dxin/dt = (first * emb(t, bd) + (1 - first) * xp - xin) / tau_g : 1
dhh/dt = (xin + {norm_m} - hh) / tau_g : 1
dvon/dt = ({norm_h} - von) / tau_g : 1
dvoff/dt = (-({norm_h}) - voff) / tau_g : 1
xinon = clip(xin, 0, inf) : 1
xinoff = clip(-xin, 0, inf) : 1
xon = clip(von, 0, inf) : 1
xoff = clip(voff, 0, inf) : 1
dzon/dt = (xon - zon) / tau_e : 1
dzoff/dt = (xoff - zoff) / tau_e : 1
zr = zon - zoff : 1
{inputs}
{res_common}neg_on : 1
neg_off : 1
neg_in_on : 1
neg_in_off : 1
"""
ONOFF_ATTN_MODEL = """
u : 1
dvon/dt = ({norm_u} - von) / tau_g : 1
dvoff/dt = (-({norm_u}) - voff) / tau_g : 1
unon = clip(von, 0, inf) : 1
unoff = clip(voff, 0, inf) : 1
dxw/dt = (xl - xw) / tau_e : 1
la1 : 1 (linked)
la2 : 1 (linked)
xl : 1 (linked)
neg_on : 1
neg_off : 1
"""
X_PAIR = """qon : 1
qoff : 1
dqeon/dt = (qon - qeon) / tau_e : 1
dqeoff/dt = (qoff - qeoff) / tau_e : 1
neg_on : 1
neg_off : 1
"""
PAYLOAD_PAIR = "qon = clip(q, 0, inf)\nqoff = clip(-q, 0, inf)"
# the plastic synapse reads and writes the payload through the pair (one weight S: S from q_on, -S from q_off)
HEBB_PAIR = {r"\bq_pre\b": "(qon_pre - qoff_pre)", r"\bqe_pre\b": "(qeon_pre - qeoff_pre)"}
PAIRS = {"res": {"xon": "neg_on", "xoff": "neg_off", "xinon": "neg_in_on", "xinoff": "neg_in_off"}, "attn": {"unon": "neg_on", "unoff": "neg_off"},
         "x": {"qon": "neg_on", "qoff": "neg_off"}}


def _pair_code(code: str) -> str:
    for pattern, pair in HEBB_PAIR.items():
        code = re.sub(pattern, pair, code)
    return code


class OnOffPairs:
    """The onoff rung's mixin of psc.PscNetwork (see the module doc); needs DaleSplit below it."""

    relay_rate = "clip(vr, 0, inf)"  # the relays of ON/OFF units are threshold-linear rate units too

    def graded_static(self) -> list:
        L, B, H, D, N = self.dims.L, self.B, self.dims.H, self.dims.D, self.dims.N
        conn, wts = connectivity(L, B, H, D, N), projection_weights(self.w, L, B, H, D, N)
        below = np.arange((L - 1) * B * D)  # the residual units of layers 0..L-2 feed the layer above
        out = []
        for half, sign in (("on", 1.0), ("off", -1.0)):
            minus = "-" if sign < 0 else ""
            out += [GradedProjection(f"E_{half}", "res", f"xin{half}", f"res_in_{half}", "den", "Jx", *conn["E"],
                                     sign * wts["E"], f"E: the layer's input xin_{half} -> x dendrites ({minus}W_x)"),
                    GradedProjection(f"E_v_{half}", "attn", f"un{half}", f"attn_{half}", "den", "Jv", *conn["E_v"],
                                     sign * wts["E_v"], f"E_v: readout u_{half} -> y dendrites ({minus}W_y)"),
                    GradedProjection(f"next_{half}", "res", f"x{half}", f"res_{half}", "res", "xp", below,
                                     below + B * D, np.full(len(below), sign),
                                     f"residual stream: x_{half} of layer l -> input of layer l+1 ({sign:+g})")]
        return out

    def res_model(self) -> str:
        return ONOFF_RES_MODEL.format(norm_m=self.norm("m", "lm1", "lm2"), norm_h=self.norm("hh", "lh1", "lh2"),
                                      inputs=self.input_model("res", ("xp",)), res_common=RES_COMMON)

    def attn_model(self) -> str:
        return ONOFF_ATTN_MODEL.format(norm_u=self.norm("u", "la1", "la2"))

    def x_extra(self) -> str:
        return super().x_extra() + X_PAIR

    def payload_code(self) -> str:
        return super().payload_code() + "\n" + PAYLOAD_PAIR

    def presynaptic(self, code: str) -> str:
        return _pair_code(super().presynaptic(code))

    def hebb_synapse(self) -> dict:
        spec = dict(super().hebb_synapse())
        spec["model"] = self.presynaptic(spec["model"])
        spec["on_pre"] = {k: self.presynaptic(v) for k, v in spec["on_pre"].items()}
        return spec

    def rate_units(self) -> dict:
        units = dict(super().rate_units())
        units.update(PAIRS)
        return units

    def link_layers(self, res) -> None:
        """No linked variable: the residual stream reaches the next layer through the next_on/next_off synapses."""

    def linked_projections(self) -> list:
        return []
