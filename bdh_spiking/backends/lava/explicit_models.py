"""ProcessModels of the explicit graph's Processes (explicit_processes.py): one shared model per
Process (its schedule, latching and records) and a floating-point ('floating_pt') and a
fixed-point ('fixed_pt') subclass that declare the Vars' types and choose the arithmetic:
``FloatMath`` (the ``semantics`` rules, float64) or ``semantics.fixed_point.IntegerLayerMath``
(int64), both called on ``torch.from_numpy`` views, as in the fused graph (models.py).
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
from ...semantics import Plasticity, SimSettings
from ...semantics.fixed_point import SAT_KEYS, IntegerLayerMath, Saturations, decay_int
from .explicit_processes import Gate, IFPopulation, LayerNorm, PlasticSynapses, Projection, Residual


def view(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


class FloatMath:
    """The floating-point rules under the names of ``IntegerLayerMath`` (thresholds are folded into
    the weights, so a current is the accumulator itself)."""

    def __init__(self, settings: SimSettings, gating: str, v_init: float):
        self.settings, self.gating = settings, gating
        self.v0 = semantics.initial_membrane(settings.coding, v_init)

    def ln(self, x):
        return semantics.layer_norm(x)

    def current(self, acc, shifts, pop):
        return acc

    def neuron_step(self, v, J, pop):
        return semantics.neuron_step(v, J, self.settings.coding, self.settings.max_spikes)

    def decode(self, counts, theta, pop):
        return semantics.decode(counts, theta, self.settings.timesteps)

    def payload(self, a, cos, sin):
        return semantics.oscillator_payload(a, cos, sin)

    def plastic(self, S, x, q, rule, lam):
        S = S.clone()
        return S, semantics.plastic_step(S, x, q, rule)

    def gate(self, b, a):
        return semantics.gate_output(self.gating, b, a)

    def residual(self, x, accm):
        return semantics.residual_from_sum(x, accm)


class AbstractScheduledModel(PyLoihiProcessModel):
    """Latches each input port's value at the steps that carry a token (``arrive``), computes a
    token's output at its ``send`` step (``compute``), sends zeros otherwise. Subclasses name
    their ports (``in_ports``, ``out_port``) and set ``integer`` (the fixed-point ones)."""

    in_ports: tuple = ()
    out_port: str = ""
    integer = False
    dtype = np.float64

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.arrive, self.send_step = dict(p["arrive"]), int(p["send"])
        self.period, self.n_tokens = int(p["period"]), int(p["n_tokens"])
        self.settings = SimSettings(**p["settings"])
        self.latched = {port: {} for port in self.in_ports}
        self._records = None
        if self.integer:
            self.sat = Saturations(1)
            self.math = IntegerLayerMath(**p["integer"], sat=self.sat)
        else:
            self.sat = None
            self.math = FloatMath(self.settings, p["gating"], float(p.get("v_init", 0.0)))

    def token_at(self, first: int):
        rel = self.time_step - first
        if rel >= 0 and rel % self.period == 0 and rel // self.period < self.n_tokens:
            return rel // self.period
        return None

    @property
    def records(self) -> dict:
        if self._records is None:
            import glob

            prefix = str(self.proc_params["record_path"])
            self._records = {path[len(prefix):-4]: np.load(path, mmap_mode="r+") for path in glob.glob(prefix + "*.npy")}
        return self._records

    def record(self, t: int, **values) -> None:
        rec = self.records
        for key, value in values.items():
            rec[key][t] = np.reshape(value, rec[key].shape[1:])
        if self.sat is not None:
            rec["sat"][t] = [self.sat.per_layer[0][k] for k in SAT_KEYS]
            self.sat.clear()
        if t == self.n_tokens - 1:
            for buf in rec.values():
                buf.flush()

    def run_spk(self) -> None:
        for port in self.in_ports:
            value = getattr(self, port).recv()
            t = self.token_at(self.arrive[port])
            if t is not None:
                self.latched[port][t] = np.array(value, dtype=self.dtype)
        t = self.token_at(self.send_step)
        out_port = getattr(self, self.out_port)
        if t is None:
            out_port.send(np.zeros(out_port._shape, dtype=self.dtype))
            return
        out = self.compute(t, **{port: view(self.latched[port].pop(t)) for port in self.in_ports})
        out_port.send(np.ascontiguousarray(out.numpy(), dtype=self.dtype).reshape(-1))

    def counts(self, c):
        return c.double() / self.math.Th if self.integer else c

    def graded(self, v):
        return v.double() / 2.0 ** self.math.F if self.integer else v


class AbstractIFPopulationModel(AbstractScheduledModel):
    """T neuron steps per token from the latched, scaled current; sends the decoded activity."""

    in_ports, out_port = ("a_in",), "s_out"

    def run_spk(self) -> None:
        current = self.a_in.recv()
        rel = self.time_step - self.arrive["a_in"]
        T = self.settings.timesteps
        out = np.zeros(self.s_out._shape, dtype=self.dtype)
        if 0 <= rel < self.n_tokens * self.period and rel % self.period < T:
            t, k = divmod(rel, self.period)
            if k == 0:
                self.begin_token(current)
            v, emitted, distance = self.math.neuron_step(view(self.v), view(self.i), self.proc_params["pop"])
            self.v, self.cnt = v.numpy(), self.cnt + emitted.numpy()
            self.mrg = np.minimum(self.mrg, distance.numpy())
            if k == T - 1:
                out = self.end_token(t)
        self.s_out.send(out.reshape(-1))

    def begin_token(self, current) -> None:
        shape = self.v.shape
        acc = view(np.array(current, dtype=self.dtype).reshape(shape))
        self.i = self.math.current(acc, view(self.shifts)[None], self.proc_params["pop"]).numpy()
        self.v = np.full(shape, self.math.v0, dtype=self.dtype)
        self.cnt = np.zeros(shape, dtype=self.dtype)
        self.mrg = np.full(shape, np.inf)

    def end_token(self, t: int) -> np.ndarray:
        cnt = view(self.cnt)
        decoded = self.math.decode(cnt, view(self.theta)[None], self.proc_params["pop"])
        self.record(t, counts=self.counts(cnt).numpy(), margins=self.mrg, decoded=self.graded(decoded).numpy())
        return decoded.numpy()


class AbstractPlasticModel(AbstractScheduledModel):
    """Payload q = R_t a, switches, read u = S q before the write S += x q."""

    in_ports, out_port = ("x_in", "a_in"), "u_out"

    def compute(self, t, x_in, a_in):
        batch, heads, dim, neurons = self.S.shape
        rule = Plasticity(**self.proc_params["plasticity"])
        lam = decay_int(rule.decay, self.math.F) if self.integer else None
        a = a_in.reshape(batch, heads, neurons)
        q = self.math.payload(a, view(self.cos[t]), view(self.sin[t]))
        S, u = self.math.plastic(view(self.S), x_in.reshape(batch, dim), q, rule.at(t), lam)
        self.S = S.numpy()
        self.record(t, q=self.graded(q).numpy())
        if t == self.n_tokens - 1:
            self.records["S"][...] = self.graded(S).numpy()
            self.records["S"].flush()
        return u


class AbstractLayerNormModel(AbstractScheduledModel):
    in_ports, out_port = ("x_in",), "x_out"

    def compute(self, t, x_in):
        out = self.math.ln(x_in.reshape(int(self.proc_params["rows"]), int(self.proc_params["dim"])))
        self.record(t)
        return out


class AbstractGateModel(AbstractScheduledModel):
    """Gain: a*z (exact; the y neurons scale it). Product: the gated output g = a*b."""

    in_ports, out_port = ("a_in", "b_in"), "s_out"

    def compute(self, t, a_in, b_in):
        if self.proc_params["gating"] == "gain":
            out = a_in * b_in
            self.record(t)
        else:
            out = self.math.gate(b_in, a_in)
            self.record(t, g=self.graded(out).numpy())
        return out


class AbstractResidualModel(AbstractScheduledModel):
    in_ports, out_port = ("x_in", "m_in"), "x_out"

    def compute(self, t, x_in, m_in):
        batch, dim = int(self.proc_params["batch"]), int(self.proc_params["dim"])
        out = self.math.residual(x_in.reshape(batch, dim), m_in.reshape(batch, dim))
        self.record(t)
        return out


class AbstractProjectionModel(PyLoihiProcessModel):
    """a_out(t) = W s_in(t-1), the exact accumulator (Lava's Dense timing)."""

    dtype = np.float64

    def run_spk(self) -> None:
        self.a_out.send(self.a_buff)
        s_in = np.asarray(self.s_in.recv(), dtype=self.dtype)
        self.a_buff = self.weights.astype(self.dtype).dot(s_in)


def _float():
    return LavaPyType(np.ndarray, float)


def _int(precision=24):
    return LavaPyType(np.ndarray, np.int64, precision=precision)


_PORTS = {Gate: ("a_in", "b_in", "s_out"), LayerNorm: ("x_in", "x_out"), Residual: ("x_in", "m_in", "x_out"),
          IFPopulation: ("a_in", "s_out"), PlasticSynapses: ("x_in", "a_in", "u_out"),
          Projection: ("s_in", "a_out")}
_VARS = {Gate: (), LayerNorm: (), Residual: (), IFPopulation: ("theta", "shifts", "v", "i", "cnt", "mrg"),
         PlasticSynapses: ("cos", "sin", "S"), Projection: ("weights", "a_buff")}


def _model(proc, base, integer: bool, name: str):
    """A ProcessModel class of ``proc`` with the mode's Var and port types (the model's arithmetic
    is ``base``'s; ``integer`` selects IntegerLayerMath)."""
    ports = {p: (LavaPyType((PyInPort if p.endswith("_in") else PyOutPort).VEC_DENSE, np.int64, precision=24)
                 if integer else LavaPyType((PyInPort if p.endswith("_in") else PyOutPort).VEC_DENSE, float))
             for p in _PORTS[proc]}
    var_types = {v: (LavaPyType(np.ndarray, float) if v == "mrg" or not integer else _int()) for v in _VARS[proc]}
    attrs = {**ports, **var_types, "integer": integer, "dtype": np.int64 if integer else np.float64,
             "__module__": __name__, "__qualname__": name,
             "__doc__": f"{'Fixed-point (int64)' if integer else 'Floating-point (float64)'} model of {proc.__name__}."}
    cls = type(name, (base,), attrs)
    return implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag("fixed_pt" if integer else
                                                                              "floating_pt")(cls)))


