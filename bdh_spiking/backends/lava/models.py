"""ProcessModels of ``BDHLayer`` and ``LogitSink``: one shared model per Process (the schedule,
state handling and record writing) with a floating-point subclass (tag 'floating_pt') and a
fixed-point one (tag 'fixed_pt'), as lava/proc/lif does. The subclasses differ only in their
LavaPyType declarations and in the arithmetic they call: ``semantics`` (float64) or
``semantics.fixed_point.IntegerLayerMath`` (int64), both run on ``torch.from_numpy`` views of the
Vars, so the rules are the ones every other executor runs.

Schedule (graph.py): every Lava timestep advances exactly one of the layer's two populations by
one neuron timestep; a token occupies the layer for 2T timesteps (T of x, then T of y).
"""

from __future__ import annotations

import numpy as np
import torch
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from ... import semantics
from ...semantics import EVENT_KEYS, Plasticity, SimSettings, accumulate_stats, new_stats
from ...semantics.fixed_point import SAT_KEYS, IntegerLayerMath, Saturations, decay_int
from .processes import BDHLayer, LogitSink, record_shapes


def view(a: np.ndarray) -> torch.Tensor:
    """A torch view of a numpy array (no copy), for the semantics' rules."""
    return torch.from_numpy(a)


class AbstractBDHLayerModel(PyLoihiProcessModel):
    """The schedule of a layer, its state and its records. Subclasses declare the Vars' types and
    give the arithmetic (every method between ``layer_norm`` and ``graded``)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.settings = SimSettings(timesteps=int(p["timesteps"]), coding=p["coding"],
                                    max_spikes=int(p["max_spikes"]))
        self.batch = int(p["batch"])
        self.gating = p["gating"]
        self.offset, self.period, self.n_tokens = int(p["offset"]), int(p["period"]), int(p["n_tokens"])
        self.normalize_input = bool(p["normalize_input"])
        self.plasticity = Plasticity(**p["plasticity"])
        self.record = tuple(p["record"])
        self.record_path = str(p["record_path"])
        self._records = None

    @property
    def records(self) -> dict:
        """The record buffers, opened (memory-mapped, shared with the host) in the process that runs
        this model."""
        if self._records is None:
            batch, heads, neurons = self.v_x.shape
            shapes = record_shapes(self.n_tokens, batch, heads, neurons, self.x_res.shape[1], self.record,
                                   self.proc_params["integer"] is not None)
            self._records = {k: np.load(f"{self.record_path}{k}.npy", mmap_mode="r+") for k in shapes}
        return self._records

    # -- the schedule: which population this Lava timestep advances -----------------------
    def run_spk(self) -> None:
        x = np.array(self.x_in.recv(), dtype=self.x_res.dtype)
        out = np.zeros_like(x)
        rel = self.time_step - self.offset
        if 0 <= rel < self.n_tokens * self.period:
            t, k = divmod(rel, self.period)
            timesteps = self.settings.timesteps
            if k == 0:
                self.start_x(x)
            elif k == timesteps:
                self.start_y(t)
            if k < timesteps:
                self.v_x, self.cnt_x, self.mrg_x = self.advance(self.v_x, self.i_x, self.cnt_x, self.mrg_x, "x")
            else:
                self.v_y, self.cnt_y, self.mrg_y = self.advance(self.v_y, self.i_y, self.cnt_y, self.mrg_y, "y")
            if k == 2 * timesteps - 1:
                out = self.finish(t).reshape(-1)
        self.x_out.send(out)

    def advance(self, v, current, counts, margin, pop: str):
        """One neuron timestep of a population: (v, counts + emitted, smallest margin so far)."""
        v, emitted, distance = self.neuron_step(v, current, pop)
        return v, counts + emitted, np.minimum(margin, distance)

    def fresh(self, v, counts, margin):
        """A population's state at a token start: v0, nothing emitted, no boundary approached."""
        return np.full_like(v, self.v0), np.zeros_like(counts), np.full_like(margin, np.inf)

    # -- token start: graded input -> x currents (synapses E, folded by theta_x) ----------------
    def start_x(self, x: np.ndarray) -> None:
        self.token_start()
        x = x.reshape(self.batch, self.x_res.shape[1])
        self.x_res = self.layer_norm(x) if self.normalize_input else x
        self.i_x = self.x_current(self.x_res)
        self.v_x, self.cnt_x, self.mrg_x = self.fresh(self.v_x, self.cnt_x, self.mrg_x)

    # -- x counts -> oscillator payload -> plastic read, write -> y currents ---------------------
    def start_y(self, t: int) -> None:
        self.a_hat = self.decode(self.cnt_x, self.theta_x, "x")
        self.payload = self.rotate(self.a_hat, self.cos[t], self.sin[t])  # B,H,N
        u = self.plastic(self.x_res, self.payload, self.plasticity.at(t))  # B,H,D (updates S)
        self.i_y = self.y_current(self.layer_norm(u), self.a_hat)
        self.v_y, self.cnt_y, self.mrg_y = self.fresh(self.v_y, self.cnt_y, self.mrg_y)

    # -- y counts -> gate -> decoder -> residual with its LayerNorms ---------------------------
    def finish(self, t: int) -> np.ndarray:
        g = self.gate(self.decode(self.cnt_y, self.theta_y, "y"), self.a_hat)
        x_new = self.residual(self.x_res, g)
        self.write_records(t, g)
        return x_new

    def write_records(self, t: int, g: np.ndarray) -> None:
        rec = self.records
        cx, cy = self.counts(self.cnt_x), self.counts(self.cnt_y)
        rec["x"][t], rec["y"][t] = cx, cy
        stats = new_stats(self.batch, 1)
        accumulate_stats(stats, (slice(None), 0), self.settings, view(cx), view(cy), view(self.payload), view(g))
        rec["stats"][t] = np.stack([stats[k][:, 0].numpy() for k in EVENT_KEYS], axis=-1)
        if "decoded" in self.record:
            rec["a"][t], rec["g"][t] = self.graded(self.a_hat), self.graded(g)
        if "margins" in self.record:
            rec["mx"][t], rec["my"][t] = self.mrg_x, self.mrg_y
        if "sat" in rec:
            rec["sat"][t] = self.saturations()
        if t == self.n_tokens - 1:
            if "state" in self.record:
                rec["S"][...] = self.graded(self.S)
            for buf in rec.values():
                buf.flush()

    # -- the arithmetic, given by the subclasses ---------------------------------------------
    def token_start(self) -> None:
        """Called at every token start (the fixed-point model clears its saturation counts)."""

    def saturations(self):
        """This token's saturation counts in SAT_KEYS order (fixed point), None (floating point)."""
        return None


