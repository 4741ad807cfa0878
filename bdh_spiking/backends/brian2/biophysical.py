"""Mode 'biophysical': the same network in physical units (not bit-comparable).

Leaky integrate-and-fire x and y neurons (tau_m, refractory period, threshold 1, reset 0, optional
membrane noise) driven through exponential current synapses (tau_syn), firing up to max_rate_hz;
each token is presented for token_ms. The graded parts (LayerNorm, residual, pair rotation,
gating product, readout) are computed between stage windows from decoded rates, as in mode
'discrete' (non-biological, documented). The Hebbian synapses are driven by a presynaptic spike
trace (tau_pre) and a postsynaptic trace of the residual unit (tau_post). Parameters:
bdh_spiking/data/biophysical.toml (overridable; ``params``). Specification:
docs/spiking-semantics.md, "Biophysical mode (Brian2 only; not bit-comparable)"; mapping and
measurements: docs/backends.md.

Every simulation step integrates every x and y neuron (clock-driven), so the result reports
``neuron_updates`` = 2 L B H N x the Brian2 steps run, and the numbers a rate needs in its
settings: ``sim_steps_per_token``, ``dt_ms``, ``token_ms`` (and ``simulated_ms``).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from ...errors import ConfigError
from ...semantics.ladder import DEFAULT_RUNG, top_rung
from ...semantics import (Plasticity, SimSettings, accumulate_stats, event_counts, fold_weights, gate_current,
                          gate_output, layer_norm, new_stats, oscillator_cos_sin, oscillator_payload,
                          residual_from_sum)
from ..base import RECORDABLE, Recorder, SimulationResult
from .codegen import configure
from .params import ALIASES, PARAMS, effective_window_ms, load_params, phase_steps
from .rungs import network_spec
from .topology import build_projections, free_previous_networks, live_array, live_views, progress_bar, run_scheduled

X_VARS = ("v", "I", "z", "gate", "count", "win", "Isave", "tr", "Pint", "post", "Qint", "integ", "q", "qw", "qw2",
          "read_now", "write_now", "scale_now")
Y_VARS = ("v", "I", "z", "gate", "count", "win", "Isave", "g", "emit_now")
LIF_MODEL = """
dv/dt = (mu - v) / tau_m{noise} : 1 (unless refractory)
dI/dt = (J - I) / tau_syn : 1
{drive}
J = gate * z : 1
z : 1
gate : 1
count : 1
win : 1
Isave : 1
"""
X_TRACES = """
dtr/dt = -tr / tau_pre : 1
dPint/dt = integ * tr / tau_pre : 1
dpost/dt = -post / tau_post : 1
dQint/dt = integ * tr * post / tau_pre : 1
integ : 1
q : 1
qw : 1
qw2 : 1
read_now : 1
write_now : 1
scale_now : 1
"""


def bio_decode(counts: torch.Tensor, theta: torch.Tensor, max_rate_hz: float, window_eff_ms: float):
    """Decoded value: count * theta / (max_rate * W_eff)."""
    return counts * theta / (max_rate_hz * window_eff_ms / 1000.0)


_TMAX_S = 1e6  # longest interspike interval of the rate curve, s (a bound, never reached in practice)


def _lif_drive_numpy(I, win, inv_rmax, neg_tref, tmax, inv_tau_m):
    I = np.asarray(I, dtype=np.float64)
    on = (I > 0) & (np.asarray(win) > 0)
    mu = np.zeros(np.broadcast(I, on).shape)
    x = np.clip(neg_tref + inv_rmax / np.clip(np.broadcast_to(I, on.shape)[on], 1e-9, 1.0), 0.0, tmax)
    mu[on] = 1.0 / (1.0 - np.exp(inv_tau_m * (-x)))
    return mu


# Same operations in the same order as the numpy form (and as Brian2 compiled the former inline
# expression), so the drive inside a window is unchanged; the branch skips the exp when idle.
_LIF_DRIVE_CYTHON = """
cdef double lif_drive(double I, double win, double inv_rmax, double neg_tref, double tmax, double inv_tau_m):
    cdef double c, x
    if I <= 0 or win <= 0:
        return 0.0
    c = I
    if c < 1e-9:
        c = 1e-9
    if c > 1.0:
        c = 1.0
    x = neg_tref + inv_rmax / c
    if x < 0.0:
        x = 0.0
    if x > tmax:
        x = tmax
    return 1.0 / (1.0 - exp(inv_tau_m * (-x)))
