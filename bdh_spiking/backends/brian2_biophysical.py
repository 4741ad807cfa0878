"""Brian2 backend, mode 'biophysical': the same network in physical units (not bit-comparable).

Leaky integrate-and-fire x and y neurons (tau_m, refractory period, threshold 1, reset 0, optional
membrane noise) driven through exponential current synapses (tau_syn), firing up to max_rate_hz;
each token is presented for token_ms. The graded parts (LayerNorm, residual, pair rotation,
gating product, readout) are computed between stage windows from decoded rates, as in mode
'discrete' (non-biological, documented). The Hebbian synapses are driven by a presynaptic spike
trace (tau_pre) and a postsynaptic trace of the residual unit (tau_post). Parameters:
bdh_spiking/data/biophysical.toml (overridable). Specification: docs/spiking-semantics.md,
"Biophysical mode (Brian2 only; not bit-comparable)"; mapping and measurements: docs/backends.md.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..semantics import Plasticity, SimSettings, layer_norm, oscillator_cos_sin, oscillator_payload
from .base import RECORDABLE, Recorder, SimulationResult, accumulate_stats, event_counts, new_stats
from .brian2_backend import Brian2Executor, _configure, build_projections

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

BIO_RECORDABLE = ("spikes", "v", "weights")
SCHEDULES = ("pipelined", "sequential")
RULES = ("trace", "rate")
# flat parameter name -> (toml section or None for top level, type)
PARAMS = {
    "seed": (None, int), "dt_ms": ("time", float), "token_ms": ("time", float), "schedule": ("time", str),
    "tau_m_ms": ("neuron", float), "t_ref_ms": ("neuron", float), "max_rate_hz": ("neuron", float),
    "v_start": ("neuron", float), "noise": ("neuron", float), "tau_syn_ms": ("synapse", float),
    "rule": ("plasticity", str), "tau_pre_ms": ("plasticity", float), "tau_post_ms": ("plasticity", float),
}
ALIASES = {"max_rate": "max_rate_hz"}
EXTRA_OPTIONS = ("params_file", "monitor_neurons", "monitor_dt_ms")
MIN_PHASE_STEPS = 8  # a stage window needs room for its event steps (load, read, emit) and some spikes


def default_params_path() -> Path:
    return Path(str(resources.files("bdh_spiking") / "data" / "biophysical.toml"))


def _flatten(doc: dict, where: str) -> dict:
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in PARAMS or PARAMS[k][0] != key:
                    raise ConfigError(f"{where}: unknown parameter [{key}] {k} (known: {', '.join(PARAMS)})")
                out[k] = v
        elif key in PARAMS and PARAMS[key][0] is None:
            out[key] = value
        else:
            raise ConfigError(f"{where}: unknown parameter {key!r} (known: {', '.join(PARAMS)})")
    return out


def _read_toml(path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read biophysical parameter file {path}: {exc.strerror or exc}") from None
    try:
        return _flatten(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_params(params_file=None, **overrides) -> dict:
    """The shipped defaults, then params_file's values, then the overrides; validated."""
    p = _read_toml(default_params_path())
    if params_file is not None:
        p.update(_read_toml(params_file))
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        if key not in PARAMS:
            raise ConfigError(f"unknown biophysical parameter {key!r} (known: {', '.join(PARAMS)})")
        if value is not None:
            p[key] = value
    return validate_params(p)


