"""Conversion, the reference executor's semantics, the network file and the public API."""


import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.errors import BackendUnavailable, ConfigError, NetworkFormatError, TextError
from bdh_spiking.model import BDH, BDHConfig
from bdh_spiking.report import spike_differences
from bdh_spiking.semantics import SimSettings, neuron_step, run_population
from bdh_spiking.text import read_bytes, shipped_text_path
from bundle_edit import rewrite


def random_model(seed, n_layer=2, n_embd=32, n_head=2, mult=8, std=0.3):
    torch.manual_seed(seed)
    model = BDH(BDHConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, mlp_internal_dim_multiplier=mult,
                          dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=std)
    return model


def random_bytes(seed, n):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


def dense_logits(model, ids):
    m = model.double() if next(model.parameters()).dtype != torch.float64 else model
    with torch.no_grad():
        return m(ids)[0]


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def default_net():
    model = bs.load_model()
    calib = read_bytes(shipped_text_path("calibration"))[:2048]
    return model, bs.convert(model, gating="gain", calibration=calib.tobytes())


@pytest.fixture(scope="module")
def heldout_ids():
    return torch.as_tensor(read_bytes(shipped_text_path("heldout"))[:96].astype(np.int64)).view(2, 48)


# -- the structural check: graded coding at T=1 is the dense model ------------------------
@pytest.mark.parametrize("seed,cfg", [(0, (2, 32, 2, 8)), (1, (1, 16, 4, 4)), (2, (3, 24, 3, 4))])
@pytest.mark.parametrize("gating", ["gain", "product"])
def test_graded_T1_equals_dense(seed, cfg, gating):
    model = random_model(seed, *cfg)
    net = bs.convert(model, gating=gating, calibration=random_bytes(seed, 1024))
    ids = random_bytes(seed + 10, 80).view(2, 40)
    dense = dense_logits(model, ids)
    for stepwise in (False, True):
        out = bs.simulate(net, ids, coding="graded", timesteps=1, stepwise=stepwise)
        assert rel(out.logits, dense) < 1e-12
        assert torch.equal(out.logits.argmax(-1), dense.argmax(-1))


def test_graded_T1_equals_dense_default_model(default_net, heldout_ids):
    model, net = default_net
    out = bs.simulate(net, heldout_ids, coding="graded", timesteps=1)
    dense = dense_logits(bs.load_model(), heldout_ids)
    assert rel(out.logits, dense) < 1e-5
    assert torch.equal(out.logits.argmax(-1), dense.argmax(-1))


def test_plastic_state_equals_dense_recurrent_state():
    model = random_model(3).double()
    net = bs.convert(model, calibration=random_bytes(3, 1024))
    ids = random_bytes(4, 60).view(2, 30)
    out = bs.simulate(net, ids, coding="graded", timesteps=1, record=("state",))
    state = model.initial_state(2)
    with torch.no_grad():
        for t in range(ids.shape[1]):
            model.step(ids[:, t], state)
    assert rel(out.records["state"], state["rho"]) < 1e-12


# -- rate coding converges ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gating", ["gain", "product"])
def test_rate_error_shrinks_with_T(seed, gating):
    model = random_model(seed)
    # binary rate coding with per-neuron max thresholds: no clipping on calibration-like data,
    # so the decoding error (and with it the logit error) falls as 1/T
    net = bs.convert(model, gating=gating, calibration=random_bytes(seed, 2048), statistic="max")
    ids = random_bytes(seed + 100, 64).view(2, 32)
    dense = dense_logits(model, ids)
    err = {T: float((bs.simulate(net, ids, timesteps=T, coding="rate").logits - dense).abs().mean())
           for T in (4, 64)}
    assert err[64] < 0.35 * err[4]


# -- the neuron step ----------------------------------------------------------------------
def test_neuron_step_definitions():
    v = torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    j = torch.tensor([0.5, 0.6, 1.6, -1.0], dtype=torch.float64)
    v1, s, _ = neuron_step(v, j, "rate")
    assert s.tolist() == [0.0, 1.0, 1.0, 0.0]  # v = 1.0 does not fire: strictly greater
    assert v1.tolist() == pytest.approx([1.0, 0.1, 1.1, -0.5])
    v2, s2, _ = neuron_step(v, j, "multispike", max_spikes=3)
    assert s2.tolist() == [0.0, 1.0, 2.0, 0.0]
    v3, s3, _ = neuron_step(v, torch.full_like(v, 4.0), "multispike", max_spikes=3)
    assert s3.tolist() == [3.0] * 4  # clipped at K
    _, s4, _ = neuron_step(v, j, "graded")
    assert s4.tolist() == pytest.approx([1.0, 1.1, 2.1, 0.0])


