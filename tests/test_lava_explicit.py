"""The explicit Lava graph (lava_graph='explicit': one process per population and per projection)
against the reference executor, in both modes. Each run forks one OS process per Lava Process
(about 23 for two layers): tiny models, few tokens; the full grid is marked slow."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

pytest.importorskip("lava", reason="the Lava backend needs lava-nc (Python 3.10)")

import bdh_spiking as bs  # noqa: E402
from bdh_spiking.errors import ConfigError  # noqa: E402
from bdh_spiking.report import spike_differences  # noqa: E402
from bdh_spiking.semantics import SimSettings  # noqa: E402

lava_backend = pytest.importorskip("bdh_spiking.backends.lava")
REC = ("counts", "margins", "decoded", "state")
PLAST = {"reset_every": 3, "decay_tau_tokens": 2.0}
pytestmark = pytest.mark.filterwarnings("ignore:mode .fixed-point. on a float network")


def tiny_net(model_factory, gating, n_layer=2):
    rng = random.Random(n_layer)
    model = model_factory(seed=n_layer, n_layer=n_layer, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4)
    return bs.convert(model, gating=gating, calibration=bytes(rng.getrandbits(8) for _ in range(1024)))


def run_both(net, coding, T, mode, n=5, **extra):
    ids = torch.randint(0, 256, (2, n), generator=torch.Generator().manual_seed(3))
    kw = dict(timesteps=T, coding=coding, max_spikes=3, record=REC, mode=mode, plasticity=PLAST)
    ref = bs.simulate(net, ids, backend="reference", **kw)
    out = bs.simulate(net, ids, backend="lava", lava_graph="explicit", **kw, **extra)
    return ids, ref, out


def check(ref, out, exact: bool):
    diffs = spike_differences(ref, out)
    assert diffs["non_tie_differences"] == 0, diffs
    if exact:  # fixed point: every value equal, no tie exceptions
        assert diffs["differing_spikes_vs_reference"] == 0 and diffs["near_threshold_ties"] == 0
        for key in ref.records:
            assert torch.equal(out.records[key], ref.records[key]), key
        assert torch.equal(out.logits, ref.logits)
        assert out.events["saturations"] == ref.events["saturations"]
    else:
        assert float((out.logits - ref.logits).abs().max()) <= 1e-9 * float(ref.logits.abs().max())
    for key in ref.stats:
        assert torch.equal(out.stats[key], ref.stats[key]), key
    assert float(out.records["x_counts"].sum()) > 0 and float(out.records["y_counts"].sum()) > 0
    assert out.settings["lava_graph"] == "explicit"


def test_float_explicit_graph_matches_reference_and_saved_graph_rebuilds(model_factory, tmp_path):
    net = tiny_net(model_factory, "gain")
    T, n = 2, 5
    ids, ref, out = run_both(net, "rate", T, "discrete", n=n, save_lava_dir=tmp_path / "g")
    check(ref, out, exact=False)
    assert out.settings["lava_timesteps"] == 3 + 2 * (2 * T + 1) + (n - 1) * T  # period T per token
    graph = json.loads((tmp_path / "g" / "lava_graph.json").read_text())
    assert graph["graph"] == "explicit" and set(graph["dims"]) >= {"L", "H", "D", "N", "V", "HN"}
    classes = {p["name"]: p["class"] for p in graph["processes"]}
    by_name = {p["name"]: p for p in graph["processes"]}
    for layer in (0, 1):  # every static projection of every layer is Lava's own Dense or Sparse
        for proj in ("E", "dec"):
            assert classes[f"{proj}{layer}"] == "lava.proc.dense.process.Dense"
        assert classes[f"Ev{layer}"] == "lava.proc.sparse.process.Sparse"  # block-diagonal over heads
        d = net.dims
        assert by_name[f"Ev{layer}"]["synapses"] == d.H * d.N * d.D and by_name[f"Ev{layer}"]["fan_in"] == d.D
        assert classes[f"x{layer}"].endswith("explicit_processes.IFPopulation")
    assert classes["embed"] == classes["lm_head"] == "lava.proc.dense.process.Dense"
    for cls, models in graph["classes"]["ours"].items():  # ours: both ProcessModels exist
        assert len(models) == 2
    assert all(c.startswith("lava.proc.") for c in graph["classes"]["lava"])
    again = lava_backend.simulate_saved(tmp_path / "g", ids, record=("counts",))
    for key in ("x_counts", "y_counts"):
        assert torch.equal(again.records[key], out.records[key])


def test_fixed_point_explicit_graph_equals_reference_graded_t1(model_factory):
    net = tiny_net(model_factory, "product", n_layer=1)
    _, ref, out = run_both(net, "graded", 1, "fixed-point", n=4)
    check(ref, out, exact=True)


@pytest.mark.slow
@pytest.mark.parametrize("coding,gating,T,mode", [(c, g, T, m) for c in ("graded", "rate", "multispike")
                                                  for g in ("gain", "product") for T in (1, 3)
                                                  for m in ("discrete", "fixed-point")])
def test_explicit_grid(model_factory, coding, gating, T, mode):
    net = tiny_net(model_factory, gating)
    _, ref, out = run_both(net, coding, T, mode, n=4)
    check(ref, out, exact=mode == "fixed-point")


@pytest.mark.slow  # converting an official-size model costs ~100 s on 2 shared cores, building ~1 GB of weights
def test_official_size_explicit_graph_builds(tmp_path):
    """The explicit graph of an official-size network: its description, then its Lava processes,
    connected and with their weights (built, not run)."""
    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse

    from bdh_spiking.backends.lava.explicit_build import build_explicit
    from bdh_spiking.backends.lava.explicit_spec import make_explicit_spec
    from bdh_spiking.model import BDH, BDHConfig

    net = bs.convert(BDH(BDHConfig()), gating="gain", calibration=bytes(range(128)))
    spec = make_explicit_spec(net, SimSettings(timesteps=4, coding="rate"))
    d = net.dims
    assert (d.L, d.D, d.H, d.N) == (6, 256, 4, 8192)
    assert len(spec["processes"]) == 3 + 9 * d.L + 2
    by_name = {p["name"]: p for p in spec["processes"]}
    assert by_name["E0"]["synapses"] == d.H * d.N * d.D and by_name["E0"]["fan_in"] == d.D
    assert by_name["Ev0"]["synapses"] == d.H * d.N * d.D and by_name["Ev0"]["fan_in"] == d.D
    procs = build_explicit(net, spec, np.zeros((1, 2), dtype=np.int64), str(tmp_path))
    assert set(procs) == set(by_name)
    assert isinstance(procs["E5"], Dense) and procs["E5"].weights.shape == (d.H * d.N, d.D)
    ev = procs["Ev5"]
    assert isinstance(ev, Sparse) and ev.weights.shape == (d.H * d.N, d.H * d.D)
    assert ev.weights.init.nnz == d.H * d.N * d.D  # only the heads' blocks are stored
    assert procs["dec5"].weights.shape == (d.D, d.H * d.N)
    # every connection of the description exists between the built processes
    for c in spec["connections"]:
        (sp, sport), (dp, dport) = c["from"].split("."), c["to"].split(".")
        assert getattr(procs[dp], dport) in getattr(procs[sp], sport).out_connections


def test_bad_lava_graph_is_refused_before_any_work(model_factory):
    net = tiny_net(model_factory, "gain", n_layer=1)
    with pytest.raises(ConfigError, match="lava_graph"):
        bs.simulate(net, [1, 2], backend="lava", lava_graph="blob")


def test_hardware_fit_reads_the_explicit_graph(model_factory):
    from bdh_spiking.backends.lava.explicit_spec import make_explicit_spec
    from bdh_spiking.hardware_fit import fit_lava_graph

    net = tiny_net(model_factory, "gain")
    spec = make_explicit_spec(net, SimSettings(timesteps=2, coding="rate"))
    rep = fit_lava_graph(spec, "loihi2")
    rows = {r["name"]: r for r in rep["processes"]}
    d = net.dims
    assert rows["x0"]["neurons"] == d.H * d.N and rows["x0"]["cores"] >= 1
    assert rows["E0"]["synapses"] == d.H * d.N * d.D and rows["E0"]["fan_in"] == d.D
    assert rows["plastic1"]["synapses"] == d.H * d.D * d.N
    assert rep["cores"] == sum(r["cores"] for r in rep["processes"]) and rep["chips"] >= 1
    ours = {p["name"] for p in spec["processes"] if p["origin"] != "lava"}
    assert set(rep["no_loihi2_model"]) == ours and "x0" in ours and "E0" not in ours
    with pytest.raises(ValueError):
        fit_lava_graph(lava_backend.make_spec(net, SimSettings()), "loihi2")
    from bdh_spiking.hardware_fit import graph_table

    text = graph_table([rep])  # what bdh-convert --hardware-fit prints for --lava-graph explicit
    assert f"{len(rep['processes'])} processes" in text and f"{rep['cores']} cores" in text and "plastic0" in text


@pytest.mark.slow  # six Lava processes for a few steps, twice
def test_learning_dense_probe():
    """docs/backends.md's finding: Lava's LearningDense with a three-factor rule carries the
    fixed-frame plastic rule (signed payloads, decay and reset) in floating point, not bit-accurately."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from lava_learning_dense_probe import reference, run_lava

    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 6)) * (rng.random((5, 6)) < 0.6)
    x = rng.normal(size=(5, 4))
    lam = np.array([0.9, 0.9, 0.0, 0.9, 0.9])
    want_reads, want_S = reference(q, x, lam)
    reads, S = run_lava(q, x, lam, "floating_pt", 1e12)
    assert np.abs(reads - want_reads).max() <= 1e-9 * np.abs(want_reads).max()
    assert np.abs(S - want_S).max() <= 1e-9 * np.abs(want_S).max()
    qi, xi = np.round(16 * q), np.round(16 * x)
    want_reads, want_S = reference(qi, xi, (lam > 0).astype(float))
    reads, S = run_lava(qi, xi, (lam > 0).astype(float), "fixed_pt", 2 ** 16 - 1)
    assert not np.allclose(S, want_S)  # the bit-accurate model cannot hold signed payloads