@implements(proc=BDHLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyBDHLayerModelFloat(AbstractBDHLayerModel):
    """float64 arithmetic: the ``semantics`` rules on torch views of the Vars."""

    x_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    x_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    w_x: np.ndarray = LavaPyType(np.ndarray, float)
    w_y: np.ndarray = LavaPyType(np.ndarray, float)
    shift_x: np.ndarray = LavaPyType(np.ndarray, float)  # unused: float weights are folded exactly
    shift_y: np.ndarray = LavaPyType(np.ndarray, float)
    theta_x: np.ndarray = LavaPyType(np.ndarray, float)
    theta_y: np.ndarray = LavaPyType(np.ndarray, float)
    decoder: np.ndarray = LavaPyType(np.ndarray, float)
    cos: np.ndarray = LavaPyType(np.ndarray, float)
    sin: np.ndarray = LavaPyType(np.ndarray, float)
    v_x: np.ndarray = LavaPyType(np.ndarray, float)
    v_y: np.ndarray = LavaPyType(np.ndarray, float)
    i_x: np.ndarray = LavaPyType(np.ndarray, float)
    i_y: np.ndarray = LavaPyType(np.ndarray, float)
    cnt_x: np.ndarray = LavaPyType(np.ndarray, float)
    cnt_y: np.ndarray = LavaPyType(np.ndarray, float)
    mrg_x: np.ndarray = LavaPyType(np.ndarray, float)
    mrg_y: np.ndarray = LavaPyType(np.ndarray, float)
    a_hat: np.ndarray = LavaPyType(np.ndarray, float)
    payload: np.ndarray = LavaPyType(np.ndarray, float)
    x_res: np.ndarray = LavaPyType(np.ndarray, float)
    S: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.v0 = semantics.initial_membrane(self.settings.coding, float(self.proc_params["v_init"]))

    def layer_norm(self, x):
        return semantics.layer_norm(view(x)).numpy()

    def x_current(self, x):  # the contraction of the reference executor (ReferenceExecutor.x_stage)
        return torch.einsum("...d,hdn->...hn", view(x), view(self.w_x)).numpy()

    def neuron_step(self, v, current, pop):
        v, s, distance = semantics.neuron_step(view(v), view(current), self.settings.coding,
                                               self.settings.max_spikes)
        return v.numpy(), s.numpy(), distance.numpy()

    def decode(self, counts, theta, pop):
        return semantics.decode(view(counts), view(theta), self.settings.timesteps).numpy()

    def rotate(self, a, cos, sin):
        return semantics.oscillator_payload(view(a), view(cos), view(sin)).numpy()

    def plastic(self, x, q, rule):
        return semantics.plastic_step(view(self.S), view(x), view(q), rule).numpy()  # S in place

    def y_current(self, u_norm, a):
        z = torch.einsum("...hd,hdn->...hn", view(u_norm), view(self.w_y))
        return semantics.gate_current(self.gating, z, view(a)).numpy()

    def gate(self, decoded, a):
        return semantics.gate_output(self.gating, view(decoded), view(a)).numpy()

    def residual(self, x, g):
        return semantics.residual_update(view(x), view(g), view(self.decoder)).numpy()

    def counts(self, counts):
        return counts

    def graded(self, value):
        return value


def _int(precision):
    return LavaPyType(np.ndarray, np.int64, precision=precision)


@implements(proc=BDHLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyBDHLayerModelFixed(AbstractBDHLayerModel):
    """int64 arithmetic: ``IntegerLayerMath`` (the reference fixed-point executor's rules) on torch
    views of the Vars; counts must EQUAL the reference's. Saturations are counted per token."""

    x_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    x_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    w_x: np.ndarray = _int(8)
    w_y: np.ndarray = _int(8)
    shift_x: np.ndarray = _int(8)
    shift_y: np.ndarray = _int(8)
    theta_x: np.ndarray = _int(24)
    theta_y: np.ndarray = _int(24)
    decoder: np.ndarray = _int(8)
    cos: np.ndarray = _int(24)
    sin: np.ndarray = _int(24)
    v_x: np.ndarray = _int(24)
    v_y: np.ndarray = _int(24)
    i_x: np.ndarray = _int(24)
    i_y: np.ndarray = _int(24)
    cnt_x: np.ndarray = _int(40)
    cnt_y: np.ndarray = _int(40)
    mrg_x: np.ndarray = LavaPyType(np.ndarray, float)
    mrg_y: np.ndarray = LavaPyType(np.ndarray, float)
    a_hat: np.ndarray = _int(24)
    payload: np.ndarray = _int(24)
    x_res: np.ndarray = _int(24)
    S: np.ndarray = _int(32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.sat = Saturations(1)
        self.math = IntegerLayerMath(**self.proc_params["integer"], sat=self.sat)
        self.v0 = self.math.v0
        self.decay = decay_int(self.plasticity.decay, self.math.F)

    def token_start(self):
        self.sat.clear()

    def saturations(self):
        return np.array([self.sat.per_layer[0][k] for k in SAT_KEYS], dtype=np.int64)

    def layer_norm(self, x):
        return self.math.ln(view(x)).numpy()

    def x_current(self, x):  # the contractions of the reference executor (FixedPointExecutor.layer)
        acc = torch.einsum("bd,hdn->bhn", view(x), view(self.w_x))
        return self.math.current(acc, view(self.shift_x), "x").numpy()

    def neuron_step(self, v, current, pop):
        v, emitted, margin = self.math.neuron_step(view(v), view(current), pop)
        return v.numpy(), emitted.numpy(), margin.numpy()

    def decode(self, counts, theta, pop):
        return self.math.decode(view(counts), view(theta), pop).numpy()

    def rotate(self, a, cos, sin):
        return self.math.payload(view(a), view(cos), view(sin)).numpy()

    def plastic(self, x, q, rule):
        S, u = self.math.plastic(view(self.S), view(x), view(q), rule, self.decay)
        self.S = S.numpy()
        return u.numpy()

    def y_current(self, u_norm, a):
        acc = torch.einsum("bhd,hdn->bhn", view(u_norm), view(self.w_y))
        return self.math.y_current(acc, view(a), view(self.shift_y)).numpy()

    def gate(self, decoded, a):
        return self.math.gate(view(decoded), view(a)).numpy()

    def residual(self, x, g):
        return self.math.residual(view(x), view(g).reshape(self.batch, -1) @ view(self.decoder)).numpy()

    def counts(self, counts):
        return counts.astype(np.float64) / self.math.Th

    def graded(self, value):
        return value.astype(np.float64) / 2.0 ** self.math.F


class AbstractLogitSinkModel(PyLoihiProcessModel):
    """Keeps what arrives at each token's logits step in the host-shared buffer."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.path, self.first_step = str(p["path"]), int(p["first_step"])
        self.period, self.n_tokens = int(p["period"]), int(p["n_tokens"])
        self._buf = None

    def run_spk(self) -> None:
        self.last = np.asarray(self.a_in.recv(), dtype=self.last.dtype)
        rel = self.time_step - self.first_step
        if rel >= 0 and rel % self.period == 0 and rel // self.period < self.n_tokens:
            if self._buf is None:
                self._buf = np.load(self.path, mmap_mode="r+")
            t = rel // self.period
            self._buf[t] = self.last
            if t == self.n_tokens - 1:
                self._buf.flush()


@implements(proc=LogitSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLogitSinkModelFloat(AbstractLogitSinkModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    last: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=LogitSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLogitSinkModelFixed(AbstractLogitSinkModel):
    """The integer logits (int32 from Lava's bit-accurate Dense)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=32)
    last: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)
