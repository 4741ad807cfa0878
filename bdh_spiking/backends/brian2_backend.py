"""Brian2 backend: the spiking network as Brian2 NeuronGroups and Synapses (mode 'discrete', exact).

The network is built once per ``simulate`` call and run in ONE ``Network.run``; a Brian2
``NetworkOperation`` (Python, at the 'start' slot of a timestep) does the graded parts between
the spiking phases (LayerNorm, decoding, the pair rotation, the residual, the readout).
See the "Brian2" section of docs/backends.md for the mapping; in short (one timestep = one
Brian2 ``dt``; every variable dimensionless):

* ``res``  NeuronGroup (L*B*D): the residual units of each layer, ``x`` (graded layer input) and
  ``m`` (decoder sum). Custom event ``drive`` sends ``x`` through the E synapses.
* ``xg``, ``yg`` NeuronGroups (L*B*H*N each): the unit-threshold IF neurons of every layer, head and
  batch element. ``v`` integrates ``I_in = gate * z`` exactly once per timestep
  (``run_regularly('v = v + active * I_in', when='groups')``; no ODE solver, so no Euler rounding),
  then threshold ``v > 1`` and reset ``v = v - 1`` (rate), the multispike reset
  ``s = clip(ceil(v) - 1, 0, K); v = v - s`` or the graded spike ``count += v; v = 0``.
  ``z`` is filled by the static synapses (E, resp. E_v); ``gate`` is 1 for x neurons and for y
  neurons with product gating, a_hat for y neurons with gain gating.
* ``attn`` NeuronGroup (L*B*H*D): the per-head readout units ``u`` of the plastic synapses, their
  LayerNorm ``un`` (custom event ``vdrive`` sends it through E_v) and the layer input ``x_res``
  (the Hebbian write's post factor).
* Synapses ``E`` (res -> xg, ``z_post += w * x_pre``), ``E_v`` (attn -> yg), ``D`` (yg -> res,
  ``m_post += w * g_pre``), all on custom events, weights from ``semantics.fold_weights``;
  ``hebb`` (xg -> attn) holds the plastic state ``S`` and has three event pathways: ``scale``
  (``S = S * keep``: decay or reset), ``read`` (``u_post += S * q_pre``) and ``write``
  (``S = S + x_res_post * q_pre``), triggered by the active columns (``q != 0``), in that order
  on successive timesteps (read before write).
"""

from __future__ import annotations

import gc
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..semantics import (Plasticity, SimSettings, decode, fold_weights, layer_norm, oscillator_cos_sin,
                         oscillator_payload)
from .base import Recorder, SimulationResult, accumulate_stats, check_record, event_counts, new_stats

NAME = "brian2"
TARGETS = ("auto", "cython", "numpy")
# overrides what target 'auto' means (CI sets numpy: the cold cython compile takes ~2 minutes)
TARGET_ENV = "BDH_SPIKING_BRIAN2_TARGET"
OPTIONS = ("target", "cache_dir")
# mode 'biophysical' also takes its parameters (bdh_spiking/data/biophysical.toml) by name
BIO_OPTIONS = ("params_file", "monitor_neurons", "monitor_dt_ms", "seed", "dt_ms", "token_ms", "schedule",
               "tau_m_ms", "t_ref_ms", "max_rate_hz", "max_rate", "v_start", "noise", "tau_syn_ms", "rule",
               "tau_pre_ms", "tau_post_ms")
