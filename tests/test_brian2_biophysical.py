"""The Brian2 backend's mode 'biophysical' (LIF neurons in physical units; not bit-comparable).

Tiny models (one layer, D=16, H=2, N=32), numpy codegen target (no compilation), short
sequences: the file runs in about a minute on a busy 2-core machine. The fidelity bounds were
measured on these models (docs/backends.md, "Biophysical mode") with a margin for the
machine-independent but parameter-sensitive spike timing.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("brian2")

import bdh_spiking as bs  # noqa: E402
from bdh_spiking.backends.brian2 import biophysical as bio, params  # noqa: E402
from bdh_spiking.backends.registry import CONTRACTS  # noqa: E402
from bdh_spiking.backends.base import EVENT_KEYS  # noqa: E402
from bdh_spiking.errors import ConfigError  # noqa: E402
from bdh_spiking.model import BDH, BDHConfig  # noqa: E402
from bdh_spiking.report import dense_reference, fidelity  # noqa: E402

from conftest import randomize  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning")
BIO = dict(backend="brian2", timesteps=8, coding="rate", mode="biophysical")


def tiny(seed: int = 0, n_layer: int = 1, gating: str = "product"):
    model = randomize(BDH(BDHConfig(n_layer=n_layer, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4,
                                    dropout=0.0)), std=0.3, seed=seed)
    gen = torch.Generator().manual_seed(100 + seed)
    calibration = bytes(torch.randint(0, 256, (1024,), generator=gen).tolist())
    # thresholds designed for one spike per step: folded currents in [0, 1] <-> rates in [0, max_rate]
    return model, bs.convert(model, gating=gating, calibration=calibration, design_max_spikes=1)


def ids_for(batch, length, seed=0):
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def run(net, ids, record=("counts", "decoded", "state"), **options):
    options.setdefault("schedule", "sequential")
    return bs.simulate(net, ids, record=record, **BIO, **options)


def test_runs_with_right_shapes_and_monitors():
    _, net = tiny(seed=3, n_layer=2, gating="gain")
    ids = ids_for(2, 4, seed=3)
    out = bs.simulate(net, ids, backend="brian2", mode="biophysical", token_ms=60, schedule="sequential",
                      record=("counts", "margins", "decoded", "state", "spikes", "v", "weights"), monitor_neurons=3)
    assert out.backend == "brian2" and out.settings["mode"] == "biophysical"
    assert out.logits.shape == (2, 4, 256) and out.logits.dtype == torch.float64
    assert torch.isfinite(out.logits).all()
    for key in ("x_counts", "y_counts", "a_hat", "g_hat", "x_margins"):
        assert out.records[key].shape == (2, 4, 2, 2, 32), key
    assert out.records["state"].shape == (2, 2, 2, 16, 32)
    for key in EVENT_KEYS:
        assert out.stats[key].shape == (2, 4)
    counts = out.records["x_counts"]
    assert float(counts.sum()) > 0 and torch.equal(counts, counts.round())  # whole spikes in the windows
    # a window of token_ms / (2L) = 15 ms at <= 200 Hz holds at most 3 spikes (+1 from v_start)
    assert float(counts.max()) <= 4 and float(out.records["y_counts"].max()) <= 4
    assert out.events["spikes"] == float(out.records["x_counts"].sum() + out.records["y_counts"].sum())
    spk = out.records["spikes_x"]
    assert spk["t_ms"].shape == spk["i"].shape and set(spk["i"].tolist()) <= set(spk["neurons"])
    assert len(spk["neurons"]) == 2 * 3  # 3 neurons per layer: memory stays bounded
    v = out.records["v_x"]
    assert v["v"].shape[0] == 6 and v["v"].shape[1] == v["t_ms"].shape[0] > 0
    assert float(v["v"].max()) <= 1.0 + 1e-9
    w = out.records["weights"]
    assert w["S"].shape == (4, len(w["synapses"]))
    assert out.settings["simulated_ms"] == pytest.approx(4 * 60 + 0.2, abs=0.11)


@pytest.mark.slow  # tens of seconds of Brian2 on 2 cores (default run budget)
def test_fidelity_high_with_long_windows_and_worse_with_short_ones():
    """Measured on this model (seed 0, 2 x 8 tokens), sequential schedule, no noise: token_ms 200
    (100 ms per stage, up to 20 spikes): KL 0.001, top-1 vs dense 15/16, decoded-x / y correlation
    0.9985 / 0.9967, plastic-state cosine 0.999; token_ms 20 (10 ms per stage): KL 0.36, top-1 8/16,
    correlation 0.82 / 0.58, state cosine 0.78. The bounds leave a margin (top-1: two of 16 tokens,
    the random model's logits are nearly flat; KL 10x)."""
    model, net = tiny(seed=0)
    ids = ids_for(2, 8, seed=0)
    dense = dense_reference(model, ids)
    long = fidelity(dense, run(net, ids, token_ms=200), ids)
    short = fidelity(dense, run(net, ids, token_ms=20), ids)
    assert long["top1_agreement"] >= 0.85, long
    assert long["kl_per_token"] <= 0.01, long
    assert min(long["corr_x_per_layer"]) >= 0.99 and min(long["corr_y_per_layer"]) >= 0.98, long
    assert min(long["state_cosine_per_layer"]) >= 0.99, long
    assert short["kl_per_token"] > 10 * long["kl_per_token"]
    assert short["top1_agreement"] < long["top1_agreement"]
    assert min(short["corr_x_per_layer"]) < min(long["corr_x_per_layer"])
    assert min(short["state_cosine_per_layer"]) < min(long["state_cosine_per_layer"])


@pytest.mark.slow  # tens of seconds of Brian2 on 2 cores (default run budget)
def test_pipelined_schedule_default():
    """The default schedule: every stage gets a whole token_ms window (latency 2L * token_ms).
    Measured (seed 0, 2 x 8 tokens, token_ms 100): KL 0.0014, top-1 15/16, decoded-x / y
    correlation 0.998 / 0.995, plastic-state cosine 0.999."""
    model, net = tiny(seed=0)
    ids = ids_for(2, 8, seed=0)
    out = bs.simulate(net, ids, record=("counts", "decoded", "state"), token_ms=100, **BIO)
    assert out.settings["biophysical"]["schedule"] == "pipelined"
    assert out.settings["latency_ms"] == 200.0 and out.settings["x_window_ms"] == pytest.approx(100.0)
    assert out.settings["simulated_ms"] == pytest.approx(8 * 2 * 100 + 0.2, abs=0.11)
    f = fidelity(dense_reference(model, ids), out, ids)
    assert f["kl_per_token"] <= 0.01 and f["top1_agreement"] >= 0.85, f
    assert min(f["corr_x_per_layer"]) >= 0.99 and min(f["corr_y_per_layer"]) >= 0.98, f
    assert min(f["state_cosine_per_layer"]) >= 0.99, f


@pytest.mark.slow  # ~20 s of Brian2 (default run budget)
def test_noise_is_reproducible_with_a_seed():
    _, net = tiny(seed=1)
    ids = ids_for(1, 4, seed=1)
    quiet = run(net, ids, token_ms=40)
    a = run(net, ids, token_ms=40, noise=0.3, seed=7)
    b = run(net, ids, token_ms=40, noise=0.3, seed=7)
    c = run(net, ids, token_ms=40, noise=0.3, seed=8)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.records["x_counts"], b.records["x_counts"])
    assert not torch.equal(a.records["x_counts"], c.records["x_counts"])
    assert not torch.equal(a.records["x_counts"], quiet.records["x_counts"])
    assert a.settings["biophysical"]["noise"] == 0.3 and a.settings["biophysical"]["seed"] == 7


