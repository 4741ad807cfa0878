"""The Lava Process of this backend: one ``BDHLayer`` per BDH layer, holding all of its heads.

A Process only declares interface and state (ports and Vars); its behaviour lives in a
ProcessModel (models.py, ``PyBDHLayerModelFloat``, tag 'floating_pt'). Lava's CPU simulator
pays a fixed cost per process per timestep, so a layer is one large process rather than a
graph of small ones: the x population (H*N IF neurons), the plastic synapses S (H x D x N),
the per-head LayerNorm of the readout, the y population (H*N IF neurons), the product/gain
gate and the decoder with its two LayerNorms.

Ports carry the graded residual stream, flattened to (B*D,) so that Lava's own Dense and
RingBuffer processes connect to them directly.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

N_STATS = 6  # x_spikes, y_spikes, x_active, y_active, active_columns, g_nonzero (base.EVENT_KEYS order)


class BDHLayer(AbstractProcess):
    """One BDH layer as two populations of unit-threshold IF neurons with plastic synapses.

    Arrays (Var initial values, float64): w_x (D, H*N) = E folded by theta_x, laid out so the
    graded input x (B, D) gives the currents x @ w_x; w_y (H, D, N) = E_v folded by theta_y;
    theta_x, theta_y (H, N); decoder (H*N, D); cos, sin (n_tokens, N): the official float32
    oscillator phases of every token position (semantics.oscillator_cos_sin), cast to float64.

    Scalars (proc_params): batch, timesteps, coding, max_spikes, v_init, gating, offset (the
    Lava timestep at which token 0's input arrives), period (timesteps per token),
    n_tokens, normalize_input (layer 0: LayerNorm of the embedding), freeze_after,
    reset_every, decay, record_path (prefix of the host-shared record files) and record flags.
    """

    def __init__(self, *, w_x: np.ndarray, w_y: np.ndarray, theta_x: np.ndarray, theta_y: np.ndarray,
                 decoder: np.ndarray, cos: np.ndarray, sin: np.ndarray, batch: int, timesteps: int,
                 coding: str, max_spikes: int, v_init: float, gating: str, offset: int, period: int,
                 n_tokens: int, normalize_input: bool, freeze_after: int = -1, reset_every: int = 0,
                 decay: float = 1.0, record_path: str = "", record_decoded: bool = False,
                 record_margins: bool = False, record_state: bool = False, name: str | None = None) -> None:
        super().__init__(batch=batch, timesteps=timesteps, coding=coding, max_spikes=max_spikes,
                         v_init=v_init, gating=gating, offset=offset, period=period, n_tokens=n_tokens,
                         normalize_input=normalize_input, freeze_after=freeze_after, reset_every=reset_every,
                         decay=decay, record_path=record_path, record_decoded=record_decoded,
                         record_margins=record_margins, record_state=record_state, name=name)
        H, D, N = w_y.shape
        B = batch
        pop = (B, H, N)
        v0 = 0.0 if coding == "graded" else float(v_init)
        # interface: the graded residual stream in and out
        self.x_in = InPort(shape=(B * D,))
        self.x_out = OutPort(shape=(B * D,))
        # static synapses and neuron parameters
        self.w_x = Var(shape=w_x.shape, init=w_x)
        self.w_y = Var(shape=w_y.shape, init=w_y)
        self.theta_x = Var(shape=theta_x.shape, init=theta_x)
        self.theta_y = Var(shape=theta_y.shape, init=theta_y)
        self.decoder = Var(shape=decoder.shape, init=decoder)
        self.cos = Var(shape=cos.shape, init=cos)
        self.sin = Var(shape=sin.shape, init=sin)
        # neuron state: membrane potentials, input currents, spike counters
        self.v_x = Var(shape=pop, init=v0)
        self.v_y = Var(shape=pop, init=v0)
        self.i_x = Var(shape=pop, init=0.0)
        self.i_y = Var(shape=pop, init=0.0)
        self.cnt_x = Var(shape=pop, init=0.0)
        self.cnt_y = Var(shape=pop, init=0.0)
        self.mrg_x = Var(shape=pop, init=np.inf)
        self.mrg_y = Var(shape=pop, init=np.inf)
        self.a_hat = Var(shape=pop, init=0.0)
        self.x_res = Var(shape=(B, D), init=0.0)
        # plastic synapses (fixed frame), one D x N matrix per head and sequence
        self.S = Var(shape=(B, H, D, N), init=0.0)
        # per-token records (counts, event statistics, optionally decoded activity and margins) and
        # the final plastic state leave through host-shared buffers, see models.RecordFiles


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
        self.last = Var(shape=(size,), init=0.0)


def record_shapes(n_tokens: int, batch: int, heads: int, neurons: int, dim: int, decoded: bool = False,
                  margins: bool = False, state: bool = False) -> dict:
    """The host-shared record buffers of one BDHLayer: name -> shape (float64 .npy files)."""
    pop = (n_tokens, batch, heads, neurons)
    shapes = {"x": pop, "y": pop, "stats": (n_tokens, batch, N_STATS)}
    if decoded:
        shapes.update(a=pop, g=pop)
    if margins:
        shapes.update(mx=pop, my=pop)
    if state:
        shapes["S"] = (batch, heads, dim, neurons)
    return shapes
