"""The snnTorch and Norse backends against the reference executor.

Spike counts per neuron per token must equal the reference's (near-threshold ties, judged by
the reference's margins, excepted), logits must equal the reference's within 1e-9 relative when
there is no tie, the plastic state within 1e-12 relative, and the event statistics exactly.
Tiny models and short sequences: the machine has two busy cores.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.backends import load_backend
from bdh_spiking.backends.base import EVENT_KEYS, event_counts
from bdh_spiking.errors import BackendUnavailable, ConfigError
from bdh_spiking.report import spike_differences
from bdh_spiking.semantics import Plasticity, SimSettings, run_population

from conftest import make_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning)  # norse's torch.jit.script at import

BACKENDS = ("snntorch", "norse")
CODINGS = (("graded", 4), ("rate", 4), ("multispike", 2), ("multispike", 3))
TIMESTEPS = (1, 3, 8)
DATA = Path(bs.__file__).parent / "data"

pytest.importorskip("snntorch")
pytest.importorskip("norse")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-300))


# -- small random models, their networks and reference runs (built once) ---------------------------
MODELS = {  # seed -> model config overrides
    0: dict(n_embd=16, mlp_internal_dim_multiplier=8),
    1: dict(n_embd=32, mlp_internal_dim_multiplier=4),
}
_NETS, _REFS = {}, {}


def _net(seed: int, gating: str):
    key = (seed, gating)
    if key not in _NETS:
        gen = torch.Generator().manual_seed(100 + seed)
        calibration = bytes(torch.randint(0, 256, (1024 + 512 * seed,), generator=gen).tolist())
        model = make_model(seed=seed, std=0.3, **MODELS[seed])
        net = bs.convert(model, gating=gating, calibration=calibration)
        ids = torch.randint(0, 256, (2, 24), generator=gen)
        _NETS[key] = (net, ids)
    return _NETS[key]


def _reference(seed, gating, coding, max_spikes, T, plasticity=None, stepwise=False):
    key = (seed, gating, coding, max_spikes, T, str(plasticity), stepwise)
    if key not in _REFS:
        net, ids = _net(seed, gating)
        _REFS[key] = bs.simulate(net, ids, backend="reference", timesteps=T, coding=coding, max_spikes=max_spikes,
                                 record=("counts", "margins", "decoded", "state"), plasticity=plasticity,
                                 stepwise=stepwise)
    return _REFS[key]


def _assert_matches(ref, out, net, where: str):
    """Counts identical (ties excepted); with no tie, logits/decoded/state/stats equal the reference's."""
    diffs = spike_differences(ref, out)
    assert diffs["non_tie_differences"] == 0, (where, diffs)
    assert out.logits.shape == ref.logits.shape
    assert torch.isfinite(out.logits).all()
    if diffs["differing_spikes_vs_reference"] == 0:
        assert _rel(out.logits, ref.logits) <= 1e-9, (where, _rel(out.logits, ref.logits))
        if "a_hat" in out.records:
            for key in ("a_hat", "g_hat"):
                assert _rel(out.records[key], ref.records[key]) <= 1e-9, (where, key)
        if "state" in out.records:
            assert _rel(out.records["state"], ref.records["state"]) <= 1e-12, (where, "state")
        for key in EVENT_KEYS:
            assert torch.equal(out.stats[key], ref.stats[key]), (where, key)
        assert out.events == ref.events, where
    return diffs