@pytest.mark.parametrize("options,phrase", [
    ({"tau_m_ms": -5.0}, "tau_m_ms must be > 0"),
    ({"tau_syn_ms": 0.0}, "tau_syn_ms must be > 0"),
    ({"tau_pre_ms": -1.0}, "tau_pre_ms must be > 0"),
    ({"t_ref_ms": -1.0}, "refractory"),
    ({"token_ms": 0.05}, "shorter than the time step"),
    ({"token_ms": 1.0}, "at least"),  # 0.5 ms = 5 steps per stage (sequential schedule, 2 stages)
    ({"max_rate": 600.0}, "below 1/t_ref"),
    ({"schedule": "parallel"}, "schedule"),
    ({"rule": "stdp"}, "plasticity rule"),
    ({"tau_M": 3.0}, "unknown options"),
    ({"params_file": "/nonexistent/bio.toml"}, "cannot read"),
])
def test_invalid_parameters_raise_config_error(options, phrase):
    _, net = tiny(seed=2)
    with pytest.raises(ConfigError, match=phrase) as info:
        run(net, ids_for(1, 2), **options)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="record"):
        run(net, ids_for(1, 2), record=("spikes", "bogus"))
    with pytest.raises(ConfigError, match="biophysical"):  # the mode's options are not discrete mode's
        bs.simulate(net, ids_for(1, 2), backend="brian2", timesteps=2, token_ms=50)


