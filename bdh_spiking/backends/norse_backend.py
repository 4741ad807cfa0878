"""Norse backend: the spiking network run on Norse's functional neuron steps (docs/backends.md, "Norse").

Norse's own pieces: the neurons are ``norse.torch.module.snn.SNNCell`` cells stepping a pure
function ``step(input, state, p, dt) -> (z, state)`` with Norse's explicit state and parameter
NamedTuples (``IAFFeedForwardState``, ``IAFParameters``), Norse's spike function
``norse.torch.functional.threshold.threshold(v - v_th, "heaviside", alpha)`` (strictly v > v_th)
and Norse's reset functions ``reset_subtract`` / ``reset_value``.

Norse's integrate-and-fire neuron (``iaf_feed_forward_step``) resets to a fixed potential
(``v = (1 - z) v + z v_reset``) and its LIF/LIF-box neurons always leak, so none of them
expresses the semantics' non-leaky IF neuron with reset by subtraction. Ours, written in
Norse's functional style: ``iaf_subtract_feed_forward_step`` (Norse's IAF step with Norse's
``reset_subtract`` in place of its reset to ``v_reset``; bit-identical to the semantics' rate
step), ``multispike_feed_forward_step`` (up to K spikes per step: the count of Norse thresholds
v > j*v_th, j = 1..K) and ``graded_feed_forward_step`` (one graded spike carrying max(v, 0),
then Norse's ``reset_value`` to 0). Norse has no plastic synapse, LayerNorm or gating:
``HebbianSynapse`` (event-driven fixed-frame plastic synapses), ``LayerNorm``, ``Gate`` and
``ResidualDecoder`` are small ``nn.Module`` layers of ours, shared with the snnTorch backend in
``torch_layers`` (plain torch), as are the chunked token loop, statistics and records
(``torch_layers.simulate_with``); this module holds only the Norse-style neuron steps, their
cells and their population ``IFPopulation``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import norse
import torch
from norse.torch.functional.iaf import IAFFeedForwardState, IAFParameters
from norse.torch.functional.reset import reset_subtract, reset_value
from norse.torch.functional.threshold import threshold
from norse.torch.module.snn import SNNCell

from ..semantics import SimSettings
from .base import SimulationResult
from .torch_layers import RECORDABLE, HebbianSynapse, Population, simulate_with  # noqa: F401 (re-exported)

NAME = "norse"


# -- neurons: functional steps in Norse's style -----------------------------------------------------
def iaf_parameters() -> IAFParameters:
    """Unit threshold, Norse's exact Heaviside spike function (no surrogate in the forward pass)."""
    return IAFParameters(v_th=torch.as_tensor(1.0), v_reset=torch.as_tensor(0.0), method="heaviside",
                         alpha=torch.as_tensor(100.0))


def iaf_subtract_feed_forward_step(
    input_tensor: torch.Tensor, state: IAFFeedForwardState, p: IAFParameters = iaf_parameters(), dt: float = 0.001,
) -> Tuple[torch.Tensor, IAFFeedForwardState]:
    """Norse's ``iaf_feed_forward_step`` with reset by subtraction (Norse's ``reset_subtract``):

    v = v + I;  z = Theta(v - v_th);  v = (1 - z) v + z (v - v_th)
    """
    v_new = state.v + input_tensor
    z_new = threshold(v_new - p.v_th, p.method, p.alpha)
    v_new = reset_subtract(z_new, v_new, p.v_reset, p.v_th)
    return z_new, IAFFeedForwardState(v=v_new)


class MultiSpikeParameters(NamedTuple):
    """IAF parameters plus the most spikes a neuron may emit in one step."""

    v_th: torch.Tensor = torch.as_tensor(1.0)
    max_spikes: int = 4
    method: str = "heaviside"
    alpha: torch.Tensor = torch.as_tensor(100.0)