_BASES = {IFPopulation: AbstractIFPopulationModel, PlasticSynapses: AbstractPlasticModel,
          LayerNorm: AbstractLayerNormModel, Gate: AbstractGateModel, Residual: AbstractResidualModel,
          Projection: AbstractProjectionModel}
PyIFPopulationModelFloat = _model(IFPopulation, AbstractIFPopulationModel, False, "PyIFPopulationModelFloat")
PyIFPopulationModelFixed = _model(IFPopulation, AbstractIFPopulationModel, True, "PyIFPopulationModelFixed")
PyPlasticSynapsesModelFloat = _model(PlasticSynapses, AbstractPlasticModel, False, "PyPlasticSynapsesModelFloat")
PyPlasticSynapsesModelFixed = _model(PlasticSynapses, AbstractPlasticModel, True, "PyPlasticSynapsesModelFixed")
PyLayerNormModelFloat = _model(LayerNorm, AbstractLayerNormModel, False, "PyLayerNormModelFloat")
PyLayerNormModelFixed = _model(LayerNorm, AbstractLayerNormModel, True, "PyLayerNormModelFixed")
PyGateModelFloat = _model(Gate, AbstractGateModel, False, "PyGateModelFloat")
PyGateModelFixed = _model(Gate, AbstractGateModel, True, "PyGateModelFixed")
PyResidualModelFloat = _model(Residual, AbstractResidualModel, False, "PyResidualModelFloat")
PyResidualModelFixed = _model(Residual, AbstractResidualModel, True, "PyResidualModelFixed")
PyProjectionModelFloat = _model(Projection, AbstractProjectionModel, False, "PyProjectionModelFloat")
PyProjectionModelFixed = _model(Projection, AbstractProjectionModel, True, "PyProjectionModelFixed")