def test_rate_counts_round_with_half_threshold_start():
    current = torch.linspace(0, 1, 101, dtype=torch.float64)
    counts, _ = run_population(current, SimSettings(timesteps=10, coding="rate"), v_init=0.5)
    expected = torch.floor(current * 10 + 0.5)  # round half up, except exact ties go down
    mismatch = counts != expected
    # disagreements only where v hits exactly 1 (the strict threshold), i.e. T*J + 0.5 integer
    assert torch.all(torch.isclose((current * 10 + 0.5)[mismatch], torch.round(current * 10 + 0.5)[mismatch]))


# -- the two executor forms agree ---------------------------------------------------------
@pytest.mark.parametrize("coding,T", [("rate", 3), ("rate", 8), ("multispike", 4), ("graded", 2)])
@pytest.mark.parametrize("gating", ["gain", "product"])
def test_chunked_equals_stepwise(coding, T, gating):
    model = random_model(5)
    net = bs.convert(model, gating=gating, calibration=random_bytes(5, 1024))
    ids = random_bytes(6, 70).view(2, 35)
    a = bs.simulate(net, ids, timesteps=T, coding=coding, max_spikes=2, record=("counts", "margins"), chunk=16)
    b = bs.simulate(net, ids, timesteps=T, coding=coding, max_spikes=2, record=("counts",), stepwise=True)
    diff = spike_differences(a, b)
    assert diff["non_tie_differences"] == 0
    if diff["differing_spikes_vs_reference"] == 0:
        assert rel(a.logits, b.logits) < 1e-10
    for key in a.stats:
        if diff["differing_spikes_vs_reference"] == 0:
            assert torch.equal(a.stats[key], b.stats[key]), key


@pytest.mark.parametrize("plasticity", [{"freeze_after": 7}, {"reset_every": 9}, {"decay_tau_tokens": 4.0},
                                        {"freeze_after": 20, "reset_every": 11, "decay_tau_tokens": 2.5}])
def test_plasticity_switches_chunked_equals_stepwise(plasticity):
    model = random_model(7)
    net = bs.convert(model, calibration=random_bytes(7, 1024))
    ids = random_bytes(8, 60).view(2, 30)
    a = bs.simulate(net, ids, coding="graded", timesteps=1, plasticity=plasticity, chunk=8)
    b = bs.simulate(net, ids, coding="graded", timesteps=1, plasticity=plasticity, stepwise=True)
    intact = bs.simulate(net, ids, coding="graded", timesteps=1)
    assert rel(a.logits, b.logits) < 1e-12
    assert rel(a.logits, intact.logits) > 1e-6  # the switch changes something


def test_freeze_at_zero_removes_plastic_memory():
    model = random_model(9).double()
    net = bs.convert(model, calibration=random_bytes(9, 1024))
    ids = random_bytes(10, 20)[None]
    out = bs.simulate(net, ids, coding="graded", timesteps=1, plasticity={"freeze_after": 0}, record=("state",))
    assert float(out.records["state"].abs().max()) == 0.0


def test_batch_equals_each_sequence_alone():
    model = random_model(11)
    net = bs.convert(model, calibration=random_bytes(11, 1024))
    ids = random_bytes(12, 3 * 25).view(3, 25)
    batch = bs.simulate(net, ids, timesteps=4, record=("counts",))
    for i in range(3):
        alone = bs.simulate(net, ids[i], timesteps=4, record=("counts",))
        assert torch.equal(batch.records["x_counts"][i], alone.records["x_counts"][0])
        assert rel(batch.logits[i], alone.logits[0]) < 1e-12


# -- the network file ---------------------------------------------------------------------
def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = random_model(13)
    net = bs.convert(model, gating="product", calibration=random_bytes(13, 1024))
    path = tmp_path / "net.bdhsnn"
    net.save(path)
    loaded = bs.SpikingNetwork.load(path)
    assert loaded.gating == "product" and loaded.v_init == net.v_init
    for name, array in net.arrays.items():
        assert array.dtype == loaded.arrays[name].dtype
        assert np.array_equal(array, loaded.arrays[name]), name
    ids = random_bytes(14, 20)[None]
    assert torch.equal(bs.simulate(net, ids, timesteps=4).logits, bs.simulate(loaded, ids, timesteps=4).logits)
    assert loaded.calibration == net.calibration
    assert loaded.manifest()["hardware"]["plastic_synapses_per_layer"] == 2 * 32 * 128