"""


def _make_lif_drive():
    from brian2 import Function

    f = Function(_lif_drive_numpy, arg_units=[1] * 6, return_unit=1, arg_types=["float"] * 6, return_type="float")
    f.implementations.add_implementation("cython", _LIF_DRIVE_CYTHON, name="lif_drive")
    return f


def _namespace(par: dict) -> dict:
    from brian2 import ms

    return {"tau_m": par["tau_m_ms"] * ms, "tau_syn": par["tau_syn_ms"] * ms, "sigma": par["noise"],
            "tau_pre": par["tau_pre_ms"] * ms, "tau_post": par["tau_post_ms"] * ms, "lif_drive": _make_lif_drive(),
            # the rate curve's constants in SI units, as Brian2 would fold them
            "inv_rmax": 1.0 / par["max_rate_hz"], "neg_tref": -(par["t_ref_ms"] / 1000.0), "tmax": _TMAX_S,
            "inv_tau_m": 1.0 / (par["tau_m_ms"] / 1000.0)}


def check_design(net) -> None:
    """The biophysical neurons represent one spike per step at most (a folded current of 1 is the
    top rate): a network whose thresholds were designed for more would be clipped. Refused."""
    design = (net.calibration or {}).get("design") or {}
    k = design.get("max_spikes", 1)
    if k is not None and k > 1:
        raise ConfigError(f"mode biophysical needs thresholds designed for one spike per step; this network's "
                          f"were designed for {k} (convert with design_max_spikes=1, as bdh-convert --mode "
                          f"biophysical does)")


class LadderMeasures:
    """What every rung reports besides fidelity, accumulated at the close of each window: the
    activation mass above the top current (clipped_fraction, x and y together and apart), and the
    rates of the neurons (median over active neuron x window, and the share active)."""

    def __init__(self, window_ms: dict, top_current: float):
        self.window_s = {pop: w / 1000.0 for pop, w in window_ms.items()}
        self.top = top_current
        self.mass = {pop: [0.0, 0.0] for pop in ("x", "y")}  # above top, total (activation units)
        self.rates, self.windows, self.active = [], 0, 0

    def window(self, pop: str, current: np.ndarray, counts: np.ndarray, theta: np.ndarray) -> None:
        pos = np.maximum(current, 0.0) * theta
        self.mass[pop][0] += float((np.maximum(current - self.top, 0.0) * theta).sum())
        self.mass[pop][1] += float(pos.sum())
        on = counts > 0
        self.windows += counts.size
        self.active += int(on.sum())
        self.rates.append((counts[on] / self.window_s[pop]).astype(np.float32))

    def summary(self) -> dict:
        above = sum(m[0] for m in self.mass.values())
        total = sum(m[1] for m in self.mass.values())
        rates = np.concatenate(self.rates) if self.rates else np.zeros(0, dtype=np.float32)
        out = {"clipped_fraction": above / total if total > 0 else 0.0,
               "rate_hz_median": float(np.median(rates)) if rates.size else 0.0,
               "fraction_active": self.active / self.windows if self.windows else 0.0}
        for pop, (a, t) in self.mass.items():
            out[f"clipped_fraction_{pop}"] = a / t if t > 0 else 0.0
        return out


@dataclasses.dataclass
class BioState:
    """What the graded stage carries between the steps of the run (per layer, and the current layer's)."""

    n_layer: int
    x: list = None  # each layer's residual input of the current token
    x_prev: list = None  # ... and of the previous token (the post trace starts there)
    pending: list = None  # the write waiting for its trace window: (t, x, x_prev) or None
    q_written: list = None  # the payload of each layer's last x window (rule 'rate')
    phases: dict = dataclasses.field(default_factory=dict)  # token -> oscillator (cos, sin)
    start_current: dict = dataclasses.field(default_factory=dict)  # (pop, layer) -> current at window start
    cx: torch.Tensor | None = None
    a_hat: torch.Tensor | None = None
    q: torch.Tensor | None = None
    weights_t: list = dataclasses.field(default_factory=list)  # monitored plastic weights: token, values
    weights_v: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.x, self.x_prev = [None] * self.n_layer, [None] * self.n_layer
        self.pending, self.q_written = [None] * self.n_layer, [None] * self.n_layer


class BiophysicalExecutor:
    name = "brian2"

    def __init__(self, net, settings: SimSettings, plasticity: Plasticity, record, progress, target, cache_dir,
                 params: dict, monitor_neurons: int = 8, monitor_dt_ms: float = 0.5, rung: str = DEFAULT_RUNG):
        check_design(net)
        self.spec = network_spec(rung, params)
        self.net, self.settings, self.plasticity = net, settings, plasticity
        self.keys = set(record)
        self.progress, self.target = progress, target
        self.cache_dir = configure(target, cache_dir)
        self.weights = fold_weights(net, torch.device("cpu"), torch.float64)
        self.dims = net.dims
        self.par = params
        self.stage_steps = phase_steps(params, self.dims.L)
        self.monitor_neurons = int(monitor_neurons)
        self.monitor_dt_ms = float(monitor_dt_ms)
        if self.monitor_neurons < 1 or self.monitor_neurons > self.dims.N:
            raise ConfigError(f"monitor_neurons must lie in [1, {self.dims.N}], got {monitor_neurons}")
        self.pipelined = params["schedule"] == "pipelined"
        self.trace_rule = params["rule"] == "trace"
        self.rate = params["max_rate_hz"]
        dt, P = params["dt_ms"], self.stage_steps
        self.window_ms = {"x": P * dt, "y": (P - 3) * dt}  # counting windows (y loses the read/load steps)
        self.window_eff_ms = {pop: effective_window_ms(w, params["tau_syn_ms"]) for pop, w in self.window_ms.items()}
        self.slot = 2 * P  # the steps of one layer: its x and y windows
        self.token_steps = self.dims.L * self.slot
        # step within a layer's slot -> what the graded stage does then
        self.table = {0: self.start_x, 1: self.after_start_x, P: self.end_x, P + 1: self.read, P + 2: self.start_y,
                      P + 3: self.after_start_y, self.slot - 1: self.end_y}

    # -- construction -------------------------------------------------------------------
    def build(self, batch: int):
        import brian2 as b2
        from brian2 import ms

        L, H, D, N = self.dims.L, self.dims.H, self.dims.D, self.dims.N
        par = self.par
        free_previous_networks()
        self.batch = batch
        self.clock = b2.Clock(dt=par["dt_ms"] * ms, name="bdh_bio_clock")
        ns = dict(_namespace(par), **self.spec.namespace)
        # mu: the drive for which the LIF rate is rmax * I (I in [0, 1], threshold units); 0 for I <= 0
        # and outside the population's window (an idle population relaxes to rest: most neurons are
        # idle at any time, and lif_drive skips the exp for them)
        lif = LIF_MODEL.format(noise=" + sigma * sqrt(2 / tau_m) * xi" if par["noise"] > 0 else "",
                               drive=self.spec.drive)
        res = b2.NeuronGroup(L * batch * D, "x : 1\nm : 1\nfire : 1", events={"drive": "fire > 0"},
                             clock=self.clock, name="bdh_bio_res", namespace=ns)
        attn = b2.NeuronGroup(L * batch * H * D, "u : 1\nun : 1\nxw : 1\ndxw : 1\nfire : 1",
                              events={"vdrive": "fire > 0"}, clock=self.clock, name="bdh_bio_attn", namespace=ns)
        xg = b2.NeuronGroup(L * batch * H * N, lif + X_TRACES, threshold="v > 1",
                            reset="v = 0\ncount = count + win\ntr = tr + win", refractory=par["t_ref_ms"] * ms,
                            method="euler", clock=self.clock, name="bdh_bio_x", namespace=ns,
                            events={"read": "read_now > 0 and q != 0", "write": "write_now > 0",
                                    "scale": "scale_now > 0"})
        yg = b2.NeuronGroup(L * batch * H * N, lif + "g : 1\nemit_now : 1\n", threshold="v > 1",
                            reset="v = 0\ncount = count + win", refractory=par["t_ref_ms"] * ms, method="euler",
                            clock=self.clock, name="bdh_bio_y", namespace=ns,
                            events={"emit": "emit_now > 0 and g != 0"})
        xg.gate, yg.gate, xg.post = 1.0, 1.0, 1.0
        self.groups = {"res": res, "attn": attn, "x": xg, "y": yg}
        self.synapses = build_projections(self.groups, self.weights, (L, batch, H, D, N), self.clock, ns, "bdh_bio_",
                                          "S = S + xw_post * qw_pre + dxw_post * qw2_pre")
        self.objects = [res, attn, xg, yg, *self.synapses.values()]
        self._build_monitors(xg, yg)
        neurons = (L, batch, H, N)
        self.vars = {"x": live_views(xg, X_VARS, neurons), "y": live_views(yg, Y_VARS, neurons)}
        self.res_vars = live_views(res, ("x", "m", "fire"), (L, batch, D))
        self.attn_vars = live_views(attn, ("u", "un", "xw", "dxw", "fire"), (L, batch, H, D))
        self.keep = live_array(self.synapses["hebb"], "keep")
        self.S_flat = live_array(self.synapses["hebb"], "S")
        return self

    def _build_monitors(self, xg, yg):
        """The first monitor_neurons neurons of head 0, batch row 0, in every layer (memory stays
        bounded); plastic synapses followed over time: layer l, batch 0, head 0, d < 4, n < 4."""
        import brian2 as b2
        from brian2 import ms

        L, B, H, D, N, count = self.dims.L, self.batch, self.dims.H, self.dims.D, self.dims.N, self.monitor_neurons
        self.monitored = [((l * B + 0) * H + 0) * N + k for l in range(L) for k in range(count)]
        self.monitors = {}
        if "spikes" in self.keys:  # one monitor per layer on a subgroup (SpikeMonitor takes no index list)
            for pop, grp in (("x", xg), ("y", yg)):
                for l in range(L):
                    base = ((l * B + 0) * H + 0) * N
                    self.monitors[f"spk_{pop}{l}"] = b2.SpikeMonitor(grp[base:base + count],
                                                                     name=f"bdh_bio_spk_{pop}{l}")
        if "v" in self.keys:
            mdt = max(self.monitor_dt_ms, self.par["dt_ms"]) * ms
            for pop, grp in (("x", xg), ("y", yg)):
                self.monitors[f"v_{pop}"] = b2.StateMonitor(grp, "v", record=self.monitored, dt=mdt,
                                                            name=f"bdh_bio_v_{pop}")
        self.objects += list(self.monitors.values())
        nd, nn = min(4, D), min(4, N)
        self.weight_index = [((((l * B) * H) * D + d) * N + n) for l in range(L) for d in range(nd) for n in range(nn)]
        self.weight_labels = [(l, 0, d, n) for l in range(L) for d in range(nd) for n in range(nn)]

    # -- windows --------------------------------------------------------------------------
    def open_window(self, pop: str, layer: int):
        pv = self.vars[pop]
        pv["v"][layer] = self.par["v_start"]
        pv["count"][layer] = 0.0
        pv["win"][layer] = 1.0
        if self.pipelined:  # the current the population had at the end of its previous window
            pv["I"][layer] = pv["Isave"][layer]
            self.state.start_current[(pop, layer)] = torch.from_numpy(np.clip(pv["Isave"][layer], 0.0, 1.0))

    def close_window(self, pop: str, layer: int) -> torch.Tensor:
        pv = self.vars[pop]
        self.measure.window(pop, pv["gate"][layer] * pv["z"][layer], pv["count"][layer],
                            self.weights[f"theta_{pop}"][layer].numpy())
        pv["win"][layer] = 0.0
        pv["Isave"][layer] = pv["I"][layer]
        pv["z"][layer] = 0.0
        return torch.from_numpy(pv["count"][layer].copy())

    def decode_counts(self, pop: str, layer: int, counts: torch.Tensor) -> torch.Tensor:
        """Counts minus the expected spikes of the starting current's transient (pipelined)."""
        if not self.pipelined:
            return counts
        start = self.state.start_current.get((pop, layer))
        if start is None:
            return counts
        lost_ms = self.window_ms[pop] - self.window_eff_ms[pop]
        start_rate = torch.from_numpy(np.asarray(self.spec.curve.rate_hz(start.numpy()), dtype=np.float64))
        return torch.clamp(counts - start_rate * lost_ms / 1000.0, min=0.0)

    def rate_decode(self, counts: torch.Tensor, theta: torch.Tensor, pop: str) -> torch.Tensor:
        """Counts over the effective window -> rate -> the rung's folded current -> activation."""
        rate_hz = counts.numpy() / (self.window_eff_ms[pop] / 1000.0)
        current = self.spec.curve.current(rate_hz, self.window_eff_ms[pop])  # capped where counts cannot resolve
        return theta * torch.from_numpy(np.asarray(current, dtype=np.float64))

    def decoded(self, pop: str, layer: int, counts: torch.Tensor) -> torch.Tensor:
        theta = self.weights[f"theta_{pop}"][layer]
        return self.rate_decode(self.decode_counts(pop, layer, counts), theta, pop)

    def prepare_write(self, layer: int, extend_ms: float = 0.0):
        """Post factors and trace payloads of the pending write (the previous token of this layer)."""
        t_prev, x_prev, x_prevprev = self.state.pending[layer]
        xv = self.vars["x"]
        if self.trace_rule:
            cos, sin = self.state.phases[t_prev]
            Pn, Qn = self._trace_integrals(layer, extend_ms)
            xv["qw"][layer] = oscillator_payload(self.decoded("x", layer, Pn), cos[0], sin[0]).numpy()
            theta = self.weights["theta_x"][layer]  # Q is decoded without the transient correction,
            # through the rung's map of P (Q = P x the post factor; for the linear map: Q's own decoding)
            p_val = self.rate_decode(Pn, theta, "x")
            ratio = torch.where(Pn > 0, Qn / torch.where(Pn > 0, Pn, torch.ones_like(Pn)), torch.zeros_like(Pn))
            qw2 = oscillator_payload(p_val * ratio, cos[0], sin[0])
            xv["qw2"][layer] = qw2.numpy()
            self.attn_vars["xw"][layer] = x_prev.numpy()[:, None, :]
            self.attn_vars["dxw"][layer] = (x_prevprev - x_prev).numpy()[:, None, :]
        else:  # the per-token product of decoded rates (mode 'discrete''s rule)
            xv["qw"][layer] = self.state.q_written[layer].numpy()
            xv["qw2"][layer] = 0.0
            self.attn_vars["xw"][layer] = x_prev.numpy()[:, None, :]
            self.attn_vars["dxw"][layer] = 0.0
        xv["write_now"][layer] = 1.0

    def _trace_integrals(self, layer: int, extend_ms: float):
        """The pre trace's and the pre x post traces' integrals over the write's window; at the end
        of the run, the rest of the window in closed form."""
        xv, par = self.vars["x"], self.par
        Pn, Qn = torch.from_numpy(xv["Pint"][layer].copy()), torch.from_numpy(xv["Qint"][layer].copy())
        if extend_ms > 0:
            tr, e = torch.from_numpy(xv["tr"][layer].copy()), torch.from_numpy(xv["post"][layer].copy())
            Pn = Pn + tr * (1 - math.exp(-extend_ms / par["tau_pre_ms"]))
            tau2 = 1.0 / (1.0 / par["tau_pre_ms"] + 1.0 / par["tau_post_ms"])
            Qn = Qn + tr * e * (tau2 / par["tau_pre_ms"]) * (1 - math.exp(-extend_ms / tau2))
        return Pn, Qn

    # -- the steps of one layer's slot (x window, read, y window) ------------------------------
    def start_x(self, t: int, layer: int):
        state = self.state
        if layer == 0:
            if t > 0:
                self.finish_token(t - 1)
            state.phases[t] = oscillator_cos_sin(self.weights["freqs"], torch.tensor([t]))
            x = layer_norm(self.weights["embed"][self.ids[:, t]])
        else:
            self.vars["y"]["emit_now"][layer - 1] = 0.0
            x = self.residual(state.x[layer - 1], layer - 1)
        if state.pending[layer] is not None:  # the write of token t-1 (traces over one token_ms)
            self.prepare_write(layer)
        # the post trace starts from the previous token's residual value (0 at a sequence start)
        state.x_prev[layer] = state.x[layer] if t > 0 else torch.zeros_like(x)
        state.x[layer] = x
        self.res_vars["x"][layer] = x.numpy()
        self.res_vars["fire"][layer] = 1.0
        self.vars["x"]["z"][layer] = 0.0
        self.open_window("x", layer)

    def after_start_x(self, t: int, layer: int):
        xv = self.vars["x"]
        self.res_vars["fire"][layer] = 0.0
        xv["write_now"][layer] = 0.0
        xv["Pint"][layer], xv["Qint"][layer], xv["post"][layer], xv["integ"][layer] = 0.0, 0.0, 1.0, 1.0

    def end_x(self, t: int, layer: int):
        state, xv = self.state, self.vars["x"]
        state.cx = self.close_window("x", layer)
        if self.pipelined:  # a pipeline stage integrates the traces over its own window only
            xv["integ"][layer] = 0.0
        state.a_hat = self.decoded("x", layer, state.cx)
        cos, sin = state.phases[t]
        state.q = oscillator_payload(state.a_hat, cos[0], sin[0])
        state.q_written[layer] = state.q
        xv["q"][layer] = state.q.numpy()
        if "weights" in self.keys and layer == self.dims.L - 1:
            state.weights_t.append(t)
            state.weights_v.append(self.S_flat[self.weight_index].copy())
        rule = self.plasticity.at(t)
        if rule.reset or rule.decay is not None:
            self.keep[:] = 0.0 if rule.reset else rule.decay
            xv["scale_now"][layer] = 1.0

    def read(self, t: int, layer: int):
        state, xv = self.state, self.vars["x"]
        xv["scale_now"][layer] = 0.0
        self.attn_vars["u"][layer] = 0.0
        xv["read_now"][layer] = 1.0
        # the write of this token (after its trace window) is pending from now on
        write = self.plasticity.at(t).write
        state.pending[layer] = (t, state.x[layer], state.x_prev[layer]) if write else None

    def start_y(self, t: int, layer: int):
        self.vars["x"]["read_now"][layer] = 0.0
        self.attn_vars["un"][layer] = layer_norm(torch.from_numpy(self.attn_vars["u"][layer].copy())).numpy()
        self.attn_vars["fire"][layer] = 1.0
        yv = self.vars["y"]
        yv["z"][layer] = 0.0
        a_hat = self.state.a_hat  # the y current is gate * z (gate_current with z = 1)
        yv["gate"][layer] = gate_current(self.net.gating, torch.ones_like(a_hat), a_hat).numpy()
        self.open_window("y", layer)

    def after_start_y(self, t: int, layer: int):
        self.attn_vars["fire"][layer] = 0.0

    def end_y(self, t: int, layer: int):
        state, yv = self.state, self.vars["y"]
        cy = self.close_window("y", layer)
        g = gate_output(self.net.gating, self.decoded("y", layer, cy), state.a_hat)
        yv["g"][layer] = g.numpy()
        self.res_vars["m"][layer] = 0.0
        yv["emit_now"][layer] = 1.0
        accumulate_stats(self.stats, (slice(None), t), self.event_settings, state.cx, cy, state.q, g)
        self.rec.put((slice(None), t), layer, state.cx, cy, None, None, state.a_hat, g)
        if self.bar is not None and layer == self.dims.L - 1:
            self.bar.update(1)

    def residual(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        return residual_from_sum(x, torch.from_numpy(self.res_vars["m"][layer].copy()))

    def finish_token(self, t: int):
        L = self.dims.L
        self.vars["y"]["emit_now"][L - 1] = 0.0
        self.logits[:, t] = self.residual(self.state.x[L - 1], L - 1) @ self.weights["lm_head"]

    def final_step(self, k: int):
        """After the last token: its logits, and the writes still pending (traces of the last
        token: the rest of its token_ms window in closed form)."""
        n_tokens = self.ids.shape[1]
        self.finish_token(n_tokens - 1)
        for layer in range(self.dims.L):
            if self.state.pending[layer] is not None:
                elapsed = (k - ((n_tokens - 1) * self.token_steps + layer * self.slot)) * self.par["dt_ms"]
                extend = 0.0 if self.pipelined else max(self.par["token_ms"] - elapsed, 0.0)
                self.prepare_write(layer, extend)

    def on_step(self, k: int):
        """The graded stage at the start of Brian2 timestep k."""
        n_steps = self.ids.shape[1] * self.token_steps
        if k >= n_steps:
            if k == n_steps:
                self.final_step(k)
            else:
                self.vars["x"]["write_now"][:] = 0.0
            return
        t, rem = divmod(k, self.token_steps)
        layer, j = divmod(rem, self.slot)
        step = self.table.get(j)
        if step is not None:
            step(t, layer)

    # -- the run ------------------------------------------------------------------------
    def run(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        batch, n_tokens = ids.shape
        self.build(batch)
        built = time.perf_counter()
        self.ids, self.state = ids, BioState(self.dims.L)
        self.rec = self._recorder(batch, n_tokens)
        # event statistics with the semantics of rate coding (whole spikes; timesteps is not read)
        self.event_settings = SimSettings(timesteps=self.token_steps, coding="rate", mode="biophysical")
        self.stats = new_stats(batch, n_tokens)
        self.measure = LadderMeasures(self.window_ms, self.spec.top_current)
        self.logits = torch.empty(batch, n_tokens, self.dims.V, dtype=torch.float64)
        self.bar = progress_bar(self.progress, n_tokens, "brian2 biophysical")
        import brian2 as b2

        b2.seed(self.par["seed"])
        total_steps = n_tokens * self.token_steps + 2  # + the final write and its clearing
        run_scheduled(self.objects, self.clock, total_steps, self.on_step, "bdh_bio_graded_stage")
        if self.bar is not None:
            self.bar.close()
        if "state" in self.keys:
            d = self.dims
            self.rec.out["state"] = torch.from_numpy(self.S_flat.copy()).view(d.L, batch, d.H, d.D, d.N)
        self._monitor_records(self.rec.out)
        return self._result(total_steps, started, built)

    def _recorder(self, batch: int, n_tokens: int) -> Recorder:
        rec = Recorder(tuple(k for k in self.keys if k in RECORDABLE), batch, n_tokens, self.dims, torch.float64)
        if "margins" in self.keys:  # continuous time: no near-threshold ties are defined
            rec.keys.discard("margins")
            shape = (batch, n_tokens, self.dims.L, self.dims.H, self.dims.N)
            rec.out["x_margins"] = torch.full(shape, math.inf, dtype=torch.float64)
            rec.out["y_margins"] = torch.full(shape, math.inf, dtype=torch.float64)
        return rec

    def _result(self, total_steps: int, started: float, built: float) -> SimulationResult:
        par, P, dt, L = self.par, self.stage_steps, self.par["dt_ms"], self.dims.L
        settings = {"timesteps": self.settings.timesteps, "coding": "lif-rate", "mode": "biophysical",
                    "gating": self.net.gating, "dtype": "float64", "device": "cpu", "target": self.target,
                    "biophysical": dict(par), "stage_steps": P, "stage_ms": P * dt,
                    "x_window_ms": self.window_ms["x"], "y_window_ms": self.window_ms["y"],
                    "x_window_eff_ms": self.window_eff_ms["x"], "y_window_eff_ms": self.window_eff_ms["y"],
                    "simulated_ms": total_steps * dt, "brian2_timesteps": total_steps, "build_s": built - started,
                    "latency_ms": (2 * L * par["token_ms"]) if self.pipelined else par["token_ms"],
                    "cache_dir": self.cache_dir if self.target == "cython" else None,
                    # what a rate needs: every x and y neuron is integrated at every simulation step
                    "sim_steps_per_token": self.token_steps, "dt_ms": dt, "token_ms": par["token_ms"],
                    "ladder": list(self.spec.rungs), "rung": self.spec.rungs[-1]}
        settings.update(self.measure.summary())
        result = SimulationResult(logits=self.logits, stats=self.stats, records=self.rec.out, backend="brian2",
                                  settings=settings, wall_s=time.perf_counter() - started)
        result.events = event_counts(self.stats, self.net, self.event_settings)
        d = self.dims
        result.events["neuron_updates"] = 2 * d.L * self.batch * d.H * d.N * total_steps
        settings["bio_s_per_wall_s"] = settings["simulated_ms"] / 1000.0 / max(result.wall_s, 1e-12)
        return result

    def _monitor_records(self, out: dict):
        from brian2 import ms

        for pop in ("x", "y"):
            if f"spk_{pop}0" in self.monitors:
                ts, idx = [], []
                for l in range(self.dims.L):
                    mon = self.monitors[f"spk_{pop}{l}"]
                    ts.append(np.asarray(mon.t / ms, dtype=np.float64))
                    idx.append(np.asarray(mon.i[:], dtype=np.int64) + self.monitored[l * self.monitor_neurons])
                out[f"spikes_{pop}"] = {"t_ms": torch.from_numpy(np.concatenate(ts)),
                                        "i": torch.from_numpy(np.concatenate(idx)), "neurons": list(self.monitored)}
            mon = self.monitors.get(f"v_{pop}")
            if mon is not None:
                out[f"v_{pop}"] = {"t_ms": torch.from_numpy(np.asarray(mon.t / ms, dtype=np.float64).copy()),
                                   "v": torch.from_numpy(np.asarray(mon.v, dtype=np.float64).copy()),
                                   "neurons": list(self.monitored)}
        if "weights" in self.keys:
            weights_t, weights_v = self.state.weights_t, self.state.weights_v
            out["weights"] = {"token": torch.tensor(weights_t, dtype=torch.int64),
                              "S": torch.from_numpy(np.asarray(weights_v, dtype=np.float64).reshape(
                                  len(weights_t), len(self.weight_index))),
                              "synapses": list(self.weight_labels)}
        out["neuron_labels"] = [(l, 0, 0, k) for l in range(self.dims.L) for k in range(self.monitor_neurons)]


def simulate_biophysical(net, ids, settings, plasticity, record, progress, options: dict) -> SimulationResult:
    """Options: the codegen target (resolved), cache_dir, params_file, monitor_neurons, monitor_dt_ms,
    ladder (the rung, or rungs, of the fidelity ladder: the highest one asked for is run, with every
    rung below it), brian2_device and threads (devices.py) and any parameter of ``params.PARAMS`` by
    name (None: not given). From rung psc on the network is run by psc.py (Brian2 objects only)."""
    from .devices import check_device

    overrides = {k: v for k, v in options.items() if k in PARAMS or k in ALIASES}
    params = load_params(options.get("params_file"), **overrides)
    rung = top_rung(options.get("ladder") or DEFAULT_RUNG)
    device = check_device(options.get("brian2_device"), rung, options.get("threads"))
    spec = network_spec(rung, params)
    check_design(net)
    if spec.executor == "psc":
        from .psc import simulate_psc

        return simulate_psc(net, ids, settings, plasticity, record, progress, spec, params, device,
                            options["target"], options.get("cache_dir"), options.get("threads"))
    ex = BiophysicalExecutor(net, settings, plasticity, record, progress, options["target"], options.get("cache_dir"),
                             params, monitor_neurons=options.get("monitor_neurons", 8),
                             monitor_dt_ms=options.get("monitor_dt_ms", 0.5), rung=rung)
    result = ex.run(ids.cpu())
    result.settings["brian2_device"] = "runtime"
    return result