def test_params_file_overrides_the_shipped_defaults(tmp_path):
    shipped = params.load_params()
    assert shipped["token_ms"] == 100.0 and shipped["schedule"] == "pipelined" and shipped["noise"] == 0.0
    path = tmp_path / "bio.toml"
    path.write_text("seed = 3\n[time]\ntoken_ms = 30.0\nschedule = \"sequential\"\n[neuron]\nmax_rate_hz = 150.0\n")
    _, net = tiny(seed=2)
    out = run(net, ids_for(1, 3, seed=2), params_file=str(path), schedule=None)
    par = out.settings["biophysical"]
    assert (par["token_ms"], par["schedule"], par["max_rate_hz"], par["seed"]) == (30.0, "sequential", 150.0, 3)
    assert par["tau_m_ms"] == shipped["tau_m_ms"]  # keys missing from the file keep the shipped values
    assert out.settings["simulated_ms"] == pytest.approx(3 * 30.0 + 0.2, abs=0.11)
    over = run(net, ids_for(1, 3, seed=2), params_file=str(path), token_ms=40.0)  # options beat the file
    assert over.settings["biophysical"]["token_ms"] == 40.0
    (tmp_path / "bad.toml").write_text("[neuron]\ntau_m_ms = -20.0\n")
    with pytest.raises(ConfigError, match="tau_m_ms"):
        run(net, ids_for(1, 2), params_file=str(tmp_path / "bad.toml"))
    (tmp_path / "typo.toml").write_text("[neuron]\ntau_mem_ms = 20.0\n")
    with pytest.raises(ConfigError, match="unknown parameter"):
        run(net, ids_for(1, 2), params_file=str(tmp_path / "typo.toml"))


@pytest.mark.slow  # tens of seconds of Brian2 on 2 cores (default run budget)
def test_sweep_cli_writes_its_plot(run_cli, tmp_path):
    from bdh_spiking.checkpoint import save_checkpoint
    from bdh_spiking.text import shipped_text_path

    model, _ = tiny(seed=4)
    ckpt, calib = tmp_path / "tiny.pt", tmp_path / "calib.txt"
    save_checkpoint(ckpt, model)
    calib.write_bytes(shipped_text_path("calibration").read_bytes()[:1024])
    params = tmp_path / "bio.toml"
    params.write_text("[time]\nschedule = \"sequential\"\n")
    plots, out_json = tmp_path / "plots", tmp_path / "sweep.json"
    code, stdout, stderr = run_cli("bdh-convert", ckpt, "--calibration", calib, "--backend", "brian2", "--mode",
                                   "biophysical", "--max-tokens", "4", "--seq-len", "4", "--bio-params", params,
                                   "--sweep", "token-ms=20,60", "--plots", plots, "--json", out_json,
                                   "--record", "spikes,weights", "--brian2-target", "numpy")
    assert code == 0, stderr
    assert stdout.count("biophysical") >= 2 and "token-ms = 60" in stdout
    assert (plots / "fidelity_vs_token_ms.png").stat().st_size > 1000
    assert (plots / "biophysical_raster.png").stat().st_size > 1000
    assert (plots / "biophysical_weights.png").stat().st_size > 1000
    import json

    doc = json.loads(out_json.read_text())
    assert doc["sweep"] == {"parameter": "token-ms", "values": [20.0, 60.0]}
    assert [r["runs"][0]["biophysical"]["token_ms"] for r in doc["reports"]] == [20.0, 60.0]
    code, _, stderr = run_cli("bdh-convert", ckpt, "--calibration", calib, "--backend", "brian2", "--mode",
                              "biophysical", "--max-tokens", "4", "--sweep", "tau=1,2")
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error:") and "cannot sweep" in stderr


