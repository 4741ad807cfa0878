"""Every rule of the spiking network, once. docs/spiking-semantics.md is the specification; each
module below is the executable form of one part of it, and every executor calls these:

- ``settings``: codings, modes, timesteps, chunk checks (``SimSettings``);
- ``weights``: thresholds folded into the weights (``fold_weights``);
- ``neurons``: the IF neuron's start (``initial_membrane``), step and a population's T steps;
- ``decoding``: counts -> activity, and what counts as a spike event;
- ``oscillator``: the x-neuron pair phases and the rotated payload;
- ``graded``: LayerNorm, gating, the residual decoder;
- ``plasticity``: the Hebbian rule, its switches (``Plasticity.at(t)``), stepwise and chunked forms;
- ``events``: event statistics and the fan-out of each event (read by the report and energy model);
- ``fixed_point``: the integer semantics of mode 'fixed-point'; ``quantize``: the quantizer;
- ``activation``: replacing the dense model's activations (spiking-aware / constraint training).
"""

from .decoding import decode, spike_events
from .events import EVENT_KEYS, FanOut, accumulate_stats, event_counts, new_stats, stats_to_cpu
from .graded import GATINGS, gate_current, gate_output, layer_norm, residual_from_sum, residual_update
from .neurons import (boundary_distance, firing_boundary, initial_membrane, neuron_step, neuron_step_,
                      run_population)
from .oscillator import oscillator_cos_sin, oscillator_payload, pair_partner
from .plasticity import (Plasticity, TokenRule, chunk_bounds, noise_generator, perturb_step, plastic_chunk,
                         plastic_step)
from .settings import CODINGS, GRADED_RTOL, MAX_TIMESTEPS, MODES, TIE_EPS, SimSettings, check_chunk, is_int
from .weights import fold_weights

__all__ = [
    "CODINGS", "MODES", "TIE_EPS", "GRADED_RTOL", "MAX_TIMESTEPS", "GATINGS", "SimSettings", "check_chunk", "is_int",
    "Plasticity", "TokenRule", "chunk_bounds", "noise_generator", "perturb_step", "plastic_chunk", "plastic_step",
    "fold_weights", "initial_membrane",
    "firing_boundary", "boundary_distance", "neuron_step", "neuron_step_", "run_population", "decode",
    "spike_events", "oscillator_cos_sin", "oscillator_payload", "pair_partner", "layer_norm", "gate_current",
    "gate_output", "residual_update", "residual_from_sum", "EVENT_KEYS", "FanOut", "accumulate_stats", "event_counts", "new_stats",
    "stats_to_cpu",
]
