"""Mode 'discrete' (exact): the spiking network as Brian2 NeuronGroups and Synapses.

The network is built once per ``simulate`` call and run in ONE ``Network.run``; a Brian2
``NetworkOperation`` (Python, at the 'start' slot of a timestep) runs the graded stage between
the spiking phases (LayerNorm, decoding, the pair rotation, the residual, the readout) as a
schedule of steps, one per Brian2 timestep, over an explicit ``TokenState``. See the "Brian2"
section of docs/backends.md for the mapping; in short (one timestep = one Brian2 ``dt``; every
variable dimensionless):

* ``res``  NeuronGroup (L*B*D): the residual units of each layer, ``x`` (graded layer input) and
  ``m`` (decoder sum). Custom event ``drive`` sends ``x`` through the E synapses.
* ``xg``, ``yg`` NeuronGroups (L*B*H*N each): the unit-threshold IF neurons of every layer, head and
  batch element. ``v`` integrates ``I_in = gate * z`` exactly once per timestep
  (``run_regularly('v = v + active * I_in', when='groups')``; no ODE solver, so no Euler rounding),
  then threshold ``v > 1`` and reset ``v = v - 1`` (rate), the multispike reset
  ``s = clip(ceil(v) - 1, 0, max_spikes); v = v - s`` or the graded spike ``count += v; v = 0``.
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

import dataclasses
import functools
import math
import time

import torch

from ...semantics import (Plasticity, SimSettings, accumulate_stats, decode, fold_weights, gate_current,
                          gate_output, initial_membrane, layer_norm, new_stats, oscillator_cos_sin,
                          oscillator_payload, residual_from_sum)
from ..base import Recorder, SimulationResult, make_result
from .codegen import configure
from .topology import build_projections, free_previous_networks, live_array, live_views, progress_bar, run_scheduled

NAME = "brian2"
BIG = 1e300  # initial margin (finite, so the exact min-select below never multiplies 0 * inf)
IF_MODEL = """
v : 1
z : 1
gate : 1
I_in = gate * z : 1
count : 1
margin : 1
active : 1
"""
X_VARS = ("v", "z", "gate", "count", "margin", "active", "q", "read_now", "write_now", "scale_now")
Y_VARS = ("v", "z", "gate", "count", "margin", "active", "g", "emit_now")


def neuron_code(coding: str, max_spikes: int) -> dict:
    """Integration (once per step), margin, threshold and reset code of the IF populations
    (semantics.neuron_step_ and boundary_distance, in Brian2's code strings)."""
    K = max_spikes
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
    else:  # graded (the registry validated the coding)
        margin = "mg = abs(v)\n"
        threshold, reset = "active > 0 and v > 0.0", "count = count + v"
    # exact running minimum over the active steps: int(...) is 0 or 1 and both operands are finite;
    # an inactive neuron's candidate is pushed to >= BIG, so its margin stays as it is
    select = (f"mg = mg + (1.0 - active) * {BIG!r}\n"
              "margin = int(mg < margin) * mg + int(mg >= margin) * margin")
    return {"integrate": integrate + margin + select, "threshold": threshold, "reset": reset}


@dataclasses.dataclass
class TokenState:
    """What the graded stage carries between the steps of one token (through its layers)."""

    x: torch.Tensor | None = None  # the current layer's residual input (B, D)
    cos: torch.Tensor | None = None  # the token's oscillator phases
    sin: torch.Tensor | None = None
    cx: torch.Tensor | None = None  # x counts, margins, decoded activity and payload of the layer
    mx: torch.Tensor | None = None
    a_hat: torch.Tensor | None = None
    q: torch.Tensor | None = None


class Brian2Executor:
    name = NAME

    def __init__(self, net, settings: SimSettings, plasticity: Plasticity, record, progress, target, cache_dir):
        self.net, self.settings, self.plasticity = net, settings, plasticity
        self.record, self.progress, self.target = tuple(record), progress, target
        self.cache_dir = configure(target, cache_dir)
        self.weights = fold_weights(net, torch.device("cpu"), torch.float64)
        self.dims = net.dims
        self.v0 = initial_membrane(settings.coding, net.v_init)

    # -- construction -------------------------------------------------------------------
    def build(self, batch: int):
        import brian2 as b2

        L, H, D, N = self.dims.L, self.dims.H, self.dims.D, self.dims.N
        free_previous_networks()
        self.batch = batch
        code = neuron_code(self.settings.coding, self.settings.max_spikes)
        # fixed object names: generated code (and so the cython cache key) must not change between calls
        self.clock = b2.Clock(dt=1 * b2.ms, name="bdh_clock")
        ns = {}
        res = b2.NeuronGroup(L * batch * D, "x : 1\nm : 1\nfire : 1", events={"drive": "fire > 0"},
                             clock=self.clock, name="bdh_res", namespace=ns)
        attn = b2.NeuronGroup(L * batch * H * D, "u : 1\nun : 1\nx_res : 1\nfire : 1",
                              events={"vdrive": "fire > 0"}, clock=self.clock, name="bdh_attn", namespace=ns)
        xg = b2.NeuronGroup(L * batch * H * N, IF_MODEL + "q : 1\nread_now : 1\nwrite_now : 1\nscale_now : 1\n",
                            threshold=code["threshold"], reset=code["reset"], clock=self.clock, name="bdh_x",
                            namespace=ns,
                            events={"read": "read_now > 0 and q != 0", "write": "write_now > 0 and q != 0",
                                    "scale": "scale_now > 0"})
        yg = b2.NeuronGroup(L * batch * H * N, IF_MODEL + "g : 1\nemit_now : 1\n", threshold=code["threshold"],
                            reset=code["reset"], clock=self.clock, name="bdh_y", namespace=ns,
                            events={"emit": "emit_now > 0 and g != 0"})
        updaters = []
        for grp in (xg, yg):
            updaters.append(grp.run_regularly(code["integrate"], when="groups", name=grp.name + "_integrate"))
            if self.settings.coding == "graded":  # graded spike: v = 0 after every step
                updaters.append(grp.run_regularly("v = 0.0", when="end", name=grp.name + "_clear"))
            grp.margin = BIG
        xg.gate = 1.0
        yg.gate = 1.0
        self.groups = {"res": res, "attn": attn, "x": xg, "y": yg}
        self.synapses = build_projections(self.groups, self.weights, (L, batch, H, D, N), self.clock, ns, "bdh_",
                                          "S = S + x_res_post * q_pre")
        self.objects = [res, attn, xg, yg, *updaters, *self.synapses.values()]
        neurons = (L, batch, H, N)
        self.x_vars = live_views(xg, X_VARS, neurons)
        self.y_vars = live_views(yg, Y_VARS, neurons)
        self.res_vars = live_views(res, ("x", "m", "fire"), (L, batch, D))
        self.attn_vars = live_views(attn, ("u", "un", "x_res", "fire"), (L, batch, H, D))
        self.keep = live_array(self.synapses["hebb"], "keep")
        return self

    # -- the schedule: one entry per Brian2 timestep (None: the graded stage does nothing) ------
    def schedule(self, n_tokens: int) -> list:
        """load_x | T x steps | end_x (| read, after a decay/reset step) | load_y | T y steps | end_y,
        per layer; then end_token."""
        T = self.settings.timesteps
        steps = []
        for t in range(n_tokens):
            rule = self.plasticity.at(t)
            for layer in range(self.dims.L):
                step = functools.partial
                steps += [step(self.load_x, t, layer), step(self.integrate_x, t, layer), *[None] * (T - 1),
                          step(self.end_x, t, layer)]
                if rule.reset or rule.decay is not None:
                    steps.append(step(self.read, t, layer))
                steps += [step(self.load_y, t, layer), step(self.integrate_y, t, layer), *[None] * (T - 1),
                          step(self.end_y, t, layer)]
            steps.append(functools.partial(self.end_token, t))
        return steps

    def start_population(self, pv: dict, layer: int):
        pv["v"][layer] = self.v0
        pv["z"][layer] = 0.0
        pv["count"][layer] = 0.0
        pv["margin"][layer] = BIG

    def finish_population(self, pv: dict, layer: int):
        pv["active"][layer] = 0.0
        counts = torch.from_numpy(pv["count"][layer].copy())  # B,H,N
        margin = torch.from_numpy(pv["margin"][layer].copy())
        if self.settings.coding != "graded":
            margin[margin >= BIG] = math.inf
        return counts, margin

    def residual(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        return residual_from_sum(x, torch.from_numpy(self.res_vars["m"][layer].copy()))

    def load_x(self, t: int, layer: int):
        """The layer's residual input -> E synapses; the x neurons start."""
        state = self.token
        if layer == 0:
            state.x = layer_norm(self.weights["embed"][self.ids[:, t]])
            state.cos, state.sin = oscillator_cos_sin(self.weights["freqs"], torch.tensor([t]))
        else:
            self.y_vars["emit_now"][layer - 1] = 0.0
            state.x = self.residual(state.x, layer - 1)
        self.res_vars["x"][layer] = state.x.numpy()
        self.res_vars["fire"][layer] = 1.0
        self.attn_vars["x_res"][layer] = state.x.numpy()[:, None, :]
        self.start_population(self.x_vars, layer)

    def integrate_x(self, t: int, layer: int):
        self.res_vars["fire"][layer] = 0.0
        self.x_vars["active"][layer] = 1.0

    def end_x(self, t: int, layer: int):
        """Counts -> decoded -> pair-rotated payload q; decay / reset of S (else the read now)."""
        state = self.token
        state.cx, state.mx = self.finish_population(self.x_vars, layer)
        state.a_hat = decode(state.cx, self.weights["theta_x"][layer], self.settings.timesteps)
        state.q = oscillator_payload(state.a_hat, state.cos[0], state.sin[0])
        self.x_vars["q"][layer] = state.q.numpy()
        rule = self.plasticity.at(t)
        if rule.reset or rule.decay is not None:  # this step: S = S * keep; the read follows
            self.keep[:] = 0.0 if rule.reset else rule.decay
            self.x_vars["scale_now"][layer] = 1.0
        else:
            self.read(t, layer)

    def read(self, t: int, layer: int):
        """Read before write: u = S q."""
        self.x_vars["scale_now"][layer] = 0.0
        self.attn_vars["u"][layer] = 0.0
        self.x_vars["read_now"][layer] = 1.0

    def load_y(self, t: int, layer: int):
        """LayerNorm(u) -> E_v synapses; the Hebbian write S += x (x) q; the y neurons start."""
        self.x_vars["read_now"][layer] = 0.0
        u = torch.from_numpy(self.attn_vars["u"][layer].copy())  # B,H,D
        self.attn_vars["un"][layer] = layer_norm(u).numpy()
        self.attn_vars["fire"][layer] = 1.0
        if self.plasticity.at(t).write:
            self.x_vars["write_now"][layer] = 1.0
        self.start_population(self.y_vars, layer)
        a_hat = self.token.a_hat  # the y current is gate * z (gate_current with z = 1)
        self.y_vars["gate"][layer] = gate_current(self.net.gating, torch.ones_like(a_hat), a_hat).numpy()

    def integrate_y(self, t: int, layer: int):
        self.attn_vars["fire"][layer] = 0.0
        self.x_vars["write_now"][layer] = 0.0
        self.y_vars["active"][layer] = 1.0

    def end_y(self, t: int, layer: int):
        """Counts -> decoded -> gated activity g -> decoder synapses; statistics and records."""
        state = self.token
        cy, my = self.finish_population(self.y_vars, layer)
        decoded = decode(cy, self.weights["theta_y"][layer], self.settings.timesteps)
        g = gate_output(self.net.gating, decoded, state.a_hat)
        self.y_vars["g"][layer] = g.numpy()
        self.res_vars["m"][layer] = 0.0
        self.y_vars["emit_now"][layer] = 1.0
        accumulate_stats(self.stats, (slice(None), t), self.settings, state.cx, cy, state.q, g)
        self.rec.put((slice(None), t), layer, state.cx, cy, state.mx, my, state.a_hat, g)

    def end_token(self, t: int):
        x = self.residual(self.token.x, self.dims.L - 1)
        self.logits[:, t] = x @ self.weights["lm_head"]
        self.y_vars["emit_now"][self.dims.L - 1] = 0.0
        if self.bar is not None:
            self.bar.update(1)

    # -- the run ------------------------------------------------------------------------
    def run(self, ids: torch.Tensor) -> SimulationResult:
        started = time.perf_counter()
        batch, n_tokens = ids.shape
        self.build(batch)
        built = time.perf_counter()
        self.ids, self.token = ids, TokenState()
        self.rec = Recorder(self.record, batch, n_tokens, self.dims, torch.float64)
        self.stats = new_stats(batch, n_tokens)
        self.logits = torch.empty(batch, n_tokens, self.dims.V, dtype=torch.float64)
        steps = self.schedule(n_tokens)
        self.bar = progress_bar(self.progress, n_tokens, "brian2")
        run_scheduled(self.objects, self.clock, len(steps), functools.partial(_call_step, steps),
                      "bdh_graded_stage")
        if self.bar is not None:
            self.bar.close()
        if "state" in self.rec.keys:
            d = self.dims
            S = live_array(self.synapses["hebb"], "S").copy()
            self.rec.out["state"] = torch.from_numpy(S).view(d.L, batch, d.H, d.D, d.N)
        return make_result(NAME, self.net, self.settings, self.logits, self.stats, self.rec.out, started,
                           torch.float64, "cpu", target=self.target, brian2_timesteps=len(steps),
                           build_s=built - started, cache_dir=self.cache_dir if self.target == "cython" else None)


def _call_step(steps: list, k: int) -> None:
    step = steps[k] if k < len(steps) else None
    if step is not None:
        step()


def run_population(current: torch.Tensor, settings: SimSettings, v_init: float, target: str = "numpy",
                   cache_dir=None):
    """One IF population in Brian2 alone: T steps of a constant current, as semantics.run_population.

    Uses the same neuron code as the full network; returns (counts, margins) float64 tensors.
    """
    import brian2 as b2

    configure(target, cache_dir)
    code = neuron_code(settings.coding, settings.max_spikes)
    clock = b2.Clock(dt=1 * b2.ms, name="bdh_pop_clock")
    grp = b2.NeuronGroup(current.numel(), IF_MODEL, threshold=code["threshold"], reset=code["reset"], clock=clock,
                         name="bdh_pop", namespace={})
    objs = [grp, grp.run_regularly(code["integrate"], when="groups", name="bdh_pop_integrate")]
    if settings.coding == "graded":
        objs.append(grp.run_regularly("v = 0.0", when="end", name="bdh_pop_clear"))
    grp.v = initial_membrane(settings.coding, v_init)
    grp.z = current.double().reshape(-1).numpy()
    grp.gate, grp.active, grp.margin, grp.count = 1.0, 1.0, BIG, 0.0
    b2.Network(*objs).run(settings.timesteps * clock.dt, namespace={})
    counts = torch.from_numpy(live_array(grp, "count").copy()).view(current.shape)
    margin = torch.from_numpy(live_array(grp, "margin").copy()).view(current.shape)
    return counts, margin


def simulate_discrete(net, ids, settings, plasticity, record, progress, options: dict) -> SimulationResult:
    ex = Brian2Executor(net, settings, plasticity, record, progress, options["target"], options.get("cache_dir"))
    return ex.run(ids.cpu())