def test_lif_drive_is_the_rate_curve_inside_a_window_and_zero_outside():
    """mu(I) = 1 / (1 - exp(-(1/(r_max min(I, 1)) - t_ref) / tau_m)) for I > 0 in a window: a
    noise-free LIF neuron driven by it fires at r_max * I; 0 for I <= 0 or an idle population."""
    import numpy as np

    rmax, tref, tau_m = 200.0, 0.002, 0.02
    I = np.array([-0.5, 0.0, 1e-12, 0.1, 0.5, 1.0, 3.0])
    win = np.array([1.0, 1, 1, 1, 1, 1, 1])
    mu = bio._lif_drive_numpy(I, win, 1 / rmax, -tref, bio._TMAX_S, 1 / tau_m)
    assert mu[0] == 0.0 and mu[1] == 0.0
    assert mu[2] == pytest.approx(1.0)  # rheobase as I -> 0+
    for i, m in zip(I[3:], mu[3:]):
        isi = tau_m * np.log(m / (m - 1.0)) + tref  # time to climb from 0 to 1 under drive m, plus t_ref
        assert 1.0 / isi == pytest.approx(rmax * min(i, 1.0), rel=1e-9)
    idle = bio._lif_drive_numpy(I, np.zeros_like(I), 1 / rmax, -tref, bio._TMAX_S, 1 / tau_m)
    assert not idle.any()


@pytest.mark.slow
def test_cython_and_numpy_targets_agree_bit_for_bit():
    """lif_drive's cython implementation performs the numpy form's operations in the same order."""
    _, net = tiny(seed=6)
    ids = ids_for(1, 3, seed=6)
    a = run(net, ids, record=("counts",), target="numpy", token_ms=30)
    b = run(net, ids, record=("counts",), target="cython", token_ms=30)
    assert b.settings["target"] == "cython"
    assert torch.equal(a.logits, b.logits) and torch.equal(a.records["x_counts"], b.records["x_counts"])


@pytest.mark.slow  # 2 x 5000 Brian2 steps (~23 s): over the default run's budget
def test_neuron_updates_count_every_simulation_step_of_long_windows():
    """Issue 14, defect 1: a stage window of 5000 steps (token_ms 500) was counted as min(P, 4096)
    steps per neuron and token. Every x and y neuron is integrated at every Brian2 step, and the
    settings carry what a rate per second or per step needs (not the meaningless T)."""
    _, net = tiny(seed=5)
    d = net.dims
    out = bs.simulate(net, ids_for(1, 1, seed=5), backend="brian2", mode="biophysical", timesteps=1, coding="rate",
                      token_ms=500)
    s = out.settings
    assert (s["dt_ms"], s["token_ms"], s["stage_steps"]) == (0.1, 500.0, 5000)
    assert s["sim_steps_per_token"] == 2 * d.L * s["stage_steps"]
    assert s["brian2_timesteps"] == s["sim_steps_per_token"] * 1 + 2  # + the last write and its clearing
    assert s["simulated_ms"] == pytest.approx(s["brian2_timesteps"] * s["dt_ms"])
    assert out.events["neuron_updates"] == 2 * d.L * 1 * d.H * d.N * s["brian2_timesteps"]


def test_biophysical_options_are_the_contracts():
    """Every biophysical option the registry accepts is consumed (no dead option lists such as the
    former EXTRA_OPTIONS): the executor's own, the parameters by name and their aliases."""
    own = {"target", "cache_dir", "params_file", "monitor_neurons", "monitor_dt_ms", "ladder",
           "brian2_device", "threads"}
    assert set(CONTRACTS["brian2"].options["biophysical"]) == own | set(params.PARAMS) | set(params.ALIASES)
    assert not any(hasattr(m, "EXTRA_OPTIONS") for m in (params, bio))