def validate_params(p: dict) -> dict:
    out = {}
    for key, (_, typ) in PARAMS.items():
        if key not in p:
            raise ConfigError(f"biophysical parameter {key!r} is missing")
        value = p[key]
        if typ is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"biophysical parameter {key} must be a finite number, got {value!r}")
            value = float(value)
        elif typ is int:
            if isinstance(value, bool) or int(value) != value:
                raise ConfigError(f"biophysical parameter {key} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = str(value)
        out[key] = value
    for key in ("dt_ms", "token_ms", "tau_m_ms", "tau_syn_ms", "tau_pre_ms", "tau_post_ms", "max_rate_hz"):
        if not out[key] > 0:
            raise ConfigError(f"biophysical parameter {key} must be > 0, got {out[key]:g}")
    if out["t_ref_ms"] < 0:
        raise ConfigError(f"refractory period t_ref_ms must be >= 0, got {out['t_ref_ms']:g}")
    if out["noise"] < 0:
        raise ConfigError(f"noise must be >= 0, got {out['noise']:g}")
    if out["t_ref_ms"] > 0 and out["max_rate_hz"] >= 1000.0 / out["t_ref_ms"]:
        raise ConfigError(f"max_rate_hz {out['max_rate_hz']:g} must be below 1/t_ref = "
                          f"{1000.0 / out['t_ref_ms']:g} Hz")
    if not 0.0 <= out["v_start"] < 1.0:
        raise ConfigError(f"v_start must lie in [0, 1) (threshold 1), got {out['v_start']:g}")
    if out["token_ms"] < out["dt_ms"]:
        raise ConfigError(f"token_ms {out['token_ms']:g} is shorter than the time step dt_ms {out['dt_ms']:g}")
    if out["schedule"] not in SCHEDULES:
        raise ConfigError(f"unknown schedule {out['schedule']!r}: use one of {', '.join(SCHEDULES)}")
    if out["rule"] not in RULES:
        raise ConfigError(f"unknown plasticity rule {out['rule']!r}: use one of {', '.join(RULES)}")
    return out


def phase_steps(p: dict, n_layer: int) -> int:
    """Brian2 steps of one stage window (x or y phase of one layer)."""
    stage_ms = p["token_ms"] / (2 * n_layer) if p["schedule"] == "sequential" else p["token_ms"]
    steps = int(round(stage_ms / p["dt_ms"]))
    if steps < MIN_PHASE_STEPS:
        raise ConfigError(f"token_ms {p['token_ms']:g} with schedule {p['schedule']} leaves {stage_ms:g} ms per "
                          f"stage: at least {MIN_PHASE_STEPS} steps of dt_ms {p['dt_ms']:g} are needed")
    return steps


def effective_window_ms(window_ms: float, tau_syn_ms: float) -> float:
    """Integral over the window of a unit current switched on at its start through the synapse."""
    return window_ms - tau_syn_ms * (1.0 - math.exp(-window_ms / tau_syn_ms))


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


class BiophysicalExecutor:
    name = "brian2"

    def __init__(self, net, settings: SimSettings, plasticity: Plasticity, record, progress, target, cache_dir,
                 params: dict, monitor_neurons: int = 8, monitor_dt_ms: float = 0.5):
        from ..semantics import fold_weights

        self.net, self.s, self.p = net, settings, plasticity
        self.keys = set(record)
        self.progress, self.target = progress, target
        self.cache_dir = _configure(target, cache_dir)
        self.w = fold_weights(net, torch.device("cpu"), torch.float64)
        self.d = net.dims
        self.par = params
        self.P = phase_steps(params, self.d["L"])
        self.K = int(monitor_neurons)
        self.monitor_dt_ms = float(monitor_dt_ms)
        if self.K < 1 or self.K > self.d["N"]:
            raise ConfigError(f"monitor_neurons must lie in [1, {self.d['N']}], got {monitor_neurons}")

    def build(self, B: int):
        import brian2 as b2
        from brian2 import ms

        lif_drive = _make_lif_drive()

        L, H, D, N = self.d["L"], self.d["H"], self.d["D"], self.d["N"]
        par = self.par
        self.B = B
        self.clock = b2.Clock(dt=par["dt_ms"] * ms, name="bdh_bio_clock")
        tau_m_s, rmax = par["tau_m_ms"] / 1000.0, par["max_rate_hz"]
        ns = {"tau_m": par["tau_m_ms"] * ms, "tau_syn": par["tau_syn_ms"] * ms, "sigma": par["noise"],
              "tau_pre": par["tau_pre_ms"] * ms, "tau_post": par["tau_post_ms"] * ms, "lif_drive": lif_drive,
              # the rate curve's constants in SI units, as Brian2 would fold them
              "inv_rmax": 1.0 / rmax, "neg_tref": -(par["t_ref_ms"] / 1000.0), "tmax": _TMAX_S,
              "inv_tau_m": 1.0 / tau_m_s}
        noise = " + sigma * sqrt(2 / tau_m) * xi" if par["noise"] > 0 else ""
        # mu: the drive for which the LIF rate is rmax * I (I in [0, 1], threshold units); 0 for I <= 0
        # and outside the population's window (an idle population relaxes to rest: most neurons are
        # idle at any time, and lif_drive skips the exp for them)
        lif = f"""
        dv/dt = (mu - v) / tau_m{noise} : 1 (unless refractory)
        dI/dt = (J - I) / tau_syn : 1
        mu = lif_drive(I, win, inv_rmax, neg_tref, tmax, inv_tau_m) : 1
        J = gate * z : 1
        z : 1
        gate : 1
        count : 1
        win : 1
        Isave : 1
        """
        res = b2.NeuronGroup(L * B * D, "x : 1\nm : 1\nfire : 1", events={"drive": "fire > 0"},
                             clock=self.clock, name="bdh_bio_res", namespace=ns)
        attn = b2.NeuronGroup(L * B * H * D, "u : 1\nun : 1\nxw : 1\ndxw : 1\nfire : 1",
                              events={"vdrive": "fire > 0"}, clock=self.clock, name="bdh_bio_attn", namespace=ns)
        xg = b2.NeuronGroup(L * B * H * N, lif + """
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
        """, threshold="v > 1", reset="v = 0\ncount = count + win\ntr = tr + win", refractory=par["t_ref_ms"] * ms,
                            method="euler", clock=self.clock, name="bdh_bio_x", namespace=ns,
                            events={"read": "read_now > 0 and q != 0", "write": "write_now > 0",
                                    "scale": "scale_now > 0"})
        yg = b2.NeuronGroup(L * B * H * N, lif + "g : 1\nemit_now : 1\n", threshold="v > 1",
                            reset="v = 0\ncount = count + win", refractory=par["t_ref_ms"] * ms, method="euler",
                            clock=self.clock, name="bdh_bio_y", namespace=ns,
                            events={"emit": "emit_now > 0 and g != 0"})
        xg.gate, yg.gate, xg.post = 1.0, 1.0, 1.0

        self.groups = {"res": res, "attn": attn, "x": xg, "y": yg}
        self.synapses = build_projections(self.groups, self.w, (L, B, H, D, N), self.clock, ns, "bdh_bio_",
                                          "S = S + xw_post * qw_pre + dxw_post * qw2_pre")
        self.objects = [res, attn, xg, yg, *self.synapses.values()]
        # monitors: the first K neurons of head 0, batch row 0, in every layer (memory stays bounded)
        self.monitored = [((l * B + 0) * H + 0) * N + k for l in range(L) for k in range(self.K)]
        self.monitors = {}
        if "spikes" in self.keys:  # one monitor per layer on a subgroup (SpikeMonitor takes no index list)
            for pop, grp in (("x", xg), ("y", yg)):
                for l in range(L):
                    base = ((l * B + 0) * H + 0) * N
                    self.monitors[f"spk_{pop}{l}"] = b2.SpikeMonitor(grp[base:base + self.K],
                                                                     name=f"bdh_bio_spk_{pop}{l}")
        if "v" in self.keys:
            mdt = max(self.monitor_dt_ms, par["dt_ms"]) * ms
            for pop, grp in (("x", xg), ("y", yg)):
                self.monitors[f"v_{pop}"] = b2.StateMonitor(grp, "v", record=self.monitored, dt=mdt,
                                                            name=f"bdh_bio_v_{pop}")
        self.objects += list(self.monitors.values())
        # plastic synapses followed over time: layer l, batch 0, head 0, d < 4, n < 4
        nd, nn = min(4, D), min(4, N)
        self.weight_index = [((((l * B) * H) * D + d) * N + n) for l in range(L) for d in range(nd) for n in range(nn)]
        self.weight_labels = [(l, 0, d, n) for l in range(L) for d in range(nd) for n in range(nn)]
        return self

    arr = Brian2Executor.arr  # the live storage array of a Brian2 variable

    def run(self, ids: torch.Tensor) -> SimulationResult:
        import brian2 as b2

        started = time.perf_counter()
        B, Tn = ids.shape
        L, H, D, N = self.d["L"], self.d["H"], self.d["D"], self.d["N"]
        par, P = self.par, self.P
        dt = par["dt_ms"]
        pipelined = par["schedule"] == "pipelined"
        trace_rule = par["rule"] == "trace"
        # a previous run's Brian2 objects are reference cycles: free them before building the next
        # network (at the official size each holds ~8 GB)
        gc.collect()
        self.build(B)
        built = time.perf_counter()
        rec = Recorder(tuple(k for k in self.keys if k in RECORDABLE), B, Tn, self.d, torch.float64)
        if "margins" in self.keys:  # continuous time: no near-threshold ties are defined
            rec.keys.discard("margins")
            rec.out["x_margins"] = torch.full((B, Tn, L, H, N), math.inf, dtype=torch.float64)
            rec.out["y_margins"] = torch.full((B, Tn, L, H, N), math.inf, dtype=torch.float64)
        # event statistics with the semantics of rate coding, T = steps of one stage window
        ev_settings = SimSettings(timesteps=min(P, 4096), coding="rate", mode="biophysical")
        stats = new_stats(B, Tn)
        logits = torch.empty(B, Tn, self.d["V"], dtype=torch.float64)
        gain = self.net.gating == "gain"
        A = self.arr
        ns_, rs_, as_ = (L, B, H, N), (L, B, D), (L, B, H, D)
        xv = {k: A("x", k, ns_) for k in ("v", "I", "z", "gate", "count", "win", "Isave", "tr", "Pint", "post", "Qint",
                                          "integ", "q", "qw", "qw2", "read_now", "write_now", "scale_now")}
        yv = {k: A("y", k, ns_) for k in ("v", "I", "z", "gate", "count", "win", "Isave", "g", "emit_now")}
        rv = {k: A("res", k, rs_) for k in ("x", "m", "fire")}
        av = {k: A("attn", k, as_) for k in ("u", "un", "xw", "dxw", "fire")}
        keep = A("hebb", "keep")
        S_flat = A("hebb", "S")
        t_of = lambda a: torch.from_numpy(a.copy())  # noqa: E731
        Wx_ms, Wy_ms = P * dt, (P - 3) * dt  # counting windows (the y window loses the read/load steps)
        Wx_eff, Wy_eff = (effective_window_ms(Wx_ms, par["tau_syn_ms"]), effective_window_ms(Wy_ms, par["tau_syn_ms"]))
        rate = par["max_rate_hz"]
        st = {"x": [None] * L, "x_prev": [None] * L, "cs": {}, "pending": [None] * L}
        weights_t, weights_v = [], []

        I0 = {}  # pipelined: the current each population starts its window with (for the decoder)

        def open_window(pv, layer):
            pv["v"][layer] = par["v_start"]
            pv["count"][layer] = 0.0
            pv["win"][layer] = 1.0
            if pipelined:  # the current the population had at the end of its previous window
                pv["I"][layer] = pv["Isave"][layer]
                I0[(id(pv), layer)] = torch.from_numpy(np.clip(pv["Isave"][layer], 0.0, 1.0))

        def decode_counts(pv, layer, counts, window_ms, window_eff_ms):
            """Counts minus the expected spikes of the starting current's transient (pipelined)."""
            if not pipelined:
                return counts
            start = I0.get((id(pv), layer))
            if start is None:
                return counts
            return torch.clamp(counts - rate * start * (window_ms - window_eff_ms) / 1000.0, min=0.0)

        def close_window(pv, layer):
            pv["win"][layer] = 0.0
            pv["Isave"][layer] = pv["I"][layer]
            pv["z"][layer] = 0.0
            return t_of(pv["count"][layer])

        def prepare_write(layer, extend_ms=0.0):
            """Post factors and trace payloads of the pending write (the previous token of this layer)."""
            t_prev, x_prev, x_prevprev = st["pending"][layer]
            cos, sin = st["cs"][t_prev]
            if trace_rule:
                Pn, Qn = t_of(xv["Pint"][layer]), t_of(xv["Qint"][layer])
                if extend_ms > 0:  # end of the run: the rest of the trace window, in closed form
                    tr, e = t_of(xv["tr"][layer]), t_of(xv["post"][layer])
                    Pn = Pn + tr * (1 - math.exp(-extend_ms / par["tau_pre_ms"]))
                    tau2 = 1.0 / (1.0 / par["tau_pre_ms"] + 1.0 / par["tau_post_ms"])
                    Qn = Qn + tr * e * (tau2 / par["tau_pre_ms"]) * (1 - math.exp(-extend_ms / tau2))
                theta = self.w["theta_x"][layer]
                Pn = decode_counts(xv, layer, Pn, Wx_ms, Wx_eff)  # pipelined: the starting current's share
                qw = oscillator_payload(bio_decode(Pn, theta, rate, Wx_eff), cos[0], sin[0])
                qw2 = oscillator_payload(bio_decode(Qn, theta, rate, Wx_eff), cos[0], sin[0])
                xv["qw"][layer] = qw.numpy()
                xv["qw2"][layer] = qw2.numpy()
                av["xw"][layer] = x_prev.numpy()[:, None, :]
                av["dxw"][layer] = (x_prevprev - x_prev).numpy()[:, None, :]
            else:  # the per-token product of decoded rates (mode 'discrete''s rule)
                xv["qw"][layer] = st["q_written"][layer].numpy()
                xv["qw2"][layer] = 0.0
                av["xw"][layer] = x_prev.numpy()[:, None, :]
                av["dxw"][layer] = 0.0
            xv["write_now"][layer] = 1.0

        def start_x(t, layer):
            if layer == 0:
                if t > 0:
                    finish_token(t - 1)
                st["cs"][t] = oscillator_cos_sin(self.w["freqs"], torch.tensor([t]))
                x = layer_norm(self.w["embed"][ids[:, t]])
            else:
                yv["emit_now"][layer - 1] = 0.0
                x = layer_norm(st["x"][layer - 1] + layer_norm(t_of(rv["m"][layer - 1])))
            if st["pending"][layer] is not None:  # the write of token t-1 (traces over one token_ms)
                prepare_write(layer)
            # the post trace starts from the previous token's residual value (0 at a sequence start)
            st["x_prev"][layer] = st["x"][layer] if t > 0 else torch.zeros_like(x)
            st["x"][layer] = x
            rv["x"][layer] = x.numpy()
            rv["fire"][layer] = 1.0
            xv["z"][layer] = 0.0
            open_window(xv, layer)

        def after_start_x(t, layer):
            rv["fire"][layer] = 0.0
            xv["write_now"][layer] = 0.0
            xv["Pint"][layer], xv["Qint"][layer], xv["post"][layer], xv["integ"][layer] = 0.0, 0.0, 1.0, 1.0

        def end_x(t, layer):
            cx = close_window(xv, layer)
            if pipelined:  # a pipeline stage integrates the traces over its own window only
                xv["integ"][layer] = 0.0
            a_hat = bio_decode(decode_counts(xv, layer, cx, Wx_ms, Wx_eff), self.w["theta_x"][layer], rate, Wx_eff)
            cos, sin = st["cs"][t]
            q = oscillator_payload(a_hat, cos[0], sin[0])
            st.update(cx=cx, a_hat=a_hat, q=q)
            st.setdefault("q_written", [None] * L)[layer] = q
            xv["q"][layer] = q.numpy()
            if "weights" in self.keys and layer == L - 1:
                weights_t.append(t)
                weights_v.append(S_flat[self.weight_index].copy())
            if self.p.resets(t) or (t > 0 and self.p.decay != 1.0):
                keep[:] = 0.0 if self.p.resets(t) else self.p.decay
                xv["scale_now"][layer] = 1.0

        def read(t, layer):
            xv["scale_now"][layer] = 0.0
            av["u"][layer] = 0.0
            xv["read_now"][layer] = 1.0
            # the write of this token (after its trace window) is pending from now on
            st["pending"][layer] = (t, st["x"][layer], st["x_prev"][layer]) if self.p.writes(t) else None

        def start_y(t, layer):
            xv["read_now"][layer] = 0.0
            av["un"][layer] = layer_norm(t_of(av["u"][layer])).numpy()
            av["fire"][layer] = 1.0
            yv["z"][layer] = 0.0
            yv["gate"][layer] = st["a_hat"].numpy() if gain else 1.0
            open_window(yv, layer)

        def after_start_y(t, layer):
            av["fire"][layer] = 0.0

        def end_y(t, layer):
            cy = close_window(yv, layer)
            decoded = bio_decode(decode_counts(yv, layer, cy, Wy_ms, Wy_eff), self.w["theta_y"][layer], rate, Wy_eff)
            g = decoded if gain else st["a_hat"] * decoded
            yv["g"][layer] = g.numpy()
            rv["m"][layer] = 0.0
            yv["emit_now"][layer] = 1.0
            accumulate_stats(stats, (slice(None), t), ev_settings, st["cx"], cy, st["q"], g)
            rec.put((slice(None), t), layer, st["cx"], cy, None, None, st["a_hat"], g)
            if bar is not None and layer == L - 1:
                bar.update(1)

        def finish_token(t):
            yv["emit_now"][L - 1] = 0.0
            x = layer_norm(st["x"][L - 1] + layer_norm(t_of(rv["m"][L - 1])))
            logits[:, t] = x @ self.w["lm_head"]

        slot = 2 * P
        token_steps = L * slot
        final = {}

        def final_step():
            finish_token(Tn - 1)
            final["k"] = counter["k"]
            for layer in range(L):
                if st["pending"][layer] is not None:
                    # traces of the last token: integrate the rest of its token_ms window in closed form
                    elapsed = (counter["k"] - 1 - ((Tn - 1) * token_steps + layer * slot)) * dt
                    extend = 0.0 if pipelined else max(par["token_ms"] - elapsed, 0.0)
                    prepare_write(layer, extend)

        def clear_final():
            xv["write_now"][:] = 0.0

        table = {}
        for j, fn in ((0, start_x), (1, after_start_x), (P, end_x), (P + 1, read), (P + 2, start_y),
                      (P + 3, after_start_y), (slot - 1, end_y)):
            table[j] = fn
        total_steps = Tn * token_steps + 2
        counter = {"k": 0}

        def operation():
            k = counter["k"]
            counter["k"] = k + 1
            if k >= Tn * token_steps:
                (final_step if k == Tn * token_steps else clear_final)()
                return
            t, rem = divmod(k, token_steps)
            layer, j = divmod(rem, slot)
            fn = table.get(j)
            if fn is not None:
                fn(t, layer)

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=Tn, desc="brian2 biophysical", leave=False)
        b2.seed(par["seed"])
        op = b2.NetworkOperation(operation, clock=self.clock, when="start", name="bdh_bio_graded_stage")
        network = b2.Network(*self.objects, op)
        network.run(total_steps * self.clock.dt, namespace={})
        if bar is not None:
            bar.close()
        if counter["k"] != total_steps:
            raise RuntimeError(f"brian2 ran {counter['k']} timesteps, the schedule has {total_steps}")
        if "state" in self.keys:
            rec.out["state"] = torch.from_numpy(S_flat.copy()).view(L, B, H, D, N)
        self._monitor_records(rec.out, weights_t, weights_v)
        settings = {"timesteps": self.s.timesteps, "coding": "lif-rate", "mode": "biophysical",
                    "gating": self.net.gating, "dtype": "float64", "device": "cpu", "target": self.target,
                    "biophysical": dict(par), "stage_steps": P, "stage_ms": P * dt, "x_window_ms": Wx_ms,
                    "y_window_ms": Wy_ms, "x_window_eff_ms": Wx_eff, "y_window_eff_ms": Wy_eff,
                    "simulated_ms": total_steps * dt, "brian2_timesteps": total_steps, "build_s": built - started,
                    "latency_ms": (2 * L * par["token_ms"]) if pipelined else par["token_ms"],
                    "cache_dir": self.cache_dir if self.target == "cython" else None}
        result = SimulationResult(logits=logits, stats=stats, records=rec.out, backend="brian2", settings=settings,
                                  wall_s=time.perf_counter() - started)
        result.events = event_counts(stats, self.net, ev_settings)
        return result

    def _monitor_records(self, out, weights_t, weights_v):
        from brian2 import ms

        for pop in ("x", "y"):
            if f"spk_{pop}0" in self.monitors:
                ts, idx = [], []
                for l in range(self.d["L"]):
                    mon = self.monitors[f"spk_{pop}{l}"]
                    ts.append(np.asarray(mon.t / ms, dtype=np.float64))
                    idx.append(np.asarray(mon.i[:], dtype=np.int64) + self.monitored[l * self.K])
                out[f"spikes_{pop}"] = {"t_ms": torch.from_numpy(np.concatenate(ts)),
                                        "i": torch.from_numpy(np.concatenate(idx)), "neurons": list(self.monitored)}
            mon = self.monitors.get(f"v_{pop}")
            if mon is not None:
                out[f"v_{pop}"] = {"t_ms": torch.from_numpy(np.asarray(mon.t / ms, dtype=np.float64).copy()),
                                   "v": torch.from_numpy(np.asarray(mon.v, dtype=np.float64).copy()),
                                   "neurons": list(self.monitored)}
        if "weights" in self.keys:
            out["weights"] = {"token": torch.tensor(weights_t, dtype=torch.int64),
                              "S": torch.from_numpy(np.asarray(weights_v, dtype=np.float64).reshape(
                                  len(weights_t), len(self.weight_index))),
                              "synapses": list(self.weight_labels)}
        out["neuron_labels"] = [(l, 0, 0, k) for l in range(self.d["L"]) for k in range(self.K)]