# -- the neurons alone -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("coding,max_spikes", CODINGS)
def test_population_matches_semantics(backend, coding, max_spikes):
    """The library neuron, configured as in the backend, gives the semantics' counts: on a grid of
    exact binary currents (membranes land exactly on thresholds: v = 1 must not fire) and on
    random currents, including currents > 1 and negative ones."""
    module = load_backend(backend)
    gen = torch.Generator().manual_seed(3)
    grid = torch.arange(-16, 49, dtype=torch.float64) / 16  # -1 .. 3 in steps of 1/16
    rand = torch.rand(4000, generator=gen, dtype=torch.float64) * 4.0 - 1.0
    for T in (1, 3, 8):
        settings = SimSettings(timesteps=T, coding=coding, max_spikes=max_spikes).validate()
        for v_init in (0.0, 0.5, 0.9):
            pop = module.IFPopulation(settings, v_init)
            for current in (grid, rand):
                counts, margin = pop(current, margins=True)
                ref_counts, ref_margin = run_population(current, settings, v_init)
                assert torch.equal(counts, ref_counts), (backend, coding, T, v_init)
                assert torch.allclose(margin, ref_margin, rtol=0, atol=1e-12)
                assert float(counts.sum()) > 0
        if coding == "rate":  # the exact ties of the grid: v0 + J = 1 never fires at step 1
            c1, _ = module.IFPopulation(SimSettings(timesteps=1, coding="rate").validate(), 0.5)(
                torch.tensor([0.5, 0.5 + 2 ** -40], dtype=torch.float64))
            assert c1.tolist() == [0.0, 1.0]
    if coding == "multispike":  # a strong current saturates at K spikes per step
        big, _ = module.IFPopulation(settings, 0.5)(torch.tensor([10.0], dtype=torch.float64))
        assert float(big) == max_spikes * 8


def test_snntorch_neuron_is_snntorch_leaky():
    """The rate neuron is snnTorch's own Leaky, configured to the semantics."""
    import snntorch

    module = load_backend("snntorch")
    lif = module.IFPopulation(SimSettings(timesteps=2, coding="rate").validate(), 0.5).lif
    assert type(lif) is snntorch.Leaky
    assert float(lif.beta) == 1.0 and float(lif.threshold) == 1.0
    assert lif.reset_mechanism == "subtract" and not lif.init_hidden
    assert isinstance(module.IFPopulation(SimSettings(coding="multispike").validate(), 0.5).lif, snntorch.Leaky)
    assert isinstance(module.IFPopulation(SimSettings(coding="graded").validate(), 0.5).lif, snntorch.Leaky)


def test_snntorch_neurons_are_released():
    """snnTorch registers every neuron in SpikingNeuron.instances; repeated runs must not pile up."""
    import snntorch

    net, ids = _net(0, "gain")
    bs.simulate(net, ids[:, :4], backend="snntorch", timesteps=2)
    before = len(snntorch.SpikingNeuron.instances)
    for coding in ("rate", "multispike", "graded"):
        bs.simulate(net, ids[:, :4], backend="snntorch", timesteps=2, coding=coding)
    assert len(snntorch.SpikingNeuron.instances) == before