def multispike_feed_forward_step(
    input_tensor: torch.Tensor, state: IAFFeedForwardState, p: MultiSpikeParameters = MultiSpikeParameters(),
    dt: float = 0.001,
) -> Tuple[torch.Tensor, IAFFeedForwardState]:
    """Up to K spikes per step: z = sum_{j=1..K} Theta(v - j v_th) (the number of integers
    1..K that v exceeds), then v = v - z v_th."""
    v_new = state.v + input_tensor
    z_new = torch.zeros_like(v_new)
    for j in range(1, p.max_spikes + 1):
        z_new = z_new + threshold(v_new - j * p.v_th, p.method, p.alpha)
    return z_new, IAFFeedForwardState(v=v_new - z_new * p.v_th)


def graded_feed_forward_step(
    input_tensor: torch.Tensor, state: IAFFeedForwardState, p: IAFParameters = iaf_parameters(), dt: float = 0.001,
) -> Tuple[torch.Tensor, IAFFeedForwardState]:
    """One graded spike per step carrying max(v, 0); every step resets (Norse's ``reset_value``) to 0."""
    v_new = state.v + input_tensor
    z_new = torch.clamp(v_new, min=0.0)
    v_new = reset_value(torch.ones_like(v_new), v_new, p.v_reset, p.v_th)
    return z_new, IAFFeedForwardState(v=v_new)


class IAFSubtractCell(SNNCell):
    def __init__(self, p: IAFParameters = iaf_parameters(), dt: float = 0.001):
        super().__init__(iaf_subtract_feed_forward_step, self.initial_state, p, dt)

    def initial_state(self, input_tensor):
        return IAFFeedForwardState(v=torch.zeros_like(input_tensor))


class MultiSpikeCell(SNNCell):
    def __init__(self, p: MultiSpikeParameters, dt: float = 0.001):
        super().__init__(multispike_feed_forward_step, self.initial_state, p, dt)

    def initial_state(self, input_tensor):
        return IAFFeedForwardState(v=torch.zeros_like(input_tensor))


class GradedCell(SNNCell):
    def __init__(self, p: IAFParameters = iaf_parameters(), dt: float = 0.001):
        super().__init__(graded_feed_forward_step, self.initial_state, p, dt)

    def initial_state(self, input_tensor):
        return IAFFeedForwardState(v=torch.zeros_like(input_tensor))


class IFPopulation(Population):
    """A layer-synchronous population of Norse cells: constant current for T steps from v = v_init.

    Returns the counts (spikes, or graded payload summed over the steps) and, if asked, the
    smallest distance of the integrated membrane to a firing boundary (as the reference's margins).
    """

    def __init__(self, settings: SimSettings, v_init: float):
        super().__init__(settings, v_init)
        if self.coding == "rate":
            self.cell = IAFSubtractCell()
        elif self.coding == "multispike":
            self.cell = MultiSpikeCell(MultiSpikeParameters(max_spikes=settings.max_spikes))
        else:
            self.cell = GradedCell()

    def steps(self, current: torch.Tensor, margins: bool = False):
        state = IAFFeedForwardState(v=torch.full_like(current, self.v_init))
        counts = torch.zeros_like(current)
        margin = torch.full_like(current, math.inf) if margins else None
        for _ in range(self.timesteps):
            if margins:  # the step's integration (the same float operation)
                margin = torch.minimum(margin, self.distance(state.v + current))
            z, state = self.cell(current, state)
            counts += z
        return counts, margin


# -- the run ------------------------------------------------------------------------------------
def simulate(net, ids, settings: SimSettings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress: bool = False, chunk: int = 64, event_driven: bool = True,
             stepwise: bool = False) -> SimulationResult:
    """Runs the network on ids (B, T) with Norse cells (``torch_layers.simulate_with``). chunk:
    tokens whose populations are stepped together (1 = strictly token by token; any value gives the
    same counts)."""
    return simulate_with(IFPopulation, net, ids, settings, name=NAME, library=f"norse {norse.__version__}",
                         device=device, record=record, plasticity=plasticity, dtype=dtype, progress=progress,
                         chunk=chunk, event_driven=event_driven, stepwise=stepwise)