def test_bad_network_files(tmp_path):
    model = random_model(15, n_layer=1, n_embd=16, mult=4)
    net = bs.convert(model, calibration=random_bytes(15, 512))
    good = tmp_path / "good.bdhsnn"
    net.save(good)
    cases = {
        "newer": (dict(manifest_edit=lambda m: m.update(format_version=99)), "newer than this bdh-spiking"),
        "missing": (dict(drop="arrays/theta_x.npy"), "theta_x"),
        "shape": (dict(replace={"arrays/decoder.npy": np.zeros((3, 3))}), "'decoder' has shape (3, 3)"),
        "format": (dict(manifest_edit=lambda m: m.update(format="other")), "not a bdh-spiking network"),
    }
    for name, (edit, phrase) in cases.items():
        path = tmp_path / f"{name}.bdhsnn"
        rewrite(good, path, **edit)
        with pytest.raises(NetworkFormatError, match=None) as info:
            bs.SpikingNetwork.load(path)
        assert phrase in str(info.value), (name, str(info.value))
    truncated = tmp_path / "truncated.bdhsnn"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NetworkFormatError, match="corrupt or truncated"):
        bs.SpikingNetwork.load(truncated)
    with pytest.raises(NetworkFormatError, match="not found"):
        bs.SpikingNetwork.load(tmp_path / "absent.bdhsnn")


# -- bad input through the API ------------------------------------------------------------
def test_bad_simulation_input():
    model = random_model(16, n_layer=1, n_embd=16, mult=4)
    net = bs.convert(model, calibration=random_bytes(16, 512))
    ids = random_bytes(17, 10)
    with pytest.raises(ConfigError, match="timesteps"):
        bs.simulate(net, ids, timesteps=0)
    with pytest.raises(ConfigError, match="absurdly large"):
        bs.simulate(net, ids, timesteps=10**6)
    with pytest.raises(ConfigError, match="valid backends are reference"):
        bs.simulate(net, ids, backend="nest")
    with pytest.raises(ConfigError, match="unknown coding"):
        bs.simulate(net, ids, coding="phase")
    with pytest.raises(ConfigError, match="cannot record"):
        bs.simulate(net, ids, record=("voltages",))
    with pytest.raises(ConfigError, match="plasticity"):
        bs.simulate(net, ids, plasticity={"forget": 3})
    with pytest.raises(ConfigError, match="decay time constant"):
        bs.simulate(net, ids, plasticity={"decay_tau_tokens": 0})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            bs.simulate(net, ids, device="cuda")


def test_bad_calibration_text(tmp_path):
    model = random_model(18, n_layer=1, n_embd=16, mult=4)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(TextError, match="empty"):
        bs.convert(model, calibration=empty)
    with pytest.raises(TextError, match="at least"):
        bs.convert(model, calibration=b"too short")
    with pytest.raises(ConfigError, match="gating"):
        bs.convert(model, gating="sum")


def test_missing_simulator_names_pip_extra(monkeypatch):
    import importlib.util

    from bdh_spiking import backends

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "snntorch" else real(name, *a))
    with pytest.raises(BackendUnavailable, match=r"pip install 'bdh-spiking\[snntorch\]'"):
        backends.load_backend("snntorch")


# -- the equivalence report ---------------------------------------------------------------
def test_compare_report_schema(tmp_path):
    model = random_model(19)
    net = bs.convert(model, calibration=random_bytes(19, 1024))
    ids = random_bytes(20, 64).view(2, 32)
    rep = bs.compare(model, net, ids, backends=["reference"], timesteps=[2, 8], codings=["rate"])
    runs = rep.to_dict()["runs"]
    assert [(r["coding"], r["timesteps"]) for r in runs] == [("graded", 1), ("rate", 2), ("rate", 8)]
    required = ["backend", "mode", "coding", "gating", "timesteps", "tokens", "top1_agreement", "max_abs_dlogit",
                "max_rel_dlogit", "ce_dense", "ce_spiking", "ce_rel_diff", "kl_per_token", "spikes_per_token",
                "synaptic_events_per_token"]
    for r in runs:
        assert all(k in r for k in required)
        assert r["tokens"] == 64
    graded = runs[0]
    assert graded["top1_agreement"] == 1.0 and graded["max_rel_dlogit"] < 1e-12
    assert all(c > 0.999999 for c in graded["state_cosine_per_layer"])
    assert all(c > 0.999999 for c in graded["corr_x_per_layer"])
    assert runs[2]["kl_per_token"] < runs[1]["kl_per_token"]
    text = rep.table()
    assert "reference" in text and "rate" in text
    files = rep.plot(tmp_path)
    assert (tmp_path / "fidelity_vs_T.png") in files and all(f.stat().st_size > 1000 for f in files)
    path = tmp_path / "r.json"
    rep.to_json(path)
    import json

    assert json.loads(path.read_text())["runs"][1]["timesteps"] == 2