def test_norse_neuron_uses_norse_state_and_threshold():
    from norse.torch.functional.iaf import IAFFeedForwardState
    from norse.torch.module.snn import SNNCell

    module = load_backend("norse")
    cell = module.IFPopulation(SimSettings(timesteps=2, coding="rate").validate(), 0.5).cell
    assert isinstance(cell, SNNCell)
    z, state = cell(torch.tensor([0.6, 0.4], dtype=torch.float64),
                    IAFFeedForwardState(v=torch.tensor([0.5, 0.5], dtype=torch.float64)))
    assert isinstance(state, IAFFeedForwardState)
    assert z.tolist() == [1.0, 0.0]
    assert torch.equal(state.v, torch.tensor([0.5 + 0.6 - 1.0, 0.9], dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_driven_plastic_synapse_equals_dense(backend):
    """Reading/writing only the q != 0 columns equals the dense fixed-frame update."""
    module = load_backend(backend)
    gen = torch.Generator().manual_seed(5)
    B, H, D, N = 3, 2, 8, 16
    syn = module.HebbianSynapse(B, H, D, N, "cpu", torch.float64)
    dense = torch.zeros(B, H, D, N, dtype=torch.float64)
    for step in range(6):
        q = torch.randn(B, H, N, generator=gen, dtype=torch.float64)
        q[torch.rand(B, H, N, generator=gen) < 0.7] = 0.0
        if step == 2:
            q[1] = 0.0  # a silent sequence
        if step == 4:
            q.zero_()  # nothing active at all
        x = torch.randn(B, D, generator=gen, dtype=torch.float64)
        u = syn.read(q)
        u_dense = torch.einsum("bhdn,bhn->bhd", dense, q)
        assert torch.allclose(u, u_dense, rtol=1e-13, atol=1e-13)
        syn.write(x, q)
        dense += x[:, None, :, None] * q[:, :, None, :]
        assert torch.equal(syn.state(), dense)  # the write adds exactly the same products
    assert (dense != 0).any()


# -- whole networks against the reference ----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gating", ("gain", "product"))
@pytest.mark.parametrize("seed", sorted(MODELS))
def test_counts_match_reference(backend, gating, seed):
    net, ids = _net(seed, gating)
    ties = 0
    for coding, max_spikes in CODINGS:
        for T in TIMESTEPS:
            ref = _reference(seed, gating, coding, max_spikes, T)
            chunk = {1: 1, 3: 7, 8: 64}[T]  # token by token, chunks that split the sequence, one chunk
            stepwise = T == 3  # the token-by-token plastic synapses (the oracle) once per coding
            out = bs.simulate(net, ids, backend=backend, timesteps=T, coding=coding, max_spikes=max_spikes,
                              record=("counts", "decoded", "state"), chunk=chunk, stepwise=stepwise)
            assert out.settings["chunk"] == chunk
            assert out.settings["plastic"] == ("stepwise" if stepwise else "chunked")
            assert out.backend == backend
            diffs = _assert_matches(ref, out, net, f"{backend} {gating} seed={seed} {coding}/{max_spikes} T={T}")
            ties += diffs["near_threshold_ties"]
            assert out.records["x_counts"].shape == (*ids.shape, *[net.dims.as_dict()[k] for k in ("L", "H", "N")])
            assert out.records["x_counts"].dtype == torch.float64
            if coding != "graded":
                assert (out.records["x_counts"] == out.records["x_counts"].round()).all()
                assert float(out.records["y_counts"].sum()) > 0  # the comparison is not vacuous
    assert ties <= 2  # ties are rare events, never the rule


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", [{"freeze_after": 5}, {"reset_every": 7}, {"decay_tau_tokens": 4.0},
                                  {"reset_every": 9, "decay_tau_tokens": 3.0, "freeze_after": 20},
                                  {"freeze_after": 0}])
def test_plasticity_switches_match_reference(backend, spec):
    net, ids = _net(0, "gain")
    plast = Plasticity.from_dict(spec)
    intact = _reference(0, "gain", "rate", 4, 3)
    # chunks of 5 put freeze_after=5 on a boundary, 4 puts freeze_after=5/20 inside a chunk, and
    # reset_every=7/9 cut chunks (chunk_bounds); the stepwise form is the token-by-token oracle
    for ref_stepwise, chunk, stepwise in ((True, 5, False), (False, 4, False), (False, 64, False), (True, 5, True)):
        ref = _reference(0, "gain", "rate", 4, 3, plasticity=plast, stepwise=ref_stepwise)
        out = bs.simulate(net, ids, backend=backend, timesteps=3, coding="rate", plasticity=spec,
                          record=("counts", "state"), chunk=chunk, stepwise=stepwise)
        diffs = _assert_matches(ref, out, net, f"{backend} {spec} chunk={chunk} stepwise={stepwise}")
        assert diffs["differing_spikes_vs_reference"] == 0
    # the switch changes the run (the comparison is not vacuous)
    assert not torch.allclose(out.records["state"], intact.records["state"])
    if spec == {"freeze_after": 0}:
        assert float(out.records["state"].abs().max()) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_model(backend):
    """The shipped default model, calibrated on the first 1 KB of calibration.txt, on held-out text."""
    model = bs.load_model()
    net = bs.convert(model, calibration=(DATA / "calibration.txt").read_bytes()[:1024])
    ids = torch.tensor(list((DATA / "heldout.txt").read_bytes()[:64]), dtype=torch.int64).view(2, 32)
    ref = bs.simulate(net, ids, backend="reference", timesteps=4, coding="rate", record=("counts", "margins", "state"))
    out = bs.simulate(net, ids, backend=backend, timesteps=4, coding="rate", record=("counts", "state"))
    diffs = _assert_matches(ref, out, net, f"{backend} default model")
    assert diffs["near_threshold_ties"] <= 2
    assert out.events["spikes"] > 0
    assert out.settings["coding"] == "rate" and out.settings["timesteps"] == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_result_contract(backend):
    net, ids = _net(0, "product")
    out = bs.simulate(net, ids[0], backend=backend, timesteps=2, coding="multispike", max_spikes=2)
    assert out.logits.shape == (1, ids.shape[1], 256) and out.records == {}
    for key in EVENT_KEYS:
        assert out.stats[key].shape == (1, ids.shape[1]) and out.stats[key].dtype == torch.float64
    assert out.events == event_counts(out.stats, net, SimSettings(timesteps=2, coding="multispike", max_spikes=2))
    assert out.settings["gating"] == "product" and out.settings["max_spikes"] == 2
    assert out.settings["device"] == "cpu" and out.settings["dtype"] == "float64"
    assert out.wall_s > 0 and out.tokens == ids.shape[1]
    # a sequence alone gives what it gives inside a batch
    batch = bs.simulate(net, ids, backend=backend, timesteps=2, coding="multispike", max_spikes=2)
    assert _rel(out.logits[0], batch.logits[0]) <= 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend):
    net, ids = _net(0, "gain")
    with pytest.raises(ConfigError, match="cannot record"):
        bs.simulate(net, ids, backend=backend, record=("counts", "voltages"))
    with pytest.raises(ConfigError, match="discrete"):
        bs.simulate(net, ids, backend=backend, mode="fixed-point")
    with pytest.raises(ConfigError, match="options"):
        bs.simulate(net, ids, backend=backend, save_lava_dir="x")
    with pytest.raises(ConfigError, match="stepwise must be True or False"):
        bs.simulate(net, ids, backend=backend, stepwise=1)
    with pytest.raises(ConfigError, match="chunk"):
        bs.simulate(net, ids, backend=backend, chunk=0)


