"""Mode 'biophysical' from rung ``psc`` on: the whole network as Brian2 objects (no NetworkOperation,
no stage window, no reset), so it also runs on Brian2's standalone devices (devices.py).

Every byte is presented for token_ms and every layer runs all the time (the layers of a token are
not time-multiplexed: each settles on the one below it). x and y are the lif rung's LIF neurons
(tonic bias at rheobase, calibrated gain); their spikes reach other units as exponential
postsynaptic currents: x -> y (gate, one-to-one, tau_gate), y -> residual units (decoder,
tau_syn), x -> the plastic synapses' readout units (the read u = S q: driven by x's spikes with
plastic_read "event", psc_read.py; summed on every graded step with "summed", here). The graded units
(embedding input, LayerNorm, residual stream, pair rotation, readout) are Brian2 equations on a
slower clock (graded_dt_ms): LayerNorm reads the mean and variance of its (layer, sequence[, head])
group from summed variables of a norm group. The Hebbian write is one synaptic event per token at
its last step (a TimedArray gate), S += x_elig (x) q_elig from eligibility traces. The logits are
read out after the run from the last layer's readout trace at each byte's end.
Specification: docs/spiking-semantics.md, "Rung 3, psc"."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ...errors import ConfigError
from ...semantics import (SimSettings, accumulate_stats, event_counts, fold_weights, gate_output, layer_norm,
                          new_stats, oscillator_cos_sin, oscillator_payload)
from ..base import Recorder, SimulationResult
from .codegen import STANDALONE_GCC_ARGS, configure
from .devices import StandaloneSession, stable_clock, standalone_dir
from .psc_read import EventRead
from .topology import by_presynaptic, connectivity, free_previous_networks, projection_weights

LN_EPS = 1e-5  # torch's layer_norm
PSC_RECORDABLE = ("counts", "decoded", "state", "margins")  # margins: +inf (no ties in continuous time)

# what every form of the residual unit declares: its norm unit's sums, layer 0's stimulus and its index
RES_COMMON = """lm1 : 1 (linked)
lm2 : 1 (linked)
lh1 : 1 (linked)
lh2 : 1 (linked)
first : 1 (constant)
bd : integer (constant)
"""
RES_MODEL = """
dm/dt = -m / tau_syn : 1
dxin/dt = (first * emb(t, bd) + (1 - first) * xprev - xin) / tau_g : 1
dhh/dt = (xin + {norm_m} - hh) / tau_g : 1
dxo/dt = ({norm_h} - xo) / tau_g : 1
dzr/dt = (xo - zr) / tau_e : 1
xprev : 1 (linked)
{res_common}neg : 1
"""
ATTN_MODEL = """
u : 1
dun/dt = ({norm_u} - un) / tau_g : 1
dxw/dt = (xl - xw) / tau_e : 1
la1 : 1 (linked)
la2 : 1 (linked)
xl : 1 (linked)
neg : 1
"""
LN_EXPR = "({z} - {s1} * inv_d) / sqrt(clip({s2} * inv_d - ({s1} * inv_d)**2, 0, inf) + ln_eps)"
PAYLOAD = "q = cosp(t, nn) * a + sinp(t, nn) * sg * ap"  # rotate_pairs on the partner's filtered train
NEURON_MODEL = """
dv/dt = (mu - v) / tau_m{noise} : 1 (unless refractory)
dI/dt = (J - I) / tau_syn : 1
{drive}
dJm/dt = (J - Jm) / tau_e : 1
Jd : 1 (linked)
cnt : 1
"""
X_EXTRA = """
J = Jd : 1
da/dt = -a / tau_syn : 1
dqe/dt = (q - qe) / tau_e : 1
q : 1
ap : 1 (linked)
ka : 1 (constant)
kg : 1 (constant)
sg : 1 (constant)
nn : integer (constant)
neg : 1
"""
Y_EXTRA_GAIN = "J = gx * Jd : 1\ndgx/dt = -gx / tau_gate : 1\n"
Y_EXTRA_PRODUCT = "J = Jd : 1\ndgx/dt = -gx / tau_gate : 1\n"
# the units of signed graded nodes that stand for rates (residual xo, readout un, payload q) raise their
# flag once they go negative (negative_rates, issue 16); group -> {variable: its flag}
NEG_FLAG = "{flag} = clip({flag} + int({v} < 0), 0, 1)"
RATE_UNITS = {"res": {"xo": "neg"}, "attn": {"un": "neg"}, "x": {"q": "neg"}}  # x's q is flagged where it is set
DEN_MODEL = "Jx : 1\nJv : 1"


def check_psc_params(par: dict) -> dict:
    """The clocks must nest: dt | graded_dt | token_ms (whole steps), one-line errors otherwise."""
    def steps(a, b, what):
        k = a / b
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise ConfigError(f"rung psc: {what} must be a whole multiple of the one below it ({a:g} / {b:g} ms)")
        return int(round(k))

    fine = steps(par["graded_dt_ms"], par["dt_ms"], "graded_dt_ms")
    graded = steps(par["token_ms"], par["graded_dt_ms"], "token_ms")
    steps(par["dendrite_dt_ms"], par["graded_dt_ms"], "dendrite_dt_ms")
    steps(par["token_ms"], par["dendrite_dt_ms"], "token_ms")
    if max(par["graded_dt_ms"], par["dendrite_dt_ms"]) > min(par["tau_syn_ms"], par["tau_elig_ms"], par["tau_gate_ms"]):
        raise ConfigError("rung psc: graded_dt_ms and dendrite_dt_ms must not exceed tau_syn_ms, tau_gate_ms or "
                          "tau_elig_ms")
    return {"fine_per_graded": fine, "graded_per_token": graded, "token_steps": fine * graded}


class PscNetwork:
    """Builds the Brian2 objects of one run (batch x tokens) and reads the results back.

    Later rungs (issue 16) are mixins that override the construction hooks (``_graded_groups``,
    ``_neurons``, ``_synapses``, ``_link``, ``_monitors``, ``read``, ``constraint_counts``) and call
    ``super()``: ``network_class`` stacks them in ladder order."""

    def __init__(self, net, spec, par: dict, plasticity, keys):
        self.net, self.spec, self.par, self.plasticity, self.keys = net, spec, par, plasticity, set(keys)
        self.dims = net.dims
        self.w = fold_weights(net, torch.device("cpu"), torch.float64)
        self.steps = check_psc_params(par)

    # -- inputs as TimedArrays --------------------------------------------------------------
    def namespace(self, ids: torch.Tensor) -> dict:
        import brian2 as b2
        from brian2 import ms

        par, d = self.par, self.dims
        B, T = ids.shape
        tok = par["token_ms"] * ms
        emb = layer_norm(self.w["embed"][ids]).permute(1, 0, 2).reshape(T, B * d.D)  # the stimulus of byte t
        cos, sin = oscillator_cos_sin(self.w["freqs"], torch.arange(T))  # float32 phases, (T, N)
        gate = np.zeros(T * self.steps["token_steps"] + 2)
        gate[np.arange(1, T + 1) * self.steps["token_steps"] - 1] = 1.0  # the last step of every byte
        # the write pulse of byte t is delivered at its last fine step, when the plastic synapses' (graded)
        # clock already reads (t + 1) token_ms: there wrt and keepn must give w_t and byte t + 1's switches
        keep = np.array([1.0] + [self._keep(t + 1) for t in range(T)])
        write = np.array([0.0] + [1.0 if self.plasticity.at(t).write else 0.0 for t in range(T)])
        ns = {"tau_m": par["tau_m_ms"] * ms, "tau_syn": par["tau_syn_ms"] * ms, "sigma": par["noise"],
              "tau_gate": par["tau_gate_ms"] * ms, "tau_e": par["tau_elig_ms"] * ms,
              "tau_g": par["graded_dt_ms"] * ms, "inv_d": 1.0 / d.D, "ln_eps": LN_EPS,
              "emb": b2.TimedArray(emb.numpy().astype(np.float64), dt=tok),
              "cosp": b2.TimedArray(cos.double().numpy(), dt=tok), "sinp": b2.TimedArray(sin.double().numpy(), dt=tok),
              "wgate": b2.TimedArray(gate, dt=par["dt_ms"] * ms), "keepn": b2.TimedArray(keep, dt=tok),
              "wrt": b2.TimedArray(write, dt=tok)}
        ns.update(self.spec.namespace)
        return ns

    def _keep(self, t: int) -> float:
        rule = self.plasticity.at(t)
        return 0.0 if rule.reset else (rule.decay if rule.decay is not None else 1.0)

    # -- the equations later rungs change (hooks) -------------------------------------------------
    def norm(self, z: str, s1: str, s2: str) -> str:
        """The normalisation of z given the linked sums s1 = sum z, s2 = sum z^2 of its group: LayerNorm."""
        return LN_EXPR.format(z=z, s1=s1, s2=s2)

    def res_model(self) -> str:
        return RES_MODEL.format(norm_m=self.norm("m", "lm1", "lm2"), norm_h=self.norm("hh", "lh1", "lh2"),
                                res_common=RES_COMMON)

    def attn_model(self) -> str:
        return ATTN_MODEL.format(norm_u=self.norm("u", "la1", "la2"))

    def payload_code(self) -> str:
        """The x neuron's payload q (graded clock), what the plastic synapses read and write."""
        return PAYLOAD

    def payload_weights(self) -> tuple:
        """The payload's linear form for the event read (psc_read.py), as code on x at time {t}: the
        coefficient of a_n in its own q_n, and in its partner's q_p (PAYLOAD: sinp(p) * sg_p, sg_p = -sg_n)."""
        return "cosp({t}, nn)", "-sg * sinp({t}, pn)"

    def plastic_decay(self):
        """The factor by which every plastic weight shrinks at the start of each graded step (None: none)."""
        return None

    def den_model(self) -> str:
        """The dendritic sums Jx (of x) and Jv (of y), the variables the x and y neurons link to."""
        return DEN_MODEL

    def x_extra(self) -> str:
        """The x neuron's variables beyond the LIF membrane (its current, spike-train filter, payload)."""
        return X_EXTRA

    def rate_units(self) -> dict:
        """group -> {variable standing for a rate: its negative flag} (negative_rates counts the flags)."""
        return RATE_UNITS

    def neg_flags(self, group: str) -> str:
        """The code that raises the flags of ``group``'s rate variables once they go negative."""
        return "\n".join(NEG_FLAG.format(flag=f, v=v) for v, f in self.rate_units().get(group, {}).items())

    def presynaptic(self, code: str) -> str:
        """The plastic synapses' code as the rungs below carry the payload (psc: q itself; onoff: its pair)."""
        return code

    def hebb_synapse(self) -> dict:
        """The plastic synapses x -> readout units: model, the write at the plasticity pulse."""
        return {"model": "S : 1\nu_post = S * q_pre : 1 (summed)",
                "on_pre": {"write": "S = keepn(t) * (S + wrt(t) * xw_post * qe_pre)"}, "on_event": {"write": "write"}}

    # -- construction --------------------------------------------------------------------------
    def build(self, ids: torch.Tensor) -> list:
        import brian2 as b2
        from brian2 import ms

        par = self.par
        self.B, self.T = ids.shape
        ns = self.namespace(ids)
        self.fine = stable_clock(par["dt_ms"] * ms, "bdh_psc_fine")
        self.graded = stable_clock(par["graded_dt_ms"] * ms, "bdh_psc_graded")
        groups = self._graded_groups(ns)
        groups.update(self._neurons(ns))
        syn = self._synapses(groups, ns)
        self._link(groups)
        self.groups, self.syn = groups, syn
        return [*groups.values(), *syn.values(), *self._monitors(groups)]

    def _graded_groups(self, ns: dict) -> dict:
        import brian2 as b2

        L, B, H, D, N = self.dims.L, self.B, self.dims.H, self.dims.D, self.dims.N
        common = dict(clock=self.graded, namespace=ns, method="euler")
        res = b2.NeuronGroup(L * B * D, self.res_model(), name="bdh_psc_res", **common)
        l, b, d = np.unravel_index(np.arange(L * B * D), (L, B, D))
        res.first = (l == 0).astype(float)
        res.bd = b * D + d
        # order within a graded step: the read u (summed, order -1), its norm sums (order 0), then LN(u)
        # (order 1), so that LayerNorm sees the mean and variance of the u it normalises
        attn = b2.NeuronGroup(L * B * H * D, self.attn_model(), name="bdh_psc_attn", order=0, **common)
        attn.state_updater.order = 1
        rnorm = b2.NeuronGroup(L * B, "s_m1 : 1\ns_m2 : 1\ns_h1 : 1\ns_h2 : 1", name="bdh_psc_rnorm", **common)
        anorm = b2.NeuronGroup(L * B * H, "s_u1 : 1\ns_u2 : 1", name="bdh_psc_anorm", order=1, **common)
        # the dendritic sums (E, E_v: about half of the simulation time) on their own clock, sampled and held
        dendrite = stable_clock(self.par["dendrite_dt_ms"] * b2.ms, "bdh_psc_dendrite")
        den = b2.NeuronGroup(L * B * H * N, self.den_model(), name="bdh_psc_den", **dict(common, clock=dendrite))
        for key, group in (("res", res), ("attn", attn)):
            group.run_regularly(self.neg_flags(key), when="end", name=f"{group.name}_neg")
        return {"res": res, "attn": attn, "rnorm": rnorm, "anorm": anorm, "den": den}

    def _neurons(self, ns: dict) -> dict:
        import brian2 as b2
        from brian2 import ms

        par, L, B, H, N = self.par, self.dims.L, self.B, self.dims.H, self.dims.N
        noise = " + sigma * sqrt(2 / tau_m) * xi" if par["noise"] > 0 else ""
        base = NEURON_MODEL.format(noise=noise, drive=self.spec.drive)
        y_extra = Y_EXTRA_GAIN if self.net.gating == "gain" else Y_EXTRA_PRODUCT
        common = dict(threshold="v > 1", refractory=par["t_ref_ms"] * ms, method="euler", clock=self.fine,
                      namespace=ns)
        xg = b2.NeuronGroup(L * B * H * N, base + self.x_extra(), reset="v = 0\ncnt += 1\na += ka", name="bdh_psc_x",
                            events={"write": "wgate(t) > 0"}, **common)
        yg = b2.NeuronGroup(L * B * H * N, base + y_extra, reset="v = 0\ncnt += 1", name="bdh_psc_y", **common)
        # the filtered spike train a of an x neuron is its activation theta * rate / r_max
        theta_x = self._per_neuron(self.w["theta_x"])
        tau_s, tau_g, rmax = par["tau_syn_ms"] / 1000.0, par["tau_gate_ms"] / 1000.0, par["max_rate_hz"]
        xg.ka = theta_x / (rmax * tau_s)
        xg.kg = theta_x / (rmax * tau_g)
        n = np.arange(L * B * H * N) % N
        xg.nn = n
        xg.sg = np.where(n % 2 == 0, -1.0, 1.0)  # rotate_pairs: q_2k = c a_2k - s a_2k+1, q_2k+1 = c a_2k+1 + s a_2k
        xg.run_regularly(self.payload_code() + "\n" + self.neg_flags("x"), clock=self.graded,
                         when="before_groups", name="bdh_psc_x_rotate")
        return {"x": xg, "y": yg}

    def _per_neuron(self, theta: torch.Tensor) -> np.ndarray:
        """theta (L, H, N) in neuron order (l, b, h, n)."""
        L, H, N = theta.shape
        return np.broadcast_to(theta.numpy()[:, None], (L, self.B, H, N)).reshape(-1).astype(np.float64)

    def _synapses(self, g: dict, ns: dict) -> dict:
        import brian2 as b2

        L, B, H, D, N = self.dims.L, self.B, self.dims.H, self.dims.D, self.dims.N
        conn = connectivity(L, B, H, D, N)
        wts = projection_weights(self.w, L, B, H, D, N)
        graded = dict(clock=self.graded, namespace=ns)
        fine = dict(clock=self.fine, namespace=ns)
        syn = self.graded_projections(g, ns, conn, wts)
        syn.update({
            "hebb": b2.Synapses(g["x"], g["attn"], name="bdh_psc_hebb", **self.hebb_synapse(), **graded),
            "D": b2.Synapses(g["y"], g["res"], "w : 1 (constant)", on_pre=self.decoder_on_pre(), name="bdh_psc_D",
                             **fine),
            "gate": b2.Synapses(g["x"], g["y"], on_pre="gx_post += kg_pre", name="bdh_psc_gate", **fine),
            "rnorm": b2.Synapses(g["res"], g["rnorm"], "s_m1_post = m_pre : 1 (summed)\n"
                                 "s_m2_post = m_pre * m_pre : 1 (summed)\ns_h1_post = hh_pre : 1 (summed)\n"
                                 "s_h2_post = hh_pre * hh_pre : 1 (summed)", name="bdh_psc_rnorm_sum", **graded),
            "anorm": b2.Synapses(g["attn"], g["anorm"], "s_u1_post = u_pre : 1 (summed)\n"
                                 "s_u2_post = u_pre * u_pre : 1 (summed)", name="bdh_psc_anorm_sum", **graded),
        })
        # plastic synapses in order (l, b, h, n, d): consecutive synapses add into different readout
        # units, so the summed read u = S q has no dependency from one synapse to the next (2-2.7x faster
        # than (l, b, h, d, n)); each unit still sums its synapses in the order of n (same numbers)
        syn["hebb"].connect(i=by_presynaptic(conn["hebb"][0], L, B, H, D, N),
                            j=by_presynaptic(conn["hebb"][1], L, B, H, D, N))
        theta_y = np.broadcast_to(self.w["theta_y"].numpy()[:, None, :, :, None], (L, B, H, N, D)).reshape(-1)
        dec = wts["D"] * theta_y / (self.par["max_rate_hz"] * self.par["tau_syn_ms"] / 1000.0)
        pre, post, weight = self.decoder_split(conn["D"][0], conn["D"][1], dec)  # (not i, j: connect(j="i") below)
        syn["D"].connect(i=pre, j=post)
        syn["D"].w = weight
        syn["hebb"].S = 0.0
        syn["gate"].connect(j="i")
        syn["rnorm"].connect(i=np.arange(L * B * D), j=np.arange(L * B * D) // D)
        syn["anorm"].connect(i=np.arange(L * B * H * D), j=np.arange(L * B * H * D) // D)
        return syn

    def graded_projections(self, g: dict, ns: dict, conn: dict, wts: dict) -> dict:
        """The static projections of the graded units onto the dendritic sums, connected and weighted:
        E (residual xo -> Jx of the x neurons), E_v (readout un -> Jv of the y neurons)."""
        import brian2 as b2

        graded = dict(clock=self.graded, namespace=ns)
        syn = {"E": b2.Synapses(g["res"], g["den"], "w : 1 (constant)\nJx_post = w * xin_pre : 1 (summed)",
                                name="bdh_psc_E", **graded),
               "E_v": b2.Synapses(g["attn"], g["den"], "w : 1 (constant)\nJv_post = w * un_pre : 1 (summed)",
                                  name="bdh_psc_E_v", **graded)}
        for key in ("E", "E_v"):
            syn[key].connect(i=conn[key][0], j=conn[key][1])
        syn["E"].w, syn["E_v"].w = wts["E"], wts["E_v"]
        return syn

    def decoder_on_pre(self) -> str:
        """A y spike's (or its relay's) effect on the residual unit's decoder PSC m."""
        return "m_post += w" if self.net.gating == "gain" else "m_post += w * gx_pre"

    def decoder_split(self, i: np.ndarray, j: np.ndarray, w: np.ndarray) -> tuple:
        """(pre, post, weight) of the decoder synapses y -> residual units that y makes itself (psc: all)."""
        return i, j, w

    def link_layers(self, res) -> None:
        """The residual stream from layer l-1 to layer l: the input xin of layer l reads xo below (linked)."""
        from brian2 import linked_var

        B, D = self.B, self.dims.D
        idx = np.arange(self.dims.L * B * D)
        res.xprev = linked_var(res, "xo", index=np.where(idx >= B * D, idx - B * D, idx))  # layer l-1, same b, d

    def _link(self, g: dict) -> None:
        from brian2 import linked_var

        L, B, H, D, N = self.dims.L, self.B, self.dims.H, self.dims.D, self.dims.N
        res, attn = g["res"], g["attn"]
        idx = np.arange(L * B * D)
        self.link_layers(res)
        for mine, theirs in (("lm1", "s_m1"), ("lm2", "s_m2"), ("lh1", "s_h1"), ("lh2", "s_h2")):
            setattr(res, mine, linked_var(g["rnorm"], theirs, index=idx // D))
        a = np.arange(L * B * H * D)
        attn.la1 = linked_var(g["anorm"], "s_u1", index=a // D)
        attn.la2 = linked_var(g["anorm"], "s_u2", index=a // D)
        lb, d = a // (H * D), a % D
        if "xl" in attn.equations.names:  # rung local-plasticity replaces it by a synapse (psc_local.py)
            attn.xl = linked_var(res, "xin", index=lb * D + d)  # the layer's input x, the write's post factor
        g["x"].Jd = linked_var(g["den"], "Jx")
        g["y"].Jd = linked_var(g["den"], "Jv")
        g["x"].ap = linked_var(g["x"], "a", index=np.arange(L * B * H * N) ^ 1)  # the pair partner

    def _monitors(self, g: dict) -> list:
        import brian2 as b2
        from brian2 import ms

        L, B, D = self.dims.L, self.B, self.dims.D
        # samples at every byte's boundary (state at the end of the byte before)
        tok = stable_clock(self.par["token_ms"] * ms, "bdh_psc_token")
        last = np.arange((L - 1) * B * D, L * B * D)
        self.mon = {"x": b2.StateMonitor(g["x"], ["cnt", "Jm"], record=True, clock=tok, when="start", name="bdh_psc_mx"),
                    "y": b2.StateMonitor(g["y"], ["cnt", "Jm"], record=True, clock=tok, when="start", name="bdh_psc_my"),
                    "z": b2.StateMonitor(g["res"], "zr", record=last, clock=tok, when="start", name="bdh_psc_mz")}
        return list(self.mon.values())

    # -- constraints counted on the built network (issue 16) -------------------------------------
    def static_projections(self) -> list:
        """(presynaptic population, presynaptic unit of each synapse, its signed weight) of every
        static projection; rungs that split projections (dale) return their own."""
        s, out = self.syn, []
        for key, pre in (("E", "res"), ("E_v", "attn"), ("D", "y"), ("gate", "x")):
            w = np.asarray(s[key].kg_pre[:] if key == "gate" else s[key].w[:], dtype=np.float64)
            out.append((pre, np.asarray(s[key].i[:]), w))
        return out

    def constraint_counts(self) -> dict:
        """dale_violations: units whose outgoing static synapses carry both signs; negative_rates:
        units standing for rates (residual, readout, payload) that went negative during the run."""
        signs = {}
        for pre, i, w in self.static_projections():
            for sign, mask in ((1, w > 0), (-1, w < 0)):
                signs.setdefault((pre, sign), set()).update(np.unique(i[mask]).tolist())
        pops = {pre for pre, _ in signs}
        dale = sum(len(signs.get((p, 1), set()) & signs.get((p, -1), set())) for p in pops)
        neg = sum(int(np.asarray(getattr(self.groups[g], f)[:]).sum()) for g, flags in self.rate_units().items()
                  for f in set(flags.values()))
        return {"dale_violations": int(dale), "negative_rates": neg}

    # -- results -------------------------------------------------------------------------------
    def read(self) -> dict:
        """Per-byte spike counts and mean currents (B, T, L, H, N), the readout (B, T, D), S."""
        L, B, H, D, N, T = self.dims.L, self.B, self.dims.H, self.dims.D, self.dims.N, self.T
        out = {}
        for pop in ("x", "y"):
            m = self.mon[pop]
            cnt = np.asarray(m.cnt[:], dtype=np.float64)[:, : T + 1]  # (neurons, T + 1)
            shape = (L, B, H, N, T)
            out[f"{pop}_counts"] = np.diff(cnt, axis=1).reshape(shape).transpose(1, 4, 0, 2, 3)
            out[f"{pop}_J"] = np.asarray(m.Jm[:], dtype=np.float64)[:, 1: T + 1].reshape(shape).transpose(1, 4, 0, 2, 3)
        z = np.asarray(self.mon["z"].zr[:], dtype=np.float64)[:, 1: T + 1]  # (B * D, T)
        out["z"] = z.reshape(B, D, T).transpose(0, 2, 1)
        S = np.asarray(self.syn["hebb"].S[:], dtype=np.float64).reshape(L, B, H, N, D)
        out["S"] = np.ascontiguousarray(S.swapaxes(3, 4))  # (L, B, H, D, N) as the other modes
        out.update(self.constraint_counts())
        return out


def network_class(parts, plastic_read: str = "summed") -> type:
    """PscNetwork with the rungs' mixins on top, the last rung first in the MRO (it sees the others);
    the event-driven plastic read (psc_read.py) above them all (it rewrites the write they define)."""
    parts = tuple(parts) + ((EventRead,) if plastic_read == "event" else ())
    if not parts:
        return PscNetwork
    return type("PscNetwork_" + "_".join(p.__name__ for p in parts), (*reversed(parts), PscNetwork), {})


def _run(objects: list, duration) -> None:
    import brian2 as b2

    b2.Network(*objects).run(duration, namespace={})


def run_network(pn: PscNetwork, ids: torch.Tensor, device: str, target: str, cache_dir, threads) -> tuple:
    """Builds and runs the network on ``device``; (results, build dir or None, seconds to build + run)."""
    import brian2 as b2
    from brian2 import ms

    free_previous_networks()
    duration = (ids.shape[1] * pn.par["token_ms"] + pn.par["dt_ms"]) * ms
    if device == "runtime":
        configure(target, cache_dir)
        b2.seed(pn.par["seed"])
        _run(pn.build(ids), duration)
        return pn.read(), None
    d = pn.dims
    key = {"dims": [d.L, d.H, d.D, d.N, d.V], "batch": int(ids.shape[0]),
           "rungs": list(pn.spec.rungs), "params": pn.par, "gating": pn.net.gating, "threads": threads,
           "device": device, "keys": sorted(pn.keys)}
    directory = standalone_dir(key)
    with StandaloneSession(device, directory, threads, STANDALONE_GCC_ARGS) as session:
        b2.prefs.core.default_float_dtype = np.float64
        b2.seed(pn.par["seed"])
        _run(pn.build(ids), duration)
        session.build()
        out = pn.read()
    return out, str(directory)


class LadderTokens:
    """The ladder's measures over (neuron, byte) pairs (biophysical.LadderMeasures' definitions)."""

    @staticmethod
    def summary(res: dict, theta: dict, token_s: float, top: float) -> dict:
        mass, rates, active, total = {}, [], 0, 0
        for pop in ("x", "y"):
            J, c, th = res[f"{pop}_J"], res[f"{pop}_counts"], theta[pop]
            mass[pop] = (float((np.maximum(J - top, 0.0) * th).sum()), float((np.maximum(J, 0.0) * th).sum()))
            on = c > 0
            active += int(on.sum())
            total += c.size
            rates.append(c[on] / token_s)
        above, tot = sum(m[0] for m in mass.values()), sum(m[1] for m in mass.values())
        r = np.concatenate(rates)
        out = {"clipped_fraction": above / tot if tot > 0 else 0.0,
               "rate_hz_median": float(np.median(r)) if r.size else 0.0,
               "fraction_active": active / total if total else 0.0}
        for pop, (a, t) in mass.items():
            out[f"clipped_fraction_{pop}"] = a / t if t > 0 else 0.0
        return out


def simulate_psc(net, ids, settings, plasticity, record, progress, spec, par: dict, device: str, target: str,
                 cache_dir, threads) -> SimulationResult:
    """The psc rung's run: Brian2 objects only, on the runtime or a standalone device."""
    started = time.perf_counter()
    unsupported = sorted(set(record) - set(PSC_RECORDABLE))
    if unsupported:
        raise ConfigError(f"rung {spec.rungs[-1]} records {', '.join(PSC_RECORDABLE)}; not {', '.join(unsupported)}")
    pn = network_class(spec.parts, spec.plastic_read)(net, spec, par, plasticity, record)
    res, build_dir = run_network(pn, ids.cpu(), device, target, cache_dir, threads)
    return _result(pn, ids, res, settings, started, device, target, build_dir, threads)


def _result(pn: PscNetwork, ids, res: dict, settings, started: float, device, target, build_dir, threads):
    d, par, B, T = pn.dims, pn.par, ids.shape[0], ids.shape[1]
    w, token_s = pn.w, par["token_ms"] / 1000.0
    counts = {p: torch.from_numpy(np.ascontiguousarray(res[f"{p}_counts"])) for p in ("x", "y")}
    scale = {p: w[f"theta_{p}"] / (par["max_rate_hz"] * token_s) for p in ("x", "y")}  # count -> activation
    rec = Recorder(tuple(k for k in pn.keys if k in PSC_RECORDABLE), B, T, d, torch.float64)
    rec.keys.discard("margins")  # left at +inf: continuous time defines no near-threshold ties
    event_settings = SimSettings(timesteps=pn.steps["token_steps"], coding="rate", mode="biophysical")
    stats = new_stats(B, T)
    cos, sin = oscillator_cos_sin(w["freqs"], torch.arange(T))
    for t in range(T):
        for layer in range(d.L):
            cx, cy = counts["x"][:, t, layer], counts["y"][:, t, layer]
            a_hat, y_hat = cx * scale["x"][layer], cy * scale["y"][layer]
            g = gate_output(pn.net.gating, y_hat, a_hat)
            q = oscillator_payload(a_hat, cos[t], sin[t])
            accumulate_stats(stats, (slice(None), t), event_settings, cx, cy, q, g)
            rec.put((slice(None), t), layer, cx, cy, None, None, a_hat, g)
    if "state" in pn.keys:
        rec.out["state"] = torch.from_numpy(res["S"])
    logits = torch.from_numpy(np.ascontiguousarray(res["z"])) @ w["lm_head"]
    theta = {p: pn._per_neuron(w[f"theta_{p}"]).reshape(d.L, B, d.H, d.N).transpose(1, 0, 2, 3)[:, None]
             for p in ("x", "y")}
    simulated_ms = T * par["token_ms"] + par["dt_ms"]
    s = {"timesteps": settings.timesteps, "coding": "lif-rate", "mode": "biophysical", "gating": pn.net.gating,
         "dtype": "float64", "device": "cpu", "target": target if device == "runtime" else None,
         "brian2_device": device, "threads": threads, "build_dir": build_dir, "biophysical": dict(par),
         "simulated_ms": simulated_ms, "brian2_timesteps": T * pn.steps["token_steps"] + 1,
         "latency_ms": par["token_ms"], "sim_steps_per_token": pn.steps["token_steps"], "dt_ms": par["dt_ms"],
         "token_ms": par["token_ms"], "ladder": list(pn.spec.rungs), "rung": pn.spec.rungs[-1],
         "plastic_read": pn.spec.plastic_read}
    s.update(LadderTokens.summary(res, theta, token_s, pn.spec.top_current))
    s.update({k: res[k] for k in ("dale_violations", "negative_rates")})
    s.update(res.get("rung_settings", {}))  # what later rungs report (dale: its inhibitory populations)
    result = SimulationResult(logits=logits, stats=stats, records=rec.out, backend="brian2", settings=s,
                              wall_s=time.perf_counter() - started)
    result.events = event_counts(stats, pn.net, event_settings)
    result.events["neuron_updates"] = 2 * d.L * B * d.H * d.N * s["brian2_timesteps"]
    s["bio_s_per_wall_s"] = simulated_ms / 1000.0 / max(result.wall_s, 1e-12)
    return result