# -- error-minimising thresholds ------------------------------------------------------------
def test_mse_thresholds_trade_resolution_against_clipping():
    from bdh_spiking.conversion.calibration import (ActivationStats, HIST_BINS, expected_error, hist_centers,
                                                    mse_thresholds)

    centers = hist_centers()
    # one neuron: 1000 values near 1.0 and a single outlier near 64 (a heavy tail)
    hist = torch.zeros(1, 1, 1, HIST_BINS, dtype=torch.float64)
    hist[..., int(torch.argmin((centers - 1.0).abs()))] = 1000
    hist[..., int(torch.argmin((centers - 64.0).abs()))] = 1
    top = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    top[..., 0] = 64.0
    stats = ActivationStats(top=top, active=torch.full((1, 1, 1), 1001), tokens=2000, hist=hist)
    theta = mse_thresholds(stats, design_T=8, max_spikes=4, fallback=torch.ones(1, 1, 1))
    # below the maximum: with 4 spikes per step the outlier is still mostly represented (4 theta),
    # while the bulk gains resolution
    assert 64.0 / 8 < float(theta) < 64.0 / 2

    def total(t):
        return float((expected_error(centers, torch.tensor(t, dtype=torch.float64), 8, 4) * hist.view(-1)).sum())

    assert total(float(theta)) < total(64.0)
    assert all(total(float(theta)) <= total(float(theta) * f) for f in (0.7, 0.85, 1.2, 1.5))
    # a silent neuron keeps its fallback
    silent = ActivationStats(top=torch.zeros(1, 1, 1, 4), active=torch.zeros(1, 1, 1), tokens=10,
                             hist=torch.zeros(1, 1, 1, HIST_BINS, dtype=torch.float64))
    assert float(mse_thresholds(silent, 8, 4, fallback=torch.full((1, 1, 1), 0.7, dtype=torch.float64))) == 0.7


@pytest.mark.parametrize("gating", ["gain", "product"])
def test_mse_thresholds_improve_multispike_fidelity(gating):
    model = random_model(21)
    calib = random_bytes(21, 4096)
    ids = random_bytes(22, 128).view(2, 64)
    dense = dense_logits(model, ids)
    errors = {}
    for statistic in ("max", "mse"):
        net = bs.convert(model, gating=gating, calibration=calib, statistic=statistic, design_T=8, design_max_spikes=4)
        assert net.calibration["statistic"] == statistic
        out = bs.simulate(net, ids, timesteps=8, coding="multispike", max_spikes=4)
        errors[statistic] = float((out.logits - dense).abs().mean())
    assert errors["mse"] < errors["max"]


def test_mse_threshold_search_equals_brute_force():
    from bdh_spiking.conversion.calibration import (ActivationStats, HIST_BINS, expected_error, hist_centers,
                                                    mse_thresholds)

    g = torch.Generator().manual_seed(0)
    hist = torch.zeros(2, 3, 5, HIST_BINS, dtype=torch.float64)
    hist[..., 130:190] = torch.randint(0, 50, (2, 3, 5, 60), generator=g).double()
    hist[..., 200] = torch.randint(0, 3, (2, 3, 5), generator=g).double()
    centers = hist_centers()
    top = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
    top[..., 0] = centers[200]
    stats = ActivationStats(top=top, active=hist.sum(-1), tokens=5000, hist=hist)
    fast = mse_thresholds(stats, design_T=16, max_spikes=2, fallback=torch.ones(2, 3, 5, dtype=torch.float64))
    thetas = centers[200] * torch.pow(2.0, -torch.arange(64, dtype=torch.float64) / 8)
    err = (expected_error(centers[None, :], thetas[:, None], 16, 2)[None, None, None] * hist[..., None, :]).sum(-1)
    brute = thetas[err.argmin(-1)]
    assert torch.allclose(fast, brute, rtol=1e-12)


def test_generation_uses_the_spiking_networks_own_logits():
    from bdh_spiking.generate import generate
    from bdh_spiking.model import sample_next

    model = random_model(23)
    net = bs.convert(model, calibration=random_bytes(23, 1024))
    text = generate(net, "ab", 6, timesteps=4, seed=5)
    assert text.startswith("ab") and len(text.encode("utf-8", errors="surrogateescape")) >= 8
    assert generate(net, "ab", 6, timesteps=4, seed=5) == text  # reproducible from the seed
    # the same bytes come out of re-simulating the whole sequence each time
    ids = torch.tensor(list(b"ab"))
    gen = torch.Generator().manual_seed(5)
    for _ in range(6):
        logits = bs.simulate(net, ids[None], timesteps=4).logits[:, -1]
        ids = torch.cat([ids, sample_next(logits, 1.0, 3, gen)])
    from bdh_spiking.text import decode

    assert decode(ids.tolist()) == text
