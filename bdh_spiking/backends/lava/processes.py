"""The Lava Processes of this backend (what they hold, not how they compute): ``BDHLayer``, one per
BDH layer with all of its heads, and ``LogitSink``. Each has a floating-point and a fixed-point
ProcessModel (models.py), selected by the run configuration's tag.

Lava's CPU simulator pays a fixed cost per process per timestep, so a layer is one large process
rather than a graph of small ones: the x population (H*N IF neurons), the plastic synapses S
(H x D x N), the per-head LayerNorm of the readout, the y population (H*N IF neurons), the
product/gain gate and the decoder with its two LayerNorms.

Ports carry the graded residual stream, flattened to (B*D,) so that Lava's own Dense and
RingBuffer processes connect to them directly.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from ...semantics.events import EVENT_KEYS
from ...semantics.fixed_point import SAT_KEYS

ARRAYS = ("w_x", "w_y", "shift_x", "shift_y", "theta_x", "theta_y", "decoder", "cos", "sin")


class BDHLayer(AbstractProcess):
    """One BDH layer as two populations of unit-threshold IF neurons with plastic synapses.

    Arrays (Var initial values; float64 folded weights in floating point, the quantization's
    integer tables in fixed point): w_x (H, D, N) = E by theta_x; w_y (H, D, N) = E_v by theta_y; shift_x, shift_y
    (H, N) right shifts from accumulator to state units (fixed point; 0 in floating point);
    theta_x, theta_y (H, N); decoder (H*N, D); cos, sin (n_tokens, N) oscillator phases.

    Scalars (proc_params): batch, timesteps, coding, max_spikes, v_init, gating, offset (the Lava
    timestep at which token 0's input arrives), period (timesteps per token), n_tokens,
    normalize_input (layer 0: LayerNorm of the embedding), plasticity (the switches, a dict),
    record (what to record), record_path (prefix of the host-shared record files), integer
    (fixed point: the fields of ``semantics.fixed_point.IntegerLayerMath``; None in floating point).
    """

    def __init__(self, *, w_x: np.ndarray, w_y: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray,
                 theta_x: np.ndarray, theta_y: np.ndarray, decoder: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                 batch: int, timesteps: int, coding: str, max_spikes: int, v_init: float, gating: str, offset: int,
                 period: int, n_tokens: int, normalize_input: bool, plasticity: dict, record: tuple = (),
                 record_path: str = "", integer: dict | None = None, name: str | None = None) -> None:
        super().__init__(batch=batch, timesteps=timesteps, coding=coding, max_spikes=max_spikes, v_init=v_init,
                         gating=gating, offset=offset, period=period, n_tokens=n_tokens,
                         normalize_input=normalize_input, plasticity=dict(plasticity), record=tuple(record),
                         record_path=record_path, integer=integer, name=name)
        H, D, N = w_y.shape
        pop = (batch, H, N)
        # interface: the graded residual stream in and out
        self.x_in = InPort(shape=(batch * D,))
        self.x_out = OutPort(shape=(batch * D,))
        # static synapses, neuron parameters, oscillator phases
        for var, value in zip(ARRAYS, (w_x, w_y, shift_x, shift_y, theta_x, theta_y, decoder, cos, sin)):
            setattr(self, var, Var(shape=value.shape, init=value))
        # neuron state: membranes, input currents, emitted payload sums, smallest boundary distances
        self.v_x, self.v_y = Var(shape=pop, init=0), Var(shape=pop, init=0)
        self.i_x, self.i_y = Var(shape=pop, init=0), Var(shape=pop, init=0)
        self.cnt_x, self.cnt_y = Var(shape=pop, init=0), Var(shape=pop, init=0)
        self.mrg_x, self.mrg_y = Var(shape=pop, init=np.inf), Var(shape=pop, init=np.inf)
        # the token's decoded x activity, its rotated payload and the layer's residual input
        self.a_hat = Var(shape=pop, init=0)
        self.payload = Var(shape=pop, init=0)  # q = R_t a
        self.x_res = Var(shape=(batch, D), init=0)
        # plastic synapses (fixed frame), one D x N matrix per head and sequence
        self.S = Var(shape=(batch, H, D, N), init=0)
        # per-token records and the final plastic state leave through host-shared buffers
        # (record_shapes), written by the ProcessModel


class LogitSink(AbstractProcess):
    """Receives the logits stream (B*V,) and keeps the values of the timesteps that carry a token's
    logits (``first_step + t*period``), writing them to a host-shared buffer (``path``).

    Lava's own lava.proc.io.sink.RingBuffer does the receiving part the same way, but reading its
    buffer back with Var.get() moves one value per message in Lava 0.10 (measured ~20 us a value:
    2.7 s for the 137k values of 64 tokens of the default model), so the sink is a process of ours.
    """

    def __init__(self, *, size: int, path: str, first_step: int, period: int, n_tokens: int,
                 name: str | None = None) -> None:
        super().__init__(size=size, path=path, first_step=first_step, period=period, n_tokens=n_tokens, name=name)
        self.a_in = InPort(shape=(size,))
        self.last = Var(shape=(size,), init=0)


def record_shapes(n_tokens: int, batch: int, heads: int, neurons: int, dim: int, record=(),
                  integer: bool = False) -> dict:
    """The host-shared record buffers of one BDHLayer: name -> shape (float64 .npy files)."""
    pop = (n_tokens, batch, heads, neurons)
    shapes = {"x": pop, "y": pop, "stats": (n_tokens, batch, len(EVENT_KEYS))}
    if "decoded" in record:
        shapes.update(a=pop, g=pop)
    if "margins" in record:
        shapes.update(mx=pop, my=pop)
    if "state" in record:
        shapes["S"] = (batch, heads, dim, neurons)
    if integer:
        shapes["sat"] = (n_tokens, len(SAT_KEYS))  # saturations per token, in SAT_KEYS order
    return shapes
