"""snnTorch backend: the spiking network run on snnTorch's neurons (docs/backends.md, "snnTorch").

Native snnTorch: the rate-coded IF neuron is ``snntorch.Leaky(beta=1.0, threshold=1.0,
reset_mechanism="subtract", init_hidden=False)``, stepped as ``spk, mem = lif(cur, mem)`` with
``mem`` initialised to ``net.v_init`` at the start of every token. snnTorch applies the reset of a
spike at the *next* step (``mem_k = beta*mem_{k-1} + I - s_{k-1}*thr``, ``s_k = mem_k > thr``; the
returned ``mem`` is the pre-reset potential), which is the same recurrence as the semantics
``v += I; s = v > 1; v -= s`` written in the other order; only the order of the two float additions
differs (potentials can differ by a few ulps), so counts can differ only for a membrane within
~1e-14 of a boundary, a near-threshold tie.

Ours, in snnTorch's style (subclasses of ``snntorch.Leaky`` overriding ``fire``/``mem_reset``):
``MultiSpikeLeaky`` (up to K spikes per step, subtracted at the next step like snnTorch's own
reset) and ``GradedLeaky`` (one graded spike carrying max(v, 0) each step, snnTorch's
reset-to-zero). snnTorch has no plastic synapse, LayerNorm or gating: ``HebbianSynapse``
(event-driven fixed-frame plastic synapses), ``LayerNorm``, ``Gate`` and ``ResidualDecoder`` are
small ``nn.Module`` layers of ours, shared with the Norse backend in ``torch_layers`` (plain
torch), as are the chunked token loop, statistics and records (``torch_layers.simulate_with``);
this module holds only the snnTorch neurons and their population ``IFPopulation``.
"""

from __future__ import annotations

import math

import snntorch
import torch

from ..semantics import SimSettings
from .base import SimulationResult
from .torch_layers import RECORDABLE, HebbianSynapse, Population, simulate_with  # noqa: F401 (re-exported)

NAME = "snntorch"


# -- neurons ------------------------------------------------------------------------------------
def rate_neuron() -> snntorch.Leaky:
    """snnTorch's own LIF configured as the semantics' IF neuron: no leak, unit threshold,
    reset by subtraction (applied by snnTorch at the next step), strict ``mem > threshold``."""
    return snntorch.Leaky(beta=1.0, threshold=1.0, reset_mechanism="subtract", init_hidden=False)


class MultiSpikeLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` emitting up to K spikes per step (not an snnTorch feature: ours).

    fire: s = clamp(ceil(mem - thr), 0, K), i.e. the number of integers 1..K that mem exceeds
    (with thr = 1, equal to clamp(ceil(mem) - 1, 0, K): mem - 1 is exact for 0.5 <= mem < 2**53,
    and both are 0 below);
    mem_reset: the same count, so snnTorch's subtractive reset removes s * thr at the next step.
    """

    def __init__(self, max_spikes: int):
        super().__init__(beta=1.0, threshold=1.0, reset_mechanism="subtract", init_hidden=False)
        self.max_spikes = int(max_spikes)

    def fire(self, mem):
        spk = torch.clamp(torch.ceil(mem - self.threshold), min=0.0, max=float(self.max_spikes))
        self._fired = (mem, spk)  # the next step's mem_reset of this very membrane is this count
        return spk

    def mem_reset(self, mem):
        fired = getattr(self, "_fired", None)
        if fired is not None and fired[0] is mem:
            return fired[1].detach()  # computed by fire at the previous step: not recomputed
        return self.fire(mem).detach()


class GradedLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` with one graded spike per step carrying max(mem, 0) (ours).

    Every step emits (a zero payload is still the step's event), so snnTorch's reset-to-zero
    mechanism is applied at every following step: mem_k = 0 * mem_{k-1} + I.
    """

    def __init__(self):
        super().__init__(beta=1.0, threshold=1.0, reset_mechanism="zero", init_hidden=False)

    def fire(self, mem):
        return torch.clamp(mem, min=0.0)

    def mem_reset(self, mem):
        return torch.ones_like(mem)


class IFPopulation(Population):
    """A layer-synchronous population of snnTorch neurons: constant current for T steps from mem = v_init.

    Returns the counts (spikes, or graded payload summed over the steps) and, if asked, the
    smallest distance of the pre-reset membrane to a firing boundary (as the reference's margins).
    """

    def __init__(self, settings: SimSettings, v_init: float):
        super().__init__(settings, v_init)
        if self.coding == "rate":
            self.lif = rate_neuron()
        elif self.coding == "multispike":
            self.lif = MultiSpikeLeaky(settings.max_spikes)
        else:
            self.lif = GradedLeaky()

    def release(self):
        """snnTorch keeps every neuron it constructs in the class-level list
        ``SpikingNeuron.instances`` (for ``init_hidden``); drop ours and its last membrane so that
        repeated simulations do not accumulate neurons and their state."""
        instances = snntorch.SpikingNeuron.instances
        for i in range(len(instances) - 1, -1, -1):
            if instances[i] is self.lif:
                del instances[i]
        self.lif.mem = torch.zeros(0)
        self.lif.__dict__.pop("_fired", None)

    def steps(self, current: torch.Tensor, margins: bool = False):
        mem = torch.full_like(current, self.v_init)
        counts = torch.zeros_like(current)
        margin = torch.full_like(current, math.inf) if margins else None
        for _ in range(self.timesteps):
            spk, mem = self.lif(current, mem)  # mem: the potential after integration, before reset
            counts += spk
            if margins:
                margin = torch.minimum(margin, self.distance(mem))
        if hasattr(self.lif, "_fired"):
            del self.lif._fired  # holds the last step's tensors
        return counts, margin


# -- the run ------------------------------------------------------------------------------------
def simulate(net, ids, settings: SimSettings, device="cpu", record=(), plasticity=None, dtype=torch.float64,
             progress: bool = False, chunk: int = 64, event_driven: bool = True,
             stepwise: bool = False) -> SimulationResult:
    """Runs the network on ids (B, T) with snnTorch neurons (``torch_layers.simulate_with``). chunk:
    tokens whose populations are stepped together (1 = strictly token by token; any value gives the
    same counts). v_init < 1 (the network guarantees it) keeps snnTorch's delayed reset exact."""
    return simulate_with(IFPopulation, net, ids, settings, name=NAME, library=f"snntorch {snntorch.__version__}",
                         device=device, record=record, plasticity=plasticity, dtype=dtype, progress=progress,
                         chunk=chunk, event_driven=event_driven, stepwise=stepwise)