def check_bio_record(record) -> set:
    keys = set(record)
    unknown = keys - set(RECORDABLE) - set(BIO_RECORDABLE)
    if unknown:
        raise ConfigError(f"cannot record {sorted(unknown)}: choose from "
                          f"{', '.join(RECORDABLE + BIO_RECORDABLE)}")
    return keys


def simulate_biophysical(net, ids, settings, plasticity, record, progress, options: dict) -> SimulationResult:
    target = options["target"]  # resolved by brian2_backend.simulate
    check_bio_record(record)
    overrides = {k: v for k, v in options.items() if k in PARAMS or k in ALIASES}
    params = load_params(options.get("params_file"), **overrides)
    ex = BiophysicalExecutor(net, settings, plasticity, record, progress, target, options.get("cache_dir"), params,
                             monitor_neurons=options.get("monitor_neurons", 8),
                             monitor_dt_ms=options.get("monitor_dt_ms", 0.5))
    return ex.run(ids)


# -- plots ---------------------------------------------------------------------------------
def plot_monitors(result, out_dir, prefix: str = "biophysical") -> list:
    """Raster, membrane traces and Hebbian weight trajectories from a biophysical run's records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rec, written = result.records, []
    token_ms = result.settings["biophysical"]["token_ms"]
    if "spikes_x" in rec:
        fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        for ax, pop in zip(axes, ("x", "y")):
            r = rec[f"spikes_{pop}"]
            pos = {n: i for i, n in enumerate(r["neurons"])}
            ax.plot(r["t_ms"].numpy(), [pos[int(i)] for i in r["i"]], "|", ms=4, color="k")
            ax.set_ylabel(f"{pop} neuron (layer-major)")
        axes[-1].set_xlabel("simulated time [ms]")
        fig.suptitle(f"spike raster (batch 0, head 0; token_ms {token_ms:g}, "
                     f"{result.settings['biophysical']['schedule']})", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{prefix}_raster.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "v_x" in rec:
        fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        for ax, pop in zip(axes, ("x", "y")):
            r = rec[f"v_{pop}"]
            for row in range(min(4, r["v"].shape[0])):
                ax.plot(r["t_ms"].numpy(), r["v"][row].numpy(), lw=0.7, label=f"neuron {r['neurons'][row]}")
            ax.axhline(1.0, color="r", lw=0.6, ls=":")
            ax.set_ylabel(f"{pop} membrane v")
            ax.legend(fontsize=6)
        axes[-1].set_xlabel("simulated time [ms]")
        fig.tight_layout()
        path = out_dir / f"{prefix}_membrane.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if "weights" in rec and len(rec["weights"]["token"]):
        r = rec["weights"]
        fig, ax = plt.subplots(figsize=(8, 4))
        for col in range(min(16, r["S"].shape[1])):
            l, _, d, n = r["synapses"][col]
            ax.plot(r["token"].numpy(), r["S"][:, col].numpy(), lw=0.8, label=f"l{l} d{d} n{n}")
        ax.set_xlabel("token (before its read)")
        ax.set_ylabel("plastic weight S (fixed frame)")
        ax.legend(fontsize=5, ncol=2)
        fig.tight_layout()
        path = out_dir / f"{prefix}_weights.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


SWEEPABLE = {"token-ms": "token_ms", "max-rate": "max_rate_hz", "noise": "noise"}


def parse_sweep(text: str):
    """'token-ms=50,100,200' -> ('token_ms', 'token-ms', [50.0, 100.0, 200.0])."""
    if "=" not in text:
        raise ConfigError(f"--sweep expects PARAM=v1,v2,... with PARAM one of {', '.join(SWEEPABLE)}; got {text!r}")
    name, values = text.split("=", 1)
    name = name.strip()
    if name not in SWEEPABLE:
        raise ConfigError(f"cannot sweep {name!r}: use one of {', '.join(SWEEPABLE)}")
    try:
        vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep {name}: expected comma-separated numbers, got {values!r}") from None
    if not vals:
        raise ConfigError(f"--sweep {name}: no values given")
    return SWEEPABLE[name], name, vals


def plot_sweep(name: str, values, runs, path) -> Path:
    """Top-1 agreement and cross-entropy difference vs dense against the swept parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].plot(values, [100 * r["top1_agreement"] for r in runs], "o-")
    axes[0].set_ylabel("top-1 agreement with dense (%)")
    axes[1].plot(values, [100 * r["ce_rel_diff"] for r in runs], "o-")
    axes[1].set_ylabel("cross-entropy difference vs dense (%)")
    for ax in axes:
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"brian2 biophysical: fidelity vs {name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- bdh-convert --mode biophysical ----------------------------------------------------------
def run_cli_biophysical(args, model, net, ids, backends, timesteps, device, dtype, text_name, log) -> int:
    """The report (or a sweep of reports) of mode 'biophysical'; called by bdh-convert."""
    import json

    from ..fileio import atomic_write_text
    from ..report import compare

    if args.mode != "biophysical":
        raise ConfigError("--token-ms, --max-rate, --noise, --bio-params, --sweep and --record belong to "
                          "--mode biophysical")
    if list(backends) != ["brian2"]:
        raise ConfigError(f"--mode biophysical runs on --backend brian2 only (got {','.join(backends)})")
    base = {"token_ms": args.token_ms, "max_rate_hz": args.max_rate, "noise": args.noise}
    base = {k: v for k, v in base.items() if v is not None}
    target = getattr(args, "brian2_target", "auto")
    if args.bio_params:
        base["params_file"] = args.bio_params
    record = [r.strip() for r in (args.record or "").split(",") if r.strip()]
    bad = set(record) - set(BIO_RECORDABLE)
    if bad:
        raise ConfigError(f"--record: unknown monitor(s) {sorted(bad)}: use {', '.join(BIO_RECORDABLE)}")
    sweep = parse_sweep(args.sweep) if args.sweep else None
    values = sweep[2] if sweep else [None]
    for v in values:  # every parameter set is validated before the first run
        load_params(base.get("params_file"), **{k: x for k, x in base.items() if k != "params_file"},
                    **({sweep[0]: v} if sweep else {}))
    reports, rows = [], []
    for v in values:
        opts = dict(base, **({sweep[0]: v} if sweep else {}))
        if sweep:
            log(f"sweep {sweep[1]} = {v:g}")
        # the reference runs mode 'discrete' at the same coding/T (mode_check=False): it is only the
        # baseline of the "vs ref" count columns; the fidelity numbers are against the dense model
        report = compare(model, net, ids, backends=["brian2"], timesteps=timesteps, codings=[args.coding],
                         include_graded=False, mode="biophysical", max_spikes=args.max_spikes, device=device,
                         dtype=dtype, text_name=text_name, seed=args.seed, progress=True, log=log,
                         backend_options={"reference": {"mode_check": False}, "brian2": dict(opts, target=target)})
        params = load_params(opts.get("params_file"), **{k: x for k, x in opts.items() if k != "params_file"})
        for run in report.runs:  # coding and T do not apply: LIF neurons, windows of token_ms
            run.update(biophysical=params, coding="lif", timesteps=None)
        if sweep:
            print(f"--- {sweep[1]} = {v:g} ---")
        print(report.table())
        reports.append(report)
        rows.append(report.runs[-1])
    if args.json:
        doc = reports[0].to_dict() if not sweep else {
            "sweep": {"parameter": sweep[1], "values": values}, "reports": [r.to_dict() for r in reports]}
        atomic_write_text(args.json, json.dumps(doc, indent=1, default=lambda o: o.tolist()
                                                if isinstance(o, torch.Tensor) else str(o)) + "\n")
        log(f"wrote {args.json}")
    if sweep:
        out = Path(args.plots or ".")
        path = plot_sweep(sweep[1], values, rows, out / f"fidelity_vs_{sweep[1].replace('-', '_')}.png")
        log(f"wrote {path}")
    elif args.plots:
        for path in reports[0].plot(args.plots):
            log(f"wrote {path}")
    if record:
        from .brian2_backend import simulate as b2_simulate

        settings = SimSettings(timesteps=timesteps[-1], coding=args.coding, max_spikes=args.max_spikes,
                               mode="biophysical")
        log(f"monitor run (first sequence, {ids.shape[1]} tokens): {', '.join(record)}")
        result = b2_simulate(net, ids[:1], settings, record=tuple(record), target=target, **base)
        if args.plots:
            for path in plot_monitors(result, args.plots):
                log(f"wrote {path}")
        else:
            log("--record without --plots: nothing written (give --plots DIR)")
    for flag in ("energy", "generate", "export_nir", "save"):
        if getattr(args, flag, None):
            log(f"--{flag.replace('_', '-')} is not supported with --mode biophysical: skipped")
    return 0
