"""ProcessModel of ``BDHLayer``: Lava's Python/CPU floating-point model (tag 'floating_pt').

Neuron model (docs/spiking-semantics.md, semantics.neuron_step): unit-threshold IF neurons.
Thresholds are folded into the incoming weights (semantics.fold_weights), so every neuron
fires when v > 1 (strictly) and the reset subtracts what was emitted:

    rate:        v += I; s = v > 1;                 v -= s
    multispike:  v += I; s = clamp(ceil(v)-1, 0, K); v -= s
    graded:      v += I; s = max(v, 0);             v = 0

This differs from Lava's own LIF model (lava.proc.lif), which resets v to zero and compares
against one scalar threshold, hence a model of our own. Every Lava timestep advances exactly
one of the layer's two populations by one neuron timestep (schedule in graph.py).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from .processes import BDHLayer, LogitSink, record_shapes

LN_EPS = 1e-5  # torch.nn.functional.layer_norm's default, as in the dense model


def layer_norm(x: np.ndarray) -> np.ndarray:
    """LayerNorm over the last axis without affine parameters (torch's formula: biased variance)."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc * (1.0 / np.sqrt(var + LN_EPS))


def neuron_step(v: np.ndarray, current: np.ndarray, coding: str, max_spikes: int):
    """One timestep of unit-threshold IF neurons; returns (v, s, margin) like semantics.neuron_step."""
    v = v + current
    if coding == "rate":
        margin = np.abs(v - 1.0)
        s = (v > 1.0).astype(np.float64)
        return v - s, s, margin
    if coding == "multispike":
        nearest = np.clip(np.round(v), 1.0, float(max_spikes))
        margin = np.abs(v - nearest)
        s = np.clip(np.ceil(v) - 1.0, 0.0, float(max_spikes))
        return v - s, s, margin
    if coding == "graded":
        s = np.maximum(v, 0.0)
        return np.zeros_like(v), s, np.abs(v)  # the graded boundary is 0 (silent <-> sending)
    raise ValueError(f"unknown coding {coding!r}")


def rotate_pairs(a: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """q = R_t a on neuron pairs (2k, 2k+1), as model.rotate_pairs."""
    rot = np.stack((-a[..., 1::2], a[..., ::2]), axis=-1).reshape(a.shape)
    return a * cos + rot * sin


@implements(proc=BDHLayer, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyBDHLayerModelFloat(PyLoihiProcessModel):
    x_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    x_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    w_x: np.ndarray = LavaPyType(np.ndarray, float)
    w_y: np.ndarray = LavaPyType(np.ndarray, float)
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
    x_res: np.ndarray = LavaPyType(np.ndarray, float)
    S: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.B = int(p["batch"])
        self.T = int(p["timesteps"])
        self.coding = p["coding"]
        self.K = int(p["max_spikes"])
        self.v0 = 0.0 if self.coding == "graded" else float(p["v_init"])
        self.gain = p["gating"] == "gain"
        self.offset = int(p["offset"])
        self.period = int(p["period"])
        self.n_tokens = int(p["n_tokens"])
        self.normalize_input = bool(p["normalize_input"])
        self.freeze_after = int(p["freeze_after"])  # -1: never freezes
        self.reset_every = int(p["reset_every"])  # 0: never resets
        self.decay = float(p["decay"])
        self.record_decoded = bool(p["record_decoded"])
        self.record_margins = bool(p["record_margins"])
        self.record_state = bool(p["record_state"])
        self.record_path = str(p["record_path"])
        self._rec = None

    @property
    def rec(self) -> dict:
        """The record buffers, opened (memory-mapped, shared with the host) in the process that runs
        this model."""
        if self._rec is None:
            B, H, N = self.v_x.shape
            shapes = record_shapes(self.n_tokens, B, H, N, self.x_res.shape[1], self.record_decoded,
                                   self.record_margins, self.record_state)
            self._rec = {k: np.load(f"{self.record_path}{k}.npy", mmap_mode="r+") for k in shapes}
        return self._rec

    # -- the schedule: which population this Lava timestep advances -----------------------
    def run_spk(self) -> None:
        x = self.x_in.recv()
        out = np.zeros_like(x)
        rel = self.time_step - self.offset
        if 0 <= rel < self.n_tokens * self.period:
            t, k = divmod(rel, self.period)
            T = self.T
            if k == 0:
                self._start_x(x)
            elif k == T:
                self._start_y(t)
            if k < T:
                self.v_x, s, m = neuron_step(self.v_x, self.i_x, self.coding, self.K)
                self.cnt_x = self.cnt_x + s
                self.mrg_x = np.minimum(self.mrg_x, m)
            else:
                self.v_y, s, m = neuron_step(self.v_y, self.i_y, self.coding, self.K)
                self.cnt_y = self.cnt_y + s
                self.mrg_y = np.minimum(self.mrg_y, m)
            if k == 2 * T - 1:
                out = self._finish(t).reshape(-1)
        self.x_out.send(out)

    def _spike_events(self, counts):
        # graded coding: one graded spike per step while the current is positive
        return (counts > 0) * float(self.T) if self.coding == "graded" else counts

    # -- token start: graded input -> x currents (synapses E, folded by theta_x) ----------------
    def _start_x(self, x):
        D = self.x_res.shape[1]
        xr = x.reshape(self.B, D)
        if self.normalize_input:
            xr = layer_norm(xr)
        self.x_res = xr
        self.i_x = (xr @ self.w_x).reshape(self.i_x.shape)
        self.v_x = np.full(self.v_x.shape, self.v0)
        self.cnt_x = np.zeros(self.cnt_x.shape)
        self.mrg_x = np.full(self.mrg_x.shape, np.inf)

    # -- x counts -> oscillator payload -> plastic read, write -> y currents ---------------------
    def _start_y(self, t):
        a_hat = self.cnt_x * self.theta_x / self.T  # semantics.decode
        q = rotate_pairs(a_hat, self.cos[t], self.sin[t])  # B,H,N
        if self.reset_every > 0 and t % self.reset_every == 0:
            self.S = np.zeros(self.S.shape)
        elif t > 0 and self.decay != 1.0:
            self.S = self.S * self.decay
        u = (self.S @ q[..., None])[..., 0]  # B,H,D: read before the write
        if self.freeze_after < 0 or t < self.freeze_after:
            self.S = self.S + self.x_res[:, None, :, None] * q[:, :, None, :]
        z = np.matmul(layer_norm(u).transpose(1, 0, 2), self.w_y).transpose(1, 0, 2)  # B,H,N
        self.i_y = a_hat * z if self.gain else z
        self.a_hat = a_hat
        self.v_y = np.full(self.v_y.shape, self.v0)
        self.cnt_y = np.zeros(self.cnt_y.shape)
        self.mrg_y = np.full(self.mrg_y.shape, np.inf)
        cx, rec = self.cnt_x, self.rec
        rec["x"][t] = cx
        rec["stats"][t, :, 0] = self._spike_events(cx).sum(axis=(1, 2))
        rec["stats"][t, :, 2] = (cx > 0).sum(axis=(1, 2))
        rec["stats"][t, :, 4] = (q != 0).sum(axis=(1, 2))
        if self.record_decoded:
            rec["a"][t] = a_hat
        if self.record_margins:
            rec["mx"][t] = self.mrg_x

    # -- y counts -> gate -> decoder -> residual with its LayerNorms ---------------------------
    def _finish(self, t):
        decoded = self.cnt_y * self.theta_y / self.T
        g = decoded if self.gain else self.a_hat * decoded
        m = g.reshape(self.B, -1) @ self.decoder
        x_new = layer_norm(self.x_res + layer_norm(m))
        cy, rec = self.cnt_y, self.rec
        rec["y"][t] = cy
        rec["stats"][t, :, 1] = self._spike_events(cy).sum(axis=(1, 2))
        rec["stats"][t, :, 3] = (cy > 0).sum(axis=(1, 2))
        rec["stats"][t, :, 5] = (g != 0).sum(axis=(1, 2))
        if self.record_decoded:
            rec["g"][t] = g
        if self.record_margins:
            rec["my"][t] = self.mrg_y
        if t == self.n_tokens - 1:
            if self.record_state:
                rec["S"][...] = self.S
            for buf in rec.values():
                buf.flush()
        return x_new


@implements(proc=LogitSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLogitSinkModelFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    last: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.path = str(p["path"])
        self.first_step = int(p["first_step"])
        self.period = int(p["period"])
        self.n_tokens = int(p["n_tokens"])
        self._buf = None

    def run_spk(self) -> None:
        self.last = self.a_in.recv()
        rel = self.time_step - self.first_step
        if rel >= 0 and rel % self.period == 0 and rel // self.period < self.n_tokens:
            if self._buf is None:
                self._buf = np.load(self.path, mmap_mode="r+")
            t = rel // self.period
            self._buf[t] = self.last
            if t == self.n_tokens - 1:
                self._buf.flush()
