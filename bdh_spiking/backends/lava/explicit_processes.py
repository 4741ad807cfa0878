"""The Processes of ours in the explicit Lava graph (``--lava-graph explicit``): one process per
population and per graded node. Lava's own Dense carries the static projections (embedding,
lm_head, and E, E_v, decoder in floating point); ``Projection`` is ours, used for E, E_v and the
decoder in fixed point, where Lava's bit-accurate Dense cannot carry the exact accumulator (see
docs/backends.md, "Explicit graph").

Every process here has a floating-point and a fixed-point ProcessModel (explicit_models.py) over
one shared model that calls the semantics. Timing: each process knows, per input port, the Lava
timestep at which token 0's value arrives (``arrive``), the step at which it sends token 0's
result (``send``) and the period (Lava steps per token); values are latched per token, so tokens
of a layer overlap in the pipeline.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class Scheduled(AbstractProcess):
    """Common parameters: arrive (port -> step of token 0), send (step of token 0's output),
    period, n_tokens, record_path (prefix of the host-shared record files), integer (the fields of
    ``IntegerLayerMath`` in fixed point, None in floating point), settings (timesteps, coding,
    max_spikes), gating."""

    def __init__(self, *, arrive: dict, send: int, period: int, n_tokens: int, settings: dict, gating: str,
                 record_path: str = "", integer: dict | None = None, name: str | None = None, **params) -> None:
        super().__init__(arrive=dict(arrive), send=send, period=period, n_tokens=n_tokens, settings=dict(settings),
                         gating=gating, record_path=record_path, integer=integer, name=name, **params)


class IFPopulation(Scheduled):
    """H*N integrate-and-fire neurons (subtractive reset; rate, multispike or graded coding) of one
    population of one layer, for a batch of B sequences. a_in: the input current (accumulator
    units); the neuron scales it (per-neuron shift in fixed point), latches it for the token's T
    steps, steps T times from v0, and sends its decoded activity count*theta/T (one graded
    message per token) on s_out in its last step. Records counts, margins, decoded activity."""

    def __init__(self, *, batch: int, theta: np.ndarray, shifts: np.ndarray, pop: str, v_init: float,
                 **kw) -> None:
        super().__init__(batch=batch, pop=pop, v_init=v_init, **kw)
        heads, neurons = theta.shape
        size = batch * heads * neurons
        self.a_in = InPort(shape=(size,))
        self.s_out = OutPort(shape=(size,))
        self.theta = Var(shape=theta.shape, init=theta)
        self.shifts = Var(shape=shifts.shape, init=shifts)
        pop_shape = (batch, heads, neurons)
        self.v, self.i = Var(shape=pop_shape, init=0), Var(shape=pop_shape, init=0)
        self.cnt, self.mrg = Var(shape=pop_shape, init=0), Var(shape=pop_shape, init=np.inf)


class PlasticSynapses(Scheduled):
    """The fixed-frame Hebbian synapses S (B, H, D, N) of one layer with the x-pair oscillators:
    x_in the layer's residual input, a_in the decoded x activity; per token the payload
    q = R_t a, the switches, the read u = S q (sent on u_out, (B*H*D,)), the write S += x q."""

    def __init__(self, *, batch: int, heads: int, dim: int, neurons: int, cos: np.ndarray, sin: np.ndarray,
                 plasticity: dict, **kw) -> None:
        super().__init__(batch=batch, plasticity=dict(plasticity), **kw)
        self.x_in = InPort(shape=(batch * dim,))
        self.a_in = InPort(shape=(batch * heads * neurons,))
        self.u_out = OutPort(shape=(batch * heads * dim,))
        self.cos, self.sin = Var(shape=cos.shape, init=cos), Var(shape=sin.shape, init=sin)
        self.S = Var(shape=(batch, heads, dim, neurons), init=0)


class LayerNorm(Scheduled):
    """LayerNorm over the last axis of (rows, dim) (rows = B for the residual stream, B*H for the
    per-head readout u)."""

    def __init__(self, *, rows: int, dim: int, **kw) -> None:
        super().__init__(rows=rows, dim=dim, **kw)
        self.x_in = InPort(shape=(rows * dim,))
        self.x_out = OutPort(shape=(rows * dim,))


class Gate(Scheduled):
    """The gate of one layer. Gain gating: a_in (decoded x) times b_in (the E_v accumulator z):
    the y current before the neuron's scaling. Product gating: a_in times b_in (decoded y) -> the
    gated output g (a product node; fixed point rounds half away and saturates). Size B*H*N."""

    def __init__(self, *, size: int, **kw) -> None:
        super().__init__(size=size, **kw)
        self.a_in = InPort(shape=(size,))
        self.b_in = InPort(shape=(size,))
        self.s_out = OutPort(shape=(size,))


class Residual(Scheduled):
    """x' = LN(x + LN(m)): x_in the layer's residual input, m_in the decoder's sum; out x_out."""

    def __init__(self, *, batch: int, dim: int, **kw) -> None:
        super().__init__(batch=batch, dim=dim, **kw)
        self.x_in = InPort(shape=(batch * dim,))
        self.m_in = InPort(shape=(batch * dim,))
        self.x_out = OutPort(shape=(batch * dim,))


class Projection(AbstractProcess):
    """A static dense projection a_out = W s_in with one step of delay (Lava's Dense timing) and an
    exact accumulator (float64, or int64 with no exponent). Used in fixed point for E, E_v and the
    decoder: Lava's bit-accurate Dense sends int32 and shifts by one weight_exp per connection with
    floor, while the semantics needs the exact int64 accumulator (the neurons apply per-neuron
    round-half-away shifts)."""

    def __init__(self, *, weights: np.ndarray, name: str | None = None) -> None:
        super().__init__(name=name)
        out_size, in_size = weights.shape
        self.s_in = InPort(shape=(in_size,))
        self.a_out = OutPort(shape=(out_size,))
        self.weights = Var(shape=weights.shape, init=weights)
        self.a_buff = Var(shape=(out_size,), init=0)
