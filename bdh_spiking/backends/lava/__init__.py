"""Intel Lava backend: the spiking network as a graph of Lava Processes, run on Lava's CPU
simulator with its floating-point ProcessModels (``Loihi2SimCfg(select_tag='floating_pt')``).

Mode 'fixed-point' runs the same graph with the integer ProcessModels of the same Processes
(``Loihi2SimCfg(select_tag='fixed_pt')``, Lava's bit-accurate Dense), equal counts to the
reference's fixed-point executor (backends/fixed_point.py).

Modules: ``processes`` (what each Process holds), ``models`` (how it computes: one shared model per
Process, its floating- and fixed-point subclasses), ``spec`` (the graph's description, the schedule
and what each mode lowers it to), ``build`` (Processes from a spec), ``graph`` (run, read back,
save, rebuild). Process graph (docs/backends.md, section "Lava backend"):

    RingBuffer source --> Dense(embed) --> BDHLayer 0 --> ... --> BDHLayer L-1 --> Dense(lm_head) --> LogitSink
       (Lava's)           (Lava's)          (ours)                  (ours)          (Lava's)          (ours)

``lava_graph='explicit'`` builds instead one process per population and per projection (explicit_*
modules; docs/backends.md, "Explicit graph"): Lava's Dense for the static projections, processes of
ours for the IF populations, plastic synapses, LayerNorms, gates and residuals.

Public: ``simulate`` (the backend entry point, ``api``), ``save_process_graph`` / ``load_process_graph``
and ``simulate_saved`` (rebuild the graph from a directory, without the checkpoint).
"""

from __future__ import annotations

import sys

from ...errors import BackendUnavailable

if sys.version_info[:2] != (3, 10):
    raise BackendUnavailable(
        f"the Lava backend needs lava-nc 0.10, which requires Python 3.10 (this is Python "
        f"{sys.version_info[0]}.{sys.version_info[1]}): use a Python 3.10 environment and "
        "pip install 'bdh-spiking[lava]'")

def _prepare_multiprocessing() -> None:
    """Lava's runtime calls multiprocessing.set_start_method('fork') when it is first imported, which
    raises once anything has fixed the start method (e.g. tqdm's lock fixes the default, 'fork' on
    Linux). The same 'fork' is what Lava sets, so the fixed default is released for it."""
    import multiprocessing as mp

    if "lava.magma.runtime.message_infrastructure.multiprocessing" in sys.modules:
        return
    current = mp.get_start_method(allow_none=True)
    if current == "fork":
        mp.set_start_method(None, force=True)
    elif current is not None:
        raise BackendUnavailable(f"the Lava backend needs the multiprocessing start method 'fork', but it was set "
                                 f"to {current!r} before lava was imported")


try:
    _prepare_multiprocessing()
    import lava.magma.core.process.process  # noqa: F401
except ImportError as exc:  # the package is there (the registry checked) but does not import
    raise BackendUnavailable(f"the Lava backend could not import lava ({exc}): "
                             "pip install 'bdh-spiking[lava]' (lava-nc 0.10, Python 3.10)") from None

from .api import (GRAPH_FILE, LAVA_GRAPHS, load_process_graph, run_spec, save_process_graph, simulate,  # noqa: E402
                  simulate_saved, spec_of)
from .spec import NETWORK_FILE, make_spec  # noqa: E402

__all__ = ["LAVA_GRAPHS", "simulate", "save_process_graph", "load_process_graph", "simulate_saved", "make_spec",
           "run_spec", "spec_of",
           "GRAPH_FILE", "NETWORK_FILE"]
