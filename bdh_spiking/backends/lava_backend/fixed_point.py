"""Mode 'fixed-point' of the Lava backend: the same process graph with integer ProcessModels,
run with ``Loihi2SimCfg(select_tag='fixed_pt')``.

* ``source``: Lava's RingBuffer with its ``PySendModelFixed`` (int32 binary spikes);
* ``embed``: Lava's Dense with its bit-accurate model ``PyDenseModelBitAcc`` (tags 'fixed_pt',
  'bit_accurate_loihi'): weights ``2*q_embed.T`` (Lava's mixed-sign 8-bit convention: the stored value
  is twice the mantissa), ``weight_exp = -1``, so the binary token spike delivers the integer embedding
  row exactly;
* ``layer0 .. layerL-1``: ``BDHLayerFixed`` with ``PyBDHLayerModelFixed`` (ours, tag 'fixed_pt'): the
  integer semantics of docs/spiking-semantics.md "Fixed-point mode" in numpy int64, with the schedule of
  the floating-point model (graph.py): 2T Lava timesteps per token;
* ``readout``: Lava's bit-accurate Dense, weights ``2*q_lm_head.T``, ``weight_exp = -(lm_shift+1)``:
  ``floor(x . lm_head / 2**lm_shift)`` (numpy's arithmetic right shift), sent as int32;
* ``sink``: ``LogitSink`` with ``PyLogitSinkModelFixed``; the host scales the integers by
  ``2**logit_scale_exp`` (exact).

Counts must EQUAL those of the reference's fixed-point executor (backends/fixed_point.py).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from ...conversion.quantize import LN_INPUT_BITS, SAT_KEYS, decay_int, ensure_quantized, oscillator_table, qparams
from ...errors import ConfigError
from ...semantics import Plasticity, SimSettings
from ..base import SimulationResult, event_counts
from .processes import LogitSink, record_shapes

RUN_CFG = "Loihi2SimCfg(select_tag='fixed_pt')"
_POW2 = np.array([1 << j for j in range(63)], dtype=np.int64)


# -- integer primitives (torch twins in backends/fixed_point.py) -----------------------------
def rdiv(a, b):
    """a / b rounded half away from zero, b > 0."""
    q = (2 * np.abs(a) + b) // (2 * b)
    return np.where(a < 0, -q, q)


def shift(a, s):
    """a * 2**-s rounded half away from zero (s > 0), a (s = 0), a * 2**-s exactly (s < 0)."""
    s = np.asarray(s, dtype=np.int64)
    pos, neg = np.maximum(s, 0), np.maximum(-s, 0)
    half = np.where(pos > 0, np.left_shift(np.int64(1), np.maximum(pos - 1, 0)), 0)
    mag = np.right_shift(np.abs(a) + half, pos)
    return np.left_shift(np.where(a < 0, -mag, mag), neg)


def isqrt(v):
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    for _ in range(2):
        r = np.where(r * r > v, r - 1, r)
    for _ in range(2):
        r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


def ln_int(z, K, lo, hi, sat):
    """Integer LayerNorm over the last axis (frac_bits fixed point); ``sat`` counts clamps."""
    D = z.shape[-1]
    m = np.abs(z).max(axis=-1, keepdims=True)
    bl = (m[..., None] >= _POW2).sum(axis=-1)
    z = shift(z, np.maximum(bl - LN_INPUT_BITS, 0))
    c = D * z - z.sum(axis=-1, keepdims=True)
    R = isqrt((c * c).sum(axis=-1, keepdims=True))
    y = np.where(R > 0, rdiv(c * K, np.maximum(R, 1)), 0)
    return sat(y, lo, hi, "ln")


class BDHLayerFixed(AbstractProcess):
    """One BDH layer with integer state (the fixed-point twin of processes.BDHLayer).

    Vars (int64 unless noted): w_x (D, H*N) 8-bit mantissas of E/theta_x; w_y (H, D, N); s_x, s_y (H, N)
    right shifts from accumulator to state units; th_x, th_y (H, N) thresholds with frac_bits fraction
    bits; decoder (H*N, D); cos, sin (n_tokens, N) oscillator tables (frac_bits); membranes v_x, v_y,
    currents i_x, i_y, payload sums cnt_x, cnt_y (state units), mrg_x, mrg_y (float64 margins), a_hat,
    x_res (B, D), plastic synapses S (B, H, D, N).
    """

    def __init__(self, *, w_x, w_y, s_x, s_y, th_x, th_y, decoder, cos, sin, batch: int, timesteps: int,
                 coding: str, max_spikes: int, v0: int, k: int, frac_bits: int, state_bits: int,
                 payload_bits: int, plastic_bits: int, decay_int: int, gating: str, offset: int, period: int,
                 n_tokens: int, normalize_input: bool, freeze_after: int = -1, reset_every: int = 0,
                 decay_on: bool = False, record_path: str = "", record_decoded: bool = False,
                 record_margins: bool = False, record_state: bool = False, name: str | None = None) -> None:
        super().__init__(batch=batch, timesteps=timesteps, coding=coding, max_spikes=max_spikes, v0=v0, k=k,
                         frac_bits=frac_bits, state_bits=state_bits, payload_bits=payload_bits,
                         plastic_bits=plastic_bits, decay_int=decay_int, gating=gating, offset=offset,
                         period=period, n_tokens=n_tokens, normalize_input=normalize_input,
                         freeze_after=freeze_after, reset_every=reset_every, decay_on=decay_on,
                         record_path=record_path, record_decoded=record_decoded, record_margins=record_margins,
                         record_state=record_state, name=name)
        H, D, N = w_y.shape
        B = batch
        pop = (B, H, N)
        self.x_in = InPort(shape=(B * D,))
        self.x_out = OutPort(shape=(B * D,))
        for name_, arr in (("w_x", w_x), ("w_y", w_y), ("s_x", s_x), ("s_y", s_y), ("th_x", th_x), ("th_y", th_y),
                           ("decoder", decoder), ("cos", cos), ("sin", sin)):
            setattr(self, name_, Var(shape=arr.shape, init=np.asarray(arr, dtype=np.int64)))
        for name_ in ("v_x", "v_y", "i_x", "i_y", "cnt_x", "cnt_y", "a_hat"):
            setattr(self, name_, Var(shape=pop, init=0))
        self.mrg_x = Var(shape=pop, init=np.inf)
        self.mrg_y = Var(shape=pop, init=np.inf)
        self.x_res = Var(shape=(B, D), init=0)
        self.S = Var(shape=(B, H, D, N), init=0)


def _int(precision):
    return LavaPyType(np.ndarray, np.int64, precision=precision)


@implements(proc=BDHLayerFixed, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyBDHLayerModelFixed(PyLoihiProcessModel):
    x_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    x_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    w_x: np.ndarray = _int(8)
    w_y: np.ndarray = _int(8)
    s_x: np.ndarray = _int(8)
    s_y: np.ndarray = _int(8)
    th_x: np.ndarray = _int(24)
    th_y: np.ndarray = _int(24)
    decoder: np.ndarray = _int(8)
    cos: np.ndarray = _int(24)
    sin: np.ndarray = _int(24)
    v_x: np.ndarray = _int(24)
    v_y: np.ndarray = _int(24)
    i_x: np.ndarray = _int(24)
    i_y: np.ndarray = _int(24)
    cnt_x: np.ndarray = _int(40)
    cnt_y: np.ndarray = _int(40)
    a_hat: np.ndarray = _int(24)
    mrg_x: np.ndarray = LavaPyType(np.ndarray, float)
    mrg_y: np.ndarray = LavaPyType(np.ndarray, float)
    x_res: np.ndarray = _int(24)
    S: np.ndarray = _int(32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.B, self.T = int(p["batch"]), int(p["timesteps"])
        self.coding, self.K = p["coding"], int(p["max_spikes"])
        self.k, self.F = int(p["k"]), int(p["frac_bits"])
        self.Th = 1 << self.k
        self.v0 = 0 if self.coding == "graded" else int(p["v0"])
        self.smax = 1 << (int(p["state_bits"]) - 1)
        self.pmax = 1 << (int(p["payload_bits"]) - 1)
        self.Smax = 1 << (int(p["plastic_bits"]) - 1)
        self.lam = int(p["decay_int"])
        self.decay_on = bool(p["decay_on"])
        self.gain = p["gating"] == "gain"
        self.offset, self.period, self.n_tokens = int(p["offset"]), int(p["period"]), int(p["n_tokens"])
        self.normalize_input = bool(p["normalize_input"])
        self.freeze_after, self.reset_every = int(p["freeze_after"]), int(p["reset_every"])
        self.record_decoded, self.record_margins = bool(p["record_decoded"]), bool(p["record_margins"])
        self.record_state, self.record_path = bool(p["record_state"]), str(p["record_path"])
        self._rec = None
        self.sat_tok = np.zeros(len(SAT_KEYS), dtype=np.int64)
        self._K_ln = None

    @property
    def rec(self) -> dict:
        if self._rec is None:
            B, H, N = self.v_x.shape
            shapes = fixed_record_shapes(self.n_tokens, B, H, N, self.x_res.shape[1], self.record_decoded,
                                         self.record_margins, self.record_state)
            self._rec = {k: np.load(f"{self.record_path}{k}.npy", mmap_mode="r+") for k in shapes}
        return self._rec

    @property
    def K_ln(self) -> int:
        if self._K_ln is None:
            self._K_ln = math.isqrt(self.x_res.shape[1] << (2 * self.F))
        return self._K_ln

    def sat(self, x, lo, hi, key):
        n = int(np.count_nonzero((x < lo) | (x > hi)))
        if n:
            self.sat_tok[SAT_KEYS.index(key)] += n
            x = np.clip(x, lo, hi)
        return x

    def ln(self, z):
        return ln_int(z, self.K_ln, -self.pmax, self.pmax - 1, self.sat)

    def run_spk(self) -> None:
        x = self.x_in.recv().astype(np.int64)
        out = np.zeros(x.shape, dtype=np.int64)
        rel = self.time_step - self.offset
        if 0 <= rel < self.n_tokens * self.period:
            t, k = divmod(rel, self.period)
            T = self.T
            if k == 0:
                self._start_x(x)
            elif k == T:
                self._start_y(t)
            if k < T:
                self.v_x, self.cnt_x, self.mrg_x = self._step(self.v_x, self.i_x, self.cnt_x, self.mrg_x, "x")
            else:
                self.v_y, self.cnt_y, self.mrg_y = self._step(self.v_y, self.i_y, self.cnt_y, self.mrg_y, "y")
            if k == 2 * T - 1:
                out = self._finish(t).reshape(-1)
        self.x_out.send(out)

    # -- one neuron timestep in state units (threshold Th = 2**k) -----------------------------
    def _step(self, v, J, cnt, mrg, pop):
        Th = self.Th
        v = self.sat(v + J, -self.smax, self.smax - 1, f"{pop}_membrane")
        if self.coding == "rate":
            mrg = np.minimum(mrg, np.abs(v - Th).astype(np.float64) / Th)
            fire = (v > Th).astype(np.int64)
            return v - fire * Th, cnt + fire * Th, mrg
        if self.coding == "multispike":
            near = np.clip(np.round(v.astype(np.float64) / Th), 1.0, float(self.K))
            mrg = np.minimum(mrg, np.abs(v.astype(np.float64) / Th - near))
            n = np.clip(np.right_shift(v - 1, self.k), 0, self.K)
            return v - n * Th, cnt + n * Th, mrg
        mrg = np.minimum(mrg, np.abs(v).astype(np.float64) / Th)
        payload = self.sat(np.maximum(v, 0), 0, self.pmax - 1, f"{pop}_payload")
        return np.zeros_like(v), cnt + payload, mrg

    def _decode(self, P, theta, key):
        a = rdiv(P * theta, self.T << self.k)
        return self.sat(a, -self.pmax, self.pmax - 1, key)

    def _spike_events(self, counts):
        return (counts > 0) * float(self.T) if self.coding == "graded" else counts

    def _start_x(self, x):
        self.sat_tok[:] = 0
        D = self.x_res.shape[1]
        xr = x.reshape(self.B, D)
        if self.normalize_input:
            xr = self.ln(xr)
        self.x_res = xr
        H, N = self.s_x.shape
        acc = (xr @ self.w_x).reshape(self.B, H, N)
        self.i_x = self.sat(shift(acc, self.s_x), -self.smax, self.smax - 1, "x_current")
        self.v_x = np.full(self.v_x.shape, self.v0, dtype=np.int64)
        self.cnt_x = np.zeros(self.cnt_x.shape, dtype=np.int64)
        self.mrg_x = np.full(self.mrg_x.shape, np.inf)

    def _start_y(self, t):
        F = self.F
        lo, hi = -self.pmax, self.pmax - 1
        a = self._decode(self.cnt_x, self.th_x, "x_decoded")
        rot = np.stack((-a[..., 1::2], a[..., ::2]), axis=-1).reshape(a.shape)
        q = self.sat(shift(a * self.cos[t] + rot * self.sin[t], F), lo, hi, "q")  # B,H,N
        if self.reset_every > 0 and t % self.reset_every == 0:
            self.S = np.zeros(self.S.shape, dtype=np.int64)
        elif t > 0 and self.decay_on:
            self.S = shift(self.S * self.lam, F)
        u = shift(self.S * q[:, :, None, :], F).sum(axis=-1)  # B,H,D: read before the write
        if self.freeze_after < 0 or t < self.freeze_after:
            self.S = self.sat(self.S + shift(self.x_res[:, None, :, None] * q[:, :, None, :], F),
                              -self.Smax, self.Smax - 1, "plastic")
        lnu = self.ln(u)
        accy = np.matmul(lnu.transpose(1, 0, 2), self.w_y).transpose(1, 0, 2)  # B,H,N
        if self.gain:  # a (frac F) times the accumulator, one rounding
            self.i_y = self.sat(shift(a * accy, F + self.s_y), -self.smax, self.smax - 1, "y_current")
        else:
            self.i_y = self.sat(shift(accy, self.s_y), -self.smax, self.smax - 1, "y_current")
        self.a_hat = a
        self.v_y = np.full(self.v_y.shape, self.v0, dtype=np.int64)
        self.cnt_y = np.zeros(self.cnt_y.shape, dtype=np.int64)
        self.mrg_y = np.full(self.mrg_y.shape, np.inf)
        cx, rec = self.cnt_x.astype(np.float64) / self.Th, self.rec
        rec["x"][t] = cx
        rec["stats"][t, :, 0] = self._spike_events(cx).sum(axis=(1, 2))
        rec["stats"][t, :, 2] = (cx > 0).sum(axis=(1, 2))
        rec["stats"][t, :, 4] = (q != 0).sum(axis=(1, 2))
        if self.record_decoded:
            rec["a"][t] = a.astype(np.float64) / 2.0 ** F
        if self.record_margins:
            rec["mx"][t] = self.mrg_x

    def _finish(self, t):
        F = self.F
        b = self._decode(self.cnt_y, self.th_y, "y_decoded")
        g = b if self.gain else self.sat(shift(self.a_hat * b, F), -self.pmax, self.pmax - 1, "g")
        accm = g.reshape(self.B, -1) @ self.decoder
        x_new = self.ln(self.x_res + self.ln(accm))
        cy, rec = self.cnt_y.astype(np.float64) / self.Th, self.rec
        rec["y"][t] = cy
        rec["stats"][t, :, 1] = self._spike_events(cy).sum(axis=(1, 2))
        rec["stats"][t, :, 3] = (cy > 0).sum(axis=(1, 2))
        rec["stats"][t, :, 5] = (g != 0).sum(axis=(1, 2))
        rec["sat"][t] = self.sat_tok
        if self.record_decoded:
            rec["g"][t] = g.astype(np.float64) / 2.0 ** F
        if self.record_margins:
            rec["my"][t] = self.mrg_y
        if t == self.n_tokens - 1:
            if self.record_state:
                rec["S"][...] = self.S.astype(np.float64) / 2.0 ** F
            for buf in rec.values():
                buf.flush()
        return x_new


@implements(proc=LogitSink, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLogitSinkModelFixed(PyLoihiProcessModel):
    """Keeps the integer logits (int32 from Lava's bit-accurate Dense) of each token's logits step."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=32)
    last: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.path, self.first_step = str(p["path"]), int(p["first_step"])
        self.period, self.n_tokens = int(p["period"]), int(p["n_tokens"])
        self._buf = None

    def run_spk(self) -> None:
        self.last = self.a_in.recv().astype(np.int64)
        rel = self.time_step - self.first_step
        if rel >= 0 and rel % self.period == 0 and rel // self.period < self.n_tokens:
            if self._buf is None:
                self._buf = np.load(self.path, mmap_mode="r+")
            t = rel // self.period
            self._buf[t] = self.last
            if t == self.n_tokens - 1:
                self._buf.flush()


def fixed_record_shapes(n_tokens, batch, heads, neurons, dim, decoded=False, margins=False, state=False) -> dict:
    shapes = record_shapes(n_tokens, batch, heads, neurons, dim, decoded, margins, state)
    shapes["sat"] = (n_tokens, len(SAT_KEYS))
    return shapes


# -- spec, build, run --------------------------------------------------------------------------
def make_spec(net, settings: SimSettings, plasticity: Plasticity | None = None) -> dict:
    """graph.make_spec with the fixed-point classes, models, weights and run config."""
    from .graph import make_spec as make_spec_float

    spec = make_spec_float(net, settings, plasticity)
    q = net.extra["quantization"]
    spec["lava"]["run_cfg"] = RUN_CFG
    spec["quantization"] = {"params": q["params"], "lm_shift": q["lm_shift"],
                            "logit_scale_exp": q["logit_scale_exp"], "v0": q["v0"]}
    for entry in spec["processes"]:
        name = entry["name"]
        if name == "source":
            entry["model"] = "lava.proc.io.source.PySendModelFixed"
        elif name in ("embed", "readout"):
            entry["model"] = "lava.proc.dense.models.PyDenseModelBitAcc"
            entry["weights"] = "q_embed" if name == "embed" else "q_lm_head"
            entry["weight_exp"] = -1 if name == "embed" else -(q["lm_shift"] + 1)
            entry["note"] = ("weights stored as 2*mantissa (Lava's mixed-sign 8-bit convention), "
                             "a_out = (weights . s_in) >> -weight_exp (floor)")
        elif name.startswith("layer"):
            layer = entry["layer"]
            entry["class"] = "bdh_spiking.backends.lava_backend.fixed_point.BDHLayerFixed"
            entry["model"] = "bdh_spiking.backends.lava_backend.fixed_point.PyBDHLayerModelFixed"
            entry["weights"] = {"w_x": f"q_W_x[{layer}]", "w_y": f"q_W_y[{layer}]", "s_x": f"q_W_x_shift[{layer}]",
                                "s_y": f"q_W_y_shift[{layer}]", "th_x": f"q_theta_x[{layer}]",
                                "th_y": f"q_theta_y[{layer}]", "decoder": "q_decoder",
                                "cos/sin": "quantize.oscillator_table(freqs, n, frac_bits)"}
        elif name == "sink":
            entry["model"] = "bdh_spiking.backends.lava_backend.fixed_point.PyLogitSinkModelFixed"
    return spec


def build(net, spec: dict, ids: np.ndarray, record=(), record_dir: str | None = None) -> dict:
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as SourceBuffer

    B, n = ids.shape
    d = spec["dims"]
    D, V = d["D"], d["V"]
    st, pl = spec["settings"], spec["plasticity"]
    T = st["timesteps"]
    period = spec["schedule"]["period_steps_per_token"]
    from .graph import total_steps

    steps = total_steps(spec, n)
    q = qparams(net)
    cos, sin = oscillator_table(net.arrays["freqs"], n, q["F"])
    eye = np.eye(B, dtype=np.int64)

    def buffers(prefix, shapes):
        for key, shape in shapes.items():
            np.lib.format.open_memmap(os.path.join(record_dir, f"{prefix}{key}.npy"), mode="w+",
                                      dtype=np.float64, shape=shape).flush()
        return os.path.join(record_dir, prefix)

    plast = Plasticity(**pl)
    procs = {}
    for entry in spec["processes"]:
        name = entry["name"]
        if name == "source":
            data = np.zeros((B * V, steps), dtype=np.int32)
            for t in range(n):
                data[np.arange(B) * V + ids[:, t], t * period] = 1
            procs[name] = SourceBuffer(data=data)
        elif name in ("embed", "readout"):
            W = q[entry["weights"]].T  # Lava's Dense wants (out, in)
            procs[name] = Dense(weights=np.kron(eye, 2 * W), num_message_bits=entry["num_message_bits"],
                                weight_exp=entry["weight_exp"], num_weight_bits=8, name=name)
        elif name.startswith("layer"):
            layer = entry["layer"]
            Wx = q["q_W_x"][layer]
            H, _, N = Wx.shape
            procs[name] = BDHLayerFixed(
                w_x=np.ascontiguousarray(Wx.transpose(1, 0, 2).reshape(D, H * N)), w_y=q["q_W_y"][layer].copy(),
                s_x=q["q_W_x_shift"][layer].copy(), s_y=q["q_W_y_shift"][layer].copy(),
                th_x=q["q_theta_x"][layer].copy(), th_y=q["q_theta_y"][layer].copy(), decoder=q["q_decoder"].copy(),
                cos=cos, sin=sin, batch=B, timesteps=T, coding=st["coding"], max_spikes=st["max_spikes"],
                v0=q["v0"], k=q["k"], frac_bits=q["F"], state_bits=q["state_bits"], payload_bits=q["payload_bits"],
                plastic_bits=q["plastic_bits"], decay_int=decay_int(plast.decay, q["F"]),
                decay_on=plast.decay != 1.0, gating=spec["gating"], offset=entry["offset"], period=period,
                n_tokens=n, normalize_input=entry["normalize_input"],
                freeze_after=-1 if pl["freeze_after"] is None else int(pl["freeze_after"]),
                reset_every=0 if pl["reset_every"] is None else int(pl["reset_every"]),
                record_path=buffers(f"{name}_", fixed_record_shapes(n, B, H, N, D, "decoded" in record,
                                                                    "margins" in record, "state" in record)),
                record_decoded="decoded" in record, record_margins="margins" in record,
                record_state="state" in record, name=name)
        elif name == "sink":
            path = buffers(f"{name}_", {"logits": (n, B * V)}) + "logits.npy"
            procs[name] = LogitSink(size=B * V, path=path, first_step=entry["first_step"], period=period,
                                    n_tokens=n, name=name)
    for c in spec["connections"]:
        (sp, sport), (dp, dport) = c["from"].split("."), c["to"].split(".")
        getattr(procs[sp], sport).connect(getattr(procs[dp], dport))
    return procs


def run_cfg(procs: dict | None = None):
    """Loihi2SimCfg(select_tag='fixed_pt') with every ProcessModel named explicitly."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.models import PyDenseModelBitAcc
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import PySendModelFixed
    from lava.proc.io.source import RingBuffer as SourceBuffer

    by_class = {BDHLayerFixed: PyBDHLayerModelFixed, Dense: PyDenseModelBitAcc, SourceBuffer: PySendModelFixed,
                LogitSink: PyLogitSinkModelFixed}
    models = dict(by_class)
    for proc in (procs or {}).values():
        models[proc] = by_class[type(proc)]
    return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=models)


def run_spec(net, spec: dict, ids: torch.Tensor, record=(), progress: bool = False, how: str = "") -> SimulationResult:
    from .graph import execute, logits_per_token, read_records, total_steps

    started = time.perf_counter()
    record = tuple(record)
    B, n, logits_np, rec, stats = execute(net, spec, ids, record, build, run_cfg, fixed_record_shapes,
                                          "lava (fixed_pt)", progress)
    d = spec["dims"]
    L, V = d["L"], d["V"]
    scale = 2.0 ** spec["quantization"]["logit_scale_exp"]
    logits = logits_per_token(logits_np, n, B, V) * scale
    records = read_records(rec, record)
    sat_layer = [{key: int(round(v)) for key, v in zip(SAT_KEYS, rec["sat"][i].sum(axis=0))} for i in range(L)]
    settings = SimSettings(timesteps=spec["settings"]["timesteps"], coding=spec["settings"]["coding"],
                           max_spikes=spec["settings"]["max_spikes"], mode=spec["settings"]["mode"])
    meta = {"timesteps": settings.timesteps, "coding": settings.coding, "max_spikes": settings.max_spikes,
            "mode": settings.mode, "gating": net.gating, "dtype": "int64", "device": "cpu",
            "lava_timesteps": total_steps(spec, ids.shape[1]),
            "lava_timesteps_per_token": spec["schedule"]["period_steps_per_token"],
            "lava_processes": len(spec["processes"]), "run_cfg": spec["lava"]["run_cfg"],
            "quantization": how, "saturations_per_layer": sat_layer}
    result = SimulationResult(logits=logits, stats=stats, records=records, backend="lava", settings=meta,
                              wall_s=time.perf_counter() - started)
    result.events = event_counts(stats, net, settings)
    totals = {key: sum(layer[key] for layer in sat_layer) for key in SAT_KEYS}
    result.events["saturations"] = totals
    result.events["saturations_total"] = sum(totals.values())
    return result


def simulate(net, ids, settings, plasticity=None, record=(), progress=False, save_lava_dir=None):
    net, how = ensure_quantized(net)
    if net.extra["quantization"]["params"]["weight_bits"] > 8:
        raise ConfigError("the lava backend's fixed_pt graph uses Lava's Dense (8-bit weights): quantize with "
                          "weight_bits <= 8")
    plasticity = plasticity or Plasticity()
    spec = make_spec(net, settings, plasticity)
    if save_lava_dir:
        from .graph import save_process_graph

        save_process_graph(net, save_lava_dir, settings, plasticity)
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids[None]
    return run_spec(net, spec, ids, record=record, progress=progress, how=how)