_BIG = 1e300  # initial margin (finite, so the exact min-select below never multiplies 0 * inf)
# Cython is compiled without -ffast-math and without FMA contraction: v + I, S + x * q etc. must
# round exactly as torch does.
_EXACT_GCC_ARGS = ["-w", "-O2", "-fno-fast-math", "-ffp-contract=off", "-std=c++11"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bdh-spiking" / "brian2"


_CYTHON_OK: dict = {}  # cache dir -> (works, reason): the test compile runs (and warns) once per process
_COLD_NOTICE: set = set()  # cache dirs whose "compiling" notice was printed


def _cython_works(cache: str) -> tuple[bool, str]:
    """(works, reason); the first failure in a process also warns (one line), later calls do not."""
    if cache not in _CYTHON_OK:
        import logging

        from brian2.codegen.runtime.cython_rt.cython_rt import CythonCodeObject

        # without a compiler Brian2 logs several multi-line warnings; ours is the one line below
        loggers = [logging.getLogger(n) for n in ("brian2.codegen.runtime.cython_rt.cython_rt",
                                                  "brian2.codegen.cpp_prefs")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            ok = bool(CythonCodeObject.is_available())
        except Exception:  # noqa: BLE001 - any failure means "no working compiler"
            ok = False
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
        _CYTHON_OK[cache] = (ok, "" if ok else "a test compilation with the C compiler failed")
        if not ok:
            import warnings

            warnings.warn("brian2: cython target unavailable (a test compilation with the C compiler failed; is a "
                          "C compiler installed?): falling back to the numpy target, which is several times slower",
                          RuntimeWarning, stacklevel=4)
    return _CYTHON_OK[cache]


def check_target(target: str | None = "auto") -> str:
    """Validates a target name and, for 'auto', the environment variable; compiles nothing (the CLIs
    call it before any work)."""
    target = target or "auto"
    if target not in TARGETS:
        raise ConfigError(f"unknown brian2 codegen target {target!r}: use one of {', '.join(TARGETS)}")
    if target == "auto":
        env = os.environ.get(TARGET_ENV, "").strip()
        if env and env not in TARGETS:
            raise ConfigError(f"{TARGET_ENV}={env!r} is not a brian2 codegen target: use one of {', '.join(TARGETS)}")
        target = env or "auto"
    return target


def resolve_target(target: str | None, cache_dir=None) -> str:
    """The codegen target to use: 'auto' (the default) is cython when a C compiler works, else
    numpy with a warning; an explicit 'cython' without a compiler also falls back, with a warning.
    The environment variable BDH_SPIKING_BRIAN2_TARGET sets what 'auto' means."""
    target = check_target(target)
    if target == "numpy":
        return "numpy"
    cache = _configure("cython", cache_dir)
    if not _cython_works(cache)[0]:
        return "numpy"
    if cache not in _COLD_NOTICE and len(list(Path(cache).glob("*.so"))) <= 1:  # only the test compile: cold
        import sys

        _COLD_NOTICE.add(cache)
        print(f"brian2: compiling the network's code into {cache} (first run: a few minutes; later runs "
              "reuse it)", file=sys.stderr, flush=True)
    return "cython"


def _configure(target: str, cache_dir) -> str:
    from brian2 import prefs

    prefs.codegen.target = target
    prefs.core.default_float_dtype = np.float64
    cache = str(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if target == "cython":
        Path(cache).mkdir(parents=True, exist_ok=True)
        prefs.codegen.runtime.cython.cache_dir = cache
        prefs.codegen.cpp.extra_compile_args_gcc = list(_EXACT_GCC_ARGS)
    return cache


def _neuron_code(coding: str, K: int) -> dict:
    """Integration (once per step), margin, threshold and reset code of the IF populations."""
    integrate = "v = v + active * I_in\n"
    if coding == "rate":
        margin = "mg = abs(v - 1.0)\n"
        threshold, reset = "active > 0 and v > 1.0", "v = v - 1.0\ncount = count + 1.0"
    elif coding == "multispike":
        # nearest firing boundary clamp(round(v), 1, K); clip first so the int conversion is safe
        margin = f"mg = abs(v - clip(floor(clip(v, 0.0, {K + 1}.0) + 0.5), 1, {K}))\n"
        threshold = "active > 0 and v > 1.0"
        # s = clamp(ceil(v) - 1, 0, K); v > 1 <=> s >= 1, so only threshold crossers can have s > 0
        reset = f"s = clip(ceil(clip(v, 0.0, {K + 1}.0)) - 1, 0, {K})\nv = v - s\ncount = count + s"
    elif coding == "graded":
        margin = "mg = abs(v)\n"
        threshold, reset = "active > 0 and v > 0.0", "count = count + v"
    else:  # validated before
        raise ConfigError(f"unknown coding {coding!r}")
    # exact running minimum over the active steps: int(...) is 0 or 1 and both operands are finite;
    # an inactive neuron's candidate is pushed to >= _BIG, so its margin stays as it is
    select = (f"mg = mg + (1.0 - active) * {_BIG!r}\n"
              "margin = int(mg < margin) * mg + int(mg >= margin) * margin")
    return {"integrate": integrate + margin + select, "threshold": threshold, "reset": reset}


def flat_broadcast(a: np.ndarray, shape: tuple, dtype=None) -> np.ndarray:
    """a broadcast to shape, flattened: one allocation of the final size, no index grids."""
    return np.broadcast_to(a if dtype is None else a.astype(dtype), shape).reshape(-1)


def connectivity(L: int, B: int, H: int, D: int, N: int) -> dict:
    """Flat (pre, post) int32 indices of the four projections of L layers x B batch rows.

    Neurons are numbered row-major: residual units (l, b, d), x/y neurons (l, b, h, n), readout
    units (l, b, h, d). E, E_v and hebb have synapse order (l, b, h, d, n), so a plastic state
    read back views as (L, B, H, D, N); the decoder D has order (l, b, h, n, d). An official-size
    network has 50 M synapses per projection: only the final index arrays are allocated."""
    l, b, h, d, n = (np.arange(k).reshape([k if i == j else 1 for j in range(5)]) for i, k in enumerate((L, B, H, D, N)))
    lb = l * B + b
    shape = (L, B, H, D, N)
    res_i = flat_broadcast(lb * D + d, shape, np.int32)
    neu_i = flat_broadcast((lb * H + h) * N + n, shape, np.int32)
    att_i = flat_broadcast((lb * H + h) * D + d, shape, np.int32)
    # decoder order (l, b, h, n, d): swap the last two axes of the index expressions
    dec_pre = flat_broadcast(((lb * H + h) * N + n).swapaxes(3, 4), (L, B, H, N, D), np.int32)
    dec_post = flat_broadcast((lb * D + d).swapaxes(3, 4), (L, B, H, N, D), np.int32)
    return {"E": (res_i, neu_i), "E_v": (att_i, neu_i), "hebb": (neu_i, att_i), "D": (dec_pre, dec_post)}


def projection_weights(w: dict, L: int, B: int, H: int, D: int, N: int) -> dict:
    """Folded weights in the synapse orders of connectivity()."""
    return {"E": flat_broadcast(w["W_x"].numpy()[:, None], (L, B, H, D, N)),
            "E_v": flat_broadcast(w["W_y"].numpy()[:, None], (L, B, H, D, N)),
            "D": flat_broadcast(w["decoder"].numpy().reshape(1, 1, H, N, D), (L, B, H, N, D))}


def build_projections(groups: dict, w: dict, dims: tuple, clock, namespace: dict, prefix: str,
                      hebb_write: str) -> dict:
    """The four projections of both modes, connected and weighted: E (res -> x, custom event
    'drive'), E_v (attn -> y, 'vdrive'), the plastic hebb (x -> attn: pathways scale, read and
    write, the write rule given by the mode) and the decoder D (y -> res, 'emit'; weight
    decoder[h*N + n, d])."""
    import brian2 as b2

    res, attn, xg, yg = groups["res"], groups["attn"], groups["x"], groups["y"]
    common = dict(clock=clock, namespace=namespace)
    syn = {
        "E": b2.Synapses(res, xg, "w : 1 (constant)", on_pre={"drive": "z_post += w * x_pre"},
                         on_event={"drive": "drive"}, name=prefix + "E", **common),
        "E_v": b2.Synapses(attn, yg, "w : 1 (constant)", on_pre={"vdrive": "z_post += w * un_pre"},
                           on_event={"vdrive": "vdrive"}, name=prefix + "E_v", **common),
        "hebb": b2.Synapses(xg, attn, "S : 1\nkeep : 1 (shared)",
                            on_pre={"scale": "S = S * keep", "read": "u_post += S * q_pre", "write": hebb_write},
                            on_event={"scale": "scale", "read": "read", "write": "write"}, name=prefix + "hebb",
                            **common),
        "D": b2.Synapses(yg, res, "w : 1 (constant)", on_pre={"emit": "m_post += w * g_pre"},
                         on_event={"emit": "emit"}, name=prefix + "D", **common),
    }
    conn, weights = connectivity(*dims), projection_weights(w, *dims)
    for key, s in syn.items():
        s.connect(i=conn[key][0], j=conn[key][1])
        if key in weights:
            s.w = weights[key]
    return syn


class Brian2Executor:
    name = NAME

    def __init__(self, net, settings: SimSettings, plasticity: Plasticity, record, progress, target, cache_dir):
        self.net, self.s, self.p = net, settings, plasticity
        self.record, self.progress, self.target = tuple(record), progress, target
        self.cache_dir = _configure(target, cache_dir)
        self.w = fold_weights(net, torch.device("cpu"), torch.float64)
        self.d = net.dims

    # -- construction -------------------------------------------------------------------
    def build(self, B: int):
        import brian2 as b2

        L, H, D, N = self.d["L"], self.d["H"], self.d["D"], self.d["N"]
        self.B = B
        code = _neuron_code(self.s.coding, self.s.max_spikes)
        # fixed object names: generated code (and so the cython cache key) must not change between calls
        self.clock = b2.Clock(dt=1 * b2.ms, name="bdh_clock")
        ns = {}
        res = b2.NeuronGroup(L * B * D, "x : 1\nm : 1\nfire : 1", events={"drive": "fire > 0"},
                             clock=self.clock, name="bdh_res", namespace=ns)
        attn = b2.NeuronGroup(L * B * H * D, "u : 1\nun : 1\nx_res : 1\nfire : 1", events={"vdrive": "fire > 0"},
                              clock=self.clock, name="bdh_attn", namespace=ns)
        if_model = """
        v : 1
        z : 1
        gate : 1
        I_in = gate * z : 1
        count : 1
        margin : 1
        active : 1
        """
        xg = b2.NeuronGroup(L * B * H * N, if_model + "q : 1\nread_now : 1\nwrite_now : 1\nscale_now : 1\n",
                            threshold=code["threshold"], reset=code["reset"], clock=self.clock, name="bdh_x",
                            namespace=ns,
                            events={"read": "read_now > 0 and q != 0", "write": "write_now > 0 and q != 0",
                                    "scale": "scale_now > 0"})
        yg = b2.NeuronGroup(L * B * H * N, if_model + "g : 1\nemit_now : 1\n", threshold=code["threshold"],
                            reset=code["reset"], clock=self.clock, name="bdh_y", namespace=ns,
                            events={"emit": "emit_now > 0 and g != 0"})
        updaters = []
        for grp in (xg, yg):
            updaters.append(grp.run_regularly(code["integrate"], when="groups", name=grp.name + "_integrate"))
            if self.s.coding == "graded":  # graded spike: v = 0 after every step
                updaters.append(grp.run_regularly("v = 0.0", when="end", name=grp.name + "_clear"))
            grp.margin = _BIG
        xg.gate = 1.0
        yg.gate = 1.0

        groups = {"res": res, "attn": attn, "x": xg, "y": yg}
        syn = build_projections(groups, self.w, (L, B, H, D, N), self.clock, ns, "bdh_",
                                "S = S + x_res_post * q_pre")
        self.groups, self.synapses = groups, syn
        self.objects = [res, attn, xg, yg, *updaters, *syn.values()]
        return self

    def arr(self, group: str, var: str, shape=None):
        """The live storage array of a Brian2 variable (writes go straight into the simulation)."""
        obj = self.groups.get(group) or self.synapses[group]
        a = obj.variables[var].get_value()
        return a.reshape(shape) if shape is not None else a

    # -- the run ------------------------------------------------------------------------
    def run(self, ids: torch.Tensor) -> SimulationResult:
        import brian2 as b2

        started = time.perf_counter()
        B, Tn = ids.shape
        L, H, D, N = self.d["L"], self.d["H"], self.d["D"], self.d["N"]
        T = self.s.timesteps
        # a previous run's Brian2 objects are reference cycles: free them before building the next
        # network (at the official size each holds ~8 GB)
        gc.collect()
        self.build(B)
        built = time.perf_counter()
        rec = Recorder(self.record, B, Tn, self.d, torch.float64)
        stats = new_stats(B, Tn)
        logits = torch.empty(B, Tn, self.d["V"], dtype=torch.float64)
        v0 = 0.0 if self.s.coding == "graded" else float(self.net.v_init)
        gain = self.net.gating == "gain"
        A = self.arr
        nshape, rshape, ashape = (L, B, H, N), (L, B, D), (L, B, H, D)
        xv = {k: A("x", k, nshape) for k in ("v", "z", "gate", "count", "margin", "active", "q", "read_now",
                                            "write_now", "scale_now")}
        yv = {k: A("y", k, nshape) for k in ("v", "z", "gate", "count", "margin", "active", "g", "emit_now")}
        rv = {k: A("res", k, rshape) for k in ("x", "m", "fire")}
        av = {k: A("attn", k, ashape) for k in ("u", "un", "x_res", "fire")}
        keep = self.arr("hebb", "keep")
        t_of = lambda a: torch.from_numpy(a.copy())  # noqa: E731

        st = {}  # per-token working values (torch)

        def scales(t):  # does token t reset or decay the plastic state (before its read)?
            return self.p.resets(t) or (t > 0 and self.p.decay != 1.0)

        def start_population(pv, layer):
            pv["v"][layer] = v0
            pv["z"][layer] = 0.0
            pv["count"][layer] = 0.0
            pv["margin"][layer] = _BIG

        def finish_population(pv, layer):
            pv["active"][layer] = 0.0
            counts = t_of(pv["count"][layer])  # B,H,N
            margin = t_of(pv["margin"][layer])
            if self.s.coding != "graded":
                margin[margin >= _BIG] = math.inf
            return counts, margin

        def load_x(t, layer):  # residual input of the layer -> E synapses
            if layer == 0:
                st["x"] = layer_norm(self.w["embed"][ids[:, t]])
                st["cos"], st["sin"] = oscillator_cos_sin(self.w["freqs"], torch.tensor([t]))
            else:
                st["x"] = self._residual(st["x"], layer - 1, rv)
            x = st["x"]
            rv["x"][layer] = x.numpy()
            rv["fire"][layer] = 1.0
            av["x_res"][layer] = x.numpy()[:, None, :]
            start_population(xv, layer)

        def integrate_x(t, layer):
            rv["fire"][layer] = 0.0
            xv["active"][layer] = 1.0

        def end_x(t, layer):  # counts -> decoded -> pair-rotated payload q; decay / reset of S
            cx, mx = finish_population(xv, layer)
            a_hat = decode(cx, self.w["theta_x"][layer], T)
            q = oscillator_payload(a_hat, st["cos"][0], st["sin"][0])
            st.update(cx=cx, mx=mx, a_hat=a_hat, q=q)
            xv["q"][layer] = q.numpy()
            if scales(t):  # this step: S = S * keep (reset: 0, decay: exp(-1/tau)); the read follows
                keep[:] = 0.0 if self.p.resets(t) else self.p.decay
                xv["scale_now"][layer] = 1.0
            else:
                read(t, layer)

        def read(t, layer):  # read before write: u = S q
            xv["scale_now"][layer] = 0.0
            av["u"][layer] = 0.0
            xv["read_now"][layer] = 1.0

        def load_y(t, layer):  # LayerNorm(u) -> E_v synapses; Hebbian write S += x (x) q
            xv["read_now"][layer] = 0.0
            u = t_of(av["u"][layer])  # B,H,D
            av["un"][layer] = layer_norm(u).numpy()
            av["fire"][layer] = 1.0
            if self.p.writes(t):
                xv["write_now"][layer] = 1.0
            start_population(yv, layer)
            yv["gate"][layer] = st["a_hat"].numpy() if gain else 1.0

        def integrate_y(t, layer):
            av["fire"][layer] = 0.0
            xv["write_now"][layer] = 0.0
            yv["active"][layer] = 1.0

        def end_y(t, layer):  # counts -> decoded -> gated activity g -> decoder synapses
            cy, my = finish_population(yv, layer)
            decoded = decode(cy, self.w["theta_y"][layer], T)
            g = decoded if gain else st["a_hat"] * decoded
            yv["g"][layer] = g.numpy()
            rv["m"][layer] = 0.0
            yv["emit_now"][layer] = 1.0
            accumulate_stats(stats, (slice(None), t), self.s, st["cx"], cy, st["q"], g)
            rec.put((slice(None), t), layer, st["cx"], cy, st["mx"], my, st["a_hat"], g)

        def end_token(t):
            x = self._residual(st["x"], L - 1, rv)
            logits[:, t] = x @ self.w["lm_head"]
            yv["emit_now"][L - 1] = 0.0
            if bar is not None:
                bar.update(1)

        # The schedule, one entry per Brian2 timestep (None: the network operation does nothing):
        # load_x | T x steps | end_x (| read, after a decay/reset step) | load_y | T y steps | end_y
        steps = []
        for t in range(Tn):
            for layer in range(L):
                steps.append(lambda t=t, l=layer: load_x(t, l) if l == 0 else (self._clear_emit(yv, l - 1),
                                                                                load_x(t, l)))
                steps.append(lambda t=t, l=layer: integrate_x(t, l))
                steps.extend([None] * (T - 1))
                steps.append(lambda t=t, l=layer: end_x(t, l))
                if scales(t):
                    steps.append(lambda t=t, l=layer: read(t, l))
                steps.append(lambda t=t, l=layer: load_y(t, l))
                steps.append(lambda t=t, l=layer: integrate_y(t, l))
                steps.extend([None] * (T - 1))
                steps.append(lambda t=t, l=layer: end_y(t, l))
            steps.append(lambda t=t: end_token(t))

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=Tn, desc="brian2", leave=False)
        counter = {"k": 0}

        def operation():
            k = counter["k"]
            counter["k"] = k + 1
            if k < len(steps) and steps[k] is not None:
                steps[k]()

        op = b2.NetworkOperation(operation, clock=self.clock, when="start", name="bdh_graded_stage")
        network = b2.Network(*self.objects, op)
        network.run(len(steps) * self.clock.dt, namespace={})
        if bar is not None:
            bar.close()
        if counter["k"] != len(steps):
            raise RuntimeError(f"brian2 ran {counter['k']} timesteps, the schedule has {len(steps)}")
        if "state" in rec.keys:
            rec.out["state"] = torch.from_numpy(self.arr("hebb", "S").copy()).view(L, B, H, D, N)
        settings = {"timesteps": T, "coding": self.s.coding, "max_spikes": self.s.max_spikes, "mode": self.s.mode,
                    "gating": self.net.gating, "dtype": "float64", "device": "cpu", "target": self.target,
                    "brian2_timesteps": len(steps), "build_s": built - started,
                    "cache_dir": self.cache_dir if self.target == "cython" else None}
        result = SimulationResult(logits=logits, stats=stats, records=rec.out, backend=NAME, settings=settings,
                                  wall_s=time.perf_counter() - started)
        result.events = event_counts(stats, self.net, self.s)
        return result

    @staticmethod
    def _clear_emit(yv, layer):
        yv["emit_now"][layer] = 0.0

    def _residual(self, x, layer, rv):
        """x <- LN(x + LN(m)), m = the decoder synapses' sum for the layer (graded, between runs)."""
        m = torch.from_numpy(rv["m"][layer].copy())  # B,D
        return layer_norm(x + layer_norm(m))


def run_population(current: torch.Tensor, settings: SimSettings, v_init: float, target: str = "numpy",
                   cache_dir=None):
    """One IF population in Brian2 alone: T steps of a constant current, as semantics.run_population.

    Uses the same neuron code as the full network; returns (counts, margins) float64 tensors.
    """
    import brian2 as b2

    _configure(target, cache_dir)
    code = _neuron_code(settings.coding, settings.max_spikes)
    clock = b2.Clock(dt=1 * b2.ms, name="bdh_pop_clock")
    grp = b2.NeuronGroup(current.numel(), "v : 1\nz : 1\ngate : 1\nI_in = gate * z : 1\ncount : 1\nmargin : 1\n"
                         "active : 1", threshold=code["threshold"], reset=code["reset"], clock=clock,
                         name="bdh_pop", namespace={})
    objs = [grp, grp.run_regularly(code["integrate"], when="groups", name="bdh_pop_integrate")]
    if settings.coding == "graded":
        objs.append(grp.run_regularly("v = 0.0", when="end", name="bdh_pop_clear"))
    grp.v = 0.0 if settings.coding == "graded" else v_init
    grp.z = current.double().reshape(-1).numpy()
    grp.gate, grp.active, grp.margin, grp.count = 1.0, 1.0, _BIG, 0.0
    b2.Network(*objs).run(settings.timesteps * clock.dt, namespace={})
    counts = torch.from_numpy(grp.variables["count"].get_value().copy()).view(current.shape)
    margin = torch.from_numpy(grp.variables["margin"].get_value().copy()).view(current.shape)
    return counts, margin


def simulate(net, ids, settings: SimSettings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress=False, **options) -> SimulationResult:
    from . import brian2_biophysical as bio

    allowed = OPTIONS + (BIO_OPTIONS if settings.mode == "biophysical" else ())
    unknown = set(options) - set(allowed)
    if unknown:
        only_bio = unknown & set(BIO_OPTIONS)
        if only_bio and settings.mode != "biophysical":
            raise ConfigError(f"brian2 backend option(s) {sorted(only_bio)} belong to mode 'biophysical' "
                              f"(mode {settings.mode!r} asked for)")
        raise ConfigError(f"unknown brian2 backend option(s) {sorted(unknown)}: use {', '.join(allowed)}")
    if options.get("target", "auto") not in TARGETS:
        raise ConfigError(f"unknown brian2 codegen target {options['target']!r}: use one of {', '.join(TARGETS)}")
    if settings.mode not in ("discrete", "biophysical"):
        raise ConfigError(f"the brian2 backend runs modes 'discrete' and 'biophysical' (mode {settings.mode!r} "
                          "is not implemented in it)")
    if str(device) != "cpu":
        raise ConfigError(f"the brian2 backend runs on the CPU only (device {str(device)!r} asked for)")
    if dtype != torch.float64:
        raise ConfigError(f"the brian2 backend computes in float64 (dtype {dtype} asked for)")
    plast = plasticity if isinstance(plasticity, Plasticity) else Plasticity.from_dict(plasticity)
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    options = dict(options, target=resolve_target(options.get("target"), options.get("cache_dir")))
    if settings.mode == "biophysical":  # LIF neurons in physical units: brian2_biophysical.py
        return bio.simulate_biophysical(net, ids.cpu(), settings, plast, record, progress, options)
    check_record(record)  # validates the record keys early
    ex = Brian2Executor(net, settings, plast, record, progress, options["target"], options.get("cache_dir"))
    return ex.run(ids.cpu())