@pytest.mark.parametrize("backend,package", [("snntorch", "snntorch"), ("norse", "norse")])
def test_missing_library_is_backend_unavailable(backend, package, monkeypatch):
    """The module imports its library at top level, so a missing library surfaces through the
    registry as BackendUnavailable naming the pip extra (even past the registry's find_spec check)."""
    module_name = f"bdh_spiking.backends.{backend}_backend"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == package else real_find_spec(name, *a))
    monkeypatch.setitem(sys.modules, package, None)  # import fails with ModuleNotFoundError(package)
    monkeypatch.delitem(sys.modules, module_name, raising=False)
    with pytest.raises(BackendUnavailable, match=rf"pip install 'bdh-spiking\[{package}\]'"):
        load_backend(backend)
    monkeypatch.undo()
    assert load_backend(backend).NAME == backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_plastic_update_option_gives_the_same_network(backend):
    """event_driven=False (every synapse read and written, the benchmark baseline) changes cost, not results."""
    net, ids = _net(0, "product")
    ref = _reference(0, "product", "multispike", 3, 3)
    out = bs.simulate(net, ids, backend=backend, timesteps=3, coding="multispike", max_spikes=3,
                      record=("counts", "decoded", "state"), event_driven=False)
    _assert_matches(ref, out, net, f"{backend} dense plastic update")


def test_default_dtype_is_per_device():
    """dtype=None (the default): float64 on the CPU, float32 on CUDA for snnTorch and Norse (the
    contract says it; no GPU here, so CUDA is checked on the contract)."""
    from bdh_spiking.backends.registry import contract

    net, ids = _net(0, "gain")
    out = bs.simulate(net, ids[:, :3], backend="snntorch", timesteps=2)
    assert out.settings["dtype"] == "float64" and out.logits.dtype == torch.float64
    assert bs.simulate(net, ids[:, :3], backend="norse", timesteps=2, dtype=torch.float32).settings["dtype"] == "float32"
    for name in BACKENDS:
        assert contract(name).default_dtype(torch.device("cuda")) == torch.float32
        assert contract(name).default_dtype(torch.device("cpu")) == torch.float64
    assert contract("reference").default_dtype(torch.device("cuda")) == torch.float64
