"""Energy per token of the spiking network on neuromorphic hardware, next to the dense model's.

``estimate`` runs the converted network on each backend, counts from the actual spikes every
event that costs energy (``counts``: the fan-out rules are ``semantics.events``'; docs/energy.md),
prices the counts with each hardware profile (``pricing``, ``bdh_spiking.profiles``) and adds the
dense model's cost on conventional hardware (FP32 parallel and recurrent, INT8, activation-sparse)::

    from bdh_spiking.energy import estimate, parse_profiles
    rep = estimate(model, net, ids, backends=["reference"], profiles=parse_profiles("loihi,gpu"))
    print(rep.table()); rep.to_json("energy.json"); rep.plot("plots/")

Principles: a profile entry that is absent is *unavailable*, never zero; every assumption made to
price a count is written into the row's ``notes``; and every neuromorphic figure is shown next to
published break-even points so the comparison is not one-sided.
"""

from .counts import (COUNT_KEYS, compare_event_counts, dense_activity, dense_elementwise, dense_macs,
                     layernorm_ops, spiking_counts, steps_per_token)
from .estimation import estimate
from .pricing import (BREAK_EVEN, DENSE_PROFILES, DENSE_VARIANTS, FALLBACK_PROFILE, break_even, parse_profiles,
                      price_dense, price_spiking)
from .report import EnergyReport

__all__ = [
    "BREAK_EVEN", "parse_profiles", "spiking_counts", "dense_macs", "dense_elementwise", "dense_activity",
    "price_spiking", "price_dense", "compare_event_counts", "estimate", "EnergyReport", "COUNT_KEYS",
    "DENSE_PROFILES", "DENSE_VARIANTS", "FALLBACK_PROFILE", "break_even", "layernorm_ops", "steps_per_token",
]
