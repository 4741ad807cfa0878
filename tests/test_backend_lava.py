"""The Lava backend (bdh_spiking.backends.lava) against the reference executor.

Spike counts must equal the reference's exactly except at near-threshold ties (report.spike_differences
judges: non_tie_differences == 0), logits within 1e-9 relative, event statistics identical.
Each Lava run forks one OS process per Lava Process: the models here are tiny.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lava", reason="the Lava backend needs lava-nc (Python 3.10)")

import bdh_spiking as bs  # noqa: E402
from bdh_spiking.errors import ConfigError  # noqa: E402
from bdh_spiking.report import spike_differences  # noqa: E402
from bdh_spiking.semantics import Plasticity, SimSettings  # noqa: E402

lava_backend = pytest.importorskip("bdh_spiking.backends.lava")

DATA = Path(bs.__file__).parent / "data"
REC = ("counts", "margins", "decoded")


def calibration_bytes(seed: int, n: int = 1024) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


_NETS = {}


def small_net(model_factory, gating: str, n_layer: int):
    key = (gating, n_layer)
    if key not in _NETS:
        model = model_factory(seed=n_layer, n_layer=n_layer, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4)
        _NETS[key] = bs.convert(model, gating=gating, calibration=calibration_bytes(n_layer))
    return _NETS[key]


def assert_matches(ref, out, net, atol_rel=1e-9):
    diffs = spike_differences(ref, out)
    assert diffs["non_tie_differences"] == 0, diffs
    for pop in ("x", "y"):
        assert out.records[f"{pop}_counts"].shape == ref.records[f"{pop}_counts"].shape
        assert out.records[f"{pop}_counts"].dtype == torch.float64
    assert out.logits.shape == ref.logits.shape and out.logits.dtype == torch.float64
    scale = float(ref.logits.abs().max())
    assert scale > 0
    assert float((out.logits - ref.logits).abs().max()) <= atol_rel * scale
    assert set(out.stats) == set(ref.stats)
    for key in ref.stats:
        assert out.stats[key].shape == ref.stats[key].shape and out.stats[key].dtype == torch.float64
        assert torch.equal(out.stats[key], ref.stats[key]), key
    assert out.events == ref.events
    assert out.backend == "lava"
    return diffs


CASES = [(coding, gating, T) for coding in ("graded", "rate", "multispike") for gating in ("gain", "product")
         for T in (1, 4)]


@pytest.mark.parametrize("coding,gating,T", CASES)
def test_counts_match_reference(model_factory, coding, gating, T):
    n_layer = 1 + (T == 4)  # both depths across the grid
    net = small_net(model_factory, gating, n_layer)
    gen = torch.Generator().manual_seed(hash((coding, gating, T)) % 1000)
    B, n = (2, 9) if T == 1 else (1, 12)
    ids = torch.randint(0, 256, (B, n), generator=gen)
    kw = dict(timesteps=T, coding=coding, max_spikes=3, record=REC)
    ref = bs.simulate(net, ids, backend="reference", **kw)
    out = bs.simulate(net, ids, backend="lava", **kw)
    assert_matches(ref, out, net)
    # the spiking network really spikes (the comparison is not trivially between zeros)
    assert float(out.records["x_counts"].sum()) > 0 and float(out.records["y_counts"].sum()) > 0
    # decoded activity: semantics.decode of the same counts
    for key in ("a_hat", "g_hat"):
        torch.testing.assert_close(out.records[key], ref.records[key], rtol=1e-9, atol=1e-12)
    for key in ("x_margins", "y_margins"):  # distances to the firing boundary, as the reference measures them
        torch.testing.assert_close(out.records[key], ref.records[key], rtol=0, atol=1e-9)
    assert out.settings["lava_timesteps"] == 3 + (n - 1) * 2 * T + n_layer * (2 * T - 1)
    assert out.settings["lava_timesteps_per_token"] == 2 * T


def test_plasticity_switches_and_state_match_stepwise_reference(model_factory):
    net = small_net(model_factory, "gain", 2)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(5))
    plast = Plasticity(freeze_after=14, reset_every=6, decay_tau_tokens=3.0)
    settings = SimSettings(timesteps=4, coding="rate")
    rec = ("counts", "margins", "state")
    ref = bs.backends.load_backend("reference").simulate(net, ids, settings, plasticity=plast, record=rec,
                                                         stepwise=True)
    out = bs.simulate(net, ids, backend="lava", timesteps=4, coding="rate", record=rec,
                      plasticity={"freeze_after": 14, "reset_every": 6, "decay_tau_tokens": 3.0})
    assert_matches(ref, out, net)
    assert out.records["state"].shape == ref.records["state"].shape  # L,B,H,D,N
    torch.testing.assert_close(out.records["state"], ref.records["state"], rtol=1e-9, atol=1e-12)
    assert float(out.records["state"].abs().max()) > 0
    # the switches matter: the intact network gives other counts
    intact = bs.simulate(net, ids, backend="lava", timesteps=4, coding="rate", record=("counts",))
    assert not torch.equal(intact.records["y_counts"], out.records["y_counts"])


def test_layer_values_are_the_stepwise_references_bit_for_bit(model_factory):
    """The layer's ProcessModel runs the semantics' rules (and the reference's contractions) on torch
    views: every layer value equals the stepwise reference's exactly; only the logits, made by Lava's
    own Dense (readout), may differ in the last bits."""
    net = small_net(model_factory, "product", 2)
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(11))
    plast = Plasticity(reset_every=4, decay_tau_tokens=3.0)
    settings = SimSettings(timesteps=2, coding="multispike", max_spikes=3)
    rec = ("counts", "margins", "decoded", "state")
    ref = bs.backends.load_backend("reference").simulate(net, ids, settings, plasticity=plast, record=rec,
                                                         stepwise=True)
    out = bs.simulate(net, ids, backend="lava", timesteps=2, coding="multispike", max_spikes=3, record=rec,
                      plasticity=plast)
    for key in ref.records:
        assert torch.equal(out.records[key], ref.records[key]), key
    assert_matches(ref, out, net)


def test_saved_process_graph_rebuilds_with_identical_counts(model_factory, tmp_path):
    net = small_net(model_factory, "product", 2)
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(7))
    kw = dict(timesteps=4, coding="multispike", max_spikes=2, plasticity={"reset_every": 4})
    direct = bs.simulate(net, ids, backend="lava", record=("counts",), save_lava_dir=tmp_path / "g", **kw)
    graph = json.loads((tmp_path / "g" / "lava_graph.json").read_text())
    assert (tmp_path / "g" / "network.bdhsnn").is_file()
    names = [p["name"] for p in graph["processes"]]
    assert names == ["source", "embed", "layer0", "layer1", "readout", "sink"]
    assert {p["name"]: p["origin"] for p in graph["processes"]}["embed"] == "lava"
    assert graph["settings"] == {"timesteps": 4, "coding": "multispike", "max_spikes": 2, "mode": "discrete"}
    assert graph["plasticity"]["reset_every"] == 4
    assert graph["schedule"]["period_steps_per_token"] == 8 and graph["schedule"]["layer_offsets"] == [2, 9]
    assert len(graph["connections"]) == 5
    del net  # the directory alone rebuilds the graph
    again = lava_backend.simulate_saved(tmp_path / "g", ids, record=("counts",))
    for key in ("x_counts", "y_counts"):
        assert torch.equal(again.records[key], direct.records[key])
    assert torch.equal(again.logits, direct.logits)
    # and it is the network's own behaviour, not a replay: the reference agrees
    net2, _ = lava_backend.load_process_graph(tmp_path / "g")
    ref = bs.simulate(net2, ids, backend="reference", record=("counts", "margins"), **kw)
    assert spike_differences(ref, again)["non_tie_differences"] == 0


def test_mode_device_and_option_errors(model_factory):
    net = small_net(model_factory, "gain", 1)
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ConfigError, match="biophysical"):  # fixed-point: tests/test_fixed_point.py
        bs.simulate(net, ids, backend="lava", mode="biophysical")
    from bdh_spiking.backends.registry import check_request  # the registry checks, before the backend runs

    with pytest.raises(ConfigError, match="cpu"):
        check_request("lava", SimSettings(), torch.device("cuda"), torch.float64)
    with pytest.raises(ConfigError, match="unknown option"):
        bs.simulate(net, ids, backend="lava", chunk=4)
    with pytest.raises(ConfigError, match="cannot record"):
        bs.simulate(net, ids, backend="lava", record=("voltages",))


def test_clear_error_on_other_python():
    code = ("import sys, bdh_spiking.backends\n"
            "from bdh_spiking.errors import BackendUnavailable\n"
            "sys.version_info = (3, 12, 0, 'final', 0)\n"
            "try:\n    import bdh_spiking.backends.lava\n"
            "except BackendUnavailable as exc:\n    print('ERR', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ERR" in proc.stdout and "Python 3.10" in proc.stdout and "bdh-spiking[lava]" in proc.stdout


def test_default_model_matches_reference():
    try:
        model = bs.load_model()
    except bs.errors.CheckpointError as exc:  # the shipped model is produced by a training run
        pytest.skip(f"no shipped default model: {exc}")
    calib = (DATA / "calibration.txt").read_bytes()[:1024]
    net = bs.convert(model, gating="gain", calibration=calib)
    ids = torch.tensor([list((DATA / "heldout.txt").read_bytes()[:8])])
    kw = dict(timesteps=4, coding="rate", record=("counts", "margins"))
    ref = bs.simulate(net, ids, backend="reference", **kw)
    out = bs.simulate(net, ids, backend="lava", **kw)
    assert_matches(ref, out, net)
    assert float(out.records["x_counts"].sum()) > 0


def float_model(coding, max_spikes):
    """The floating-point ProcessModel of a BDHLayer, outside a Lava run (its arithmetic only)."""
    from bdh_spiking.backends.lava.models import PyBDHLayerModelFloat

    params = dict(batch=1, timesteps=4, coding=coding, max_spikes=max_spikes, v_init=0.5, gating="gain", offset=2,
                  period=8, n_tokens=1, normalize_input=True, plasticity={}, record=(), record_path="", integer=None)
    return PyBDHLayerModelFloat(params)


@pytest.mark.parametrize("coding", ["graded", "rate", "multispike"])
def test_neuron_model_is_the_semantics_step(coding):
    """The ProcessModel's IF update equals semantics.neuron_step bit for bit, boundaries included:
    v exactly at 1 (or an integer) does not fire (v > 1 strictly); the reset subtracts."""
    from bdh_spiking.semantics import neuron_step

    def lava_step(v, current, coding, max_spikes):  # the floating-point ProcessModel's step
        return float_model(coding, max_spikes).neuron_step(v, current, "x")

    currents = torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.5, 0.5 + 1e-12, 0.75, 1.0, 1.5, 2.5, 3.7, 10.0],
                            dtype=torch.float64)
    v_ref = torch.full_like(currents, 0.0 if coding == "graded" else 0.5)
    v_lava = v_ref.numpy().copy()
    fired = 0.0
    for _ in range(6):
        v_ref, s_ref, m_ref = neuron_step(v_ref, currents, coding, 3)
        v_lava, s_lava, m_lava = lava_step(v_lava, currents.numpy(), coding, 3)
        assert torch.equal(torch.from_numpy(s_lava), s_ref)
        assert torch.equal(torch.from_numpy(v_lava), v_ref)
        assert torch.equal(torch.from_numpy(m_lava), m_ref)
        fired += float(s_ref.sum())
    assert fired > 0
    if coding == "rate":  # 0.5 + 0.5 = 1 exactly does not fire at the first step; 0.25 twice neither
        _, s, _ = lava_step(v_lava * 0 + 0.5, currents.numpy(), "rate", 1)
        assert s[4] == 0.0 and s[5] == 1.0


def test_layer_norm_matches_torch():
    from bdh_spiking.semantics import layer_norm

    np_layer_norm = float_model("rate", 1).layer_norm  # the floating-point ProcessModel's LayerNorm

    x = torch.randn(3, 4, 37, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5 + 2
    torch.testing.assert_close(torch.from_numpy(np_layer_norm(x.numpy())), layer_norm(x), rtol=1e-12, atol=1e-13)


def test_cli_save_lava_writes_a_rebuildable_graph(model_factory, tmp_path, run_cli):
    net = small_net(model_factory, "gain", 1)
    net.save(tmp_path / "net.bdhsnn")
    text = tmp_path / "t.txt"
    text.write_bytes(b"To be, or not to be")
    code, stdout, stderr = run_cli("bdh-convert", "--load", tmp_path / "net.bdhsnn", "--backend", "lava",
                                   "--text", text, "-T", "2", "--no-graded", "--save-lava", tmp_path / "g")
    assert code == 0, stderr
    graph = json.loads((tmp_path / "g" / "lava_graph.json").read_text())
    assert graph["settings"]["timesteps"] == 2
    ids = torch.tensor([list(b"To be, or not")])
    again = lava_backend.simulate_saved(tmp_path / "g", ids, record=("counts",))
    ref = bs.simulate(net, ids, backend="reference", timesteps=2, record=("counts", "margins"))
    assert spike_differences(ref, again)["non_tie_differences"] == 0
