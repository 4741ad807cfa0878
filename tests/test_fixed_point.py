"""Mode 'fixed-point': the quantization pass, the reference's integer executor, the Lava backend's
fixed_pt models (counts EQUAL, no tie exceptions), fidelity, and the hardware-fit report.

Everything is tiny (D = 16 or 32): each Lava run forks one OS process per Lava Process.
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.backends.fixed_point import FixedPointExecutor
from bdh_spiking.report import compare_to_discrete
from bdh_spiking.semantics.fixed_point import Saturations
from bdh_spiking.conversion.quantize import SAT_KEYS, is_quantized, quantize
from bdh_spiking.errors import ConfigError
from bdh_spiking.hardware_fit import fit, fit_all, table
from bdh_spiking.network import SpikingNetwork
from bdh_spiking.semantics import SimSettings

REC = ("counts", "margins", "decoded", "state")
NARROW = dict(state_bits=12, threshold_exp=8, payload_bits=16, frac_bits=10, plastic_bits=16)


def calibration_bytes(seed: int, n: int = 1024) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


_NETS = {}


def small_net(model_factory, gating="gain", n_layer=1, n_embd=16, **qkw):
    key = (gating, n_layer, n_embd, tuple(sorted(qkw.items())))
    if key not in _NETS:
        model = model_factory(seed=n_layer, n_layer=n_layer, n_embd=n_embd, n_head=2, mlp_internal_dim_multiplier=4)
        net = bs.convert(model, gating=gating, calibration=calibration_bytes(n_layer))
        _NETS[key] = (model, net, quantize(net, **qkw))
    return _NETS[key]


# -- the quantization pass ---------------------------------------------------------------------------
def test_quantize_formats_round_trip_and_discrete_unchanged(model_factory, tmp_path):
    _, net, qn = small_net(model_factory)
    q = qn.quantization.meta()
    assert is_quantized(qn) and not is_quantized(net) and net.quantization is None
    assert q["params"]["weight_bits"] == 8 and q["params"]["granularity"] == "neuron"
    assert q["threshold"] == 2 ** 16 and q["v0"] == 2 ** 15  # v_init 0.5 of the unit threshold
    from bdh_spiking.semantics import fold_weights

    w = {k: v.numpy() for k, v in fold_weights(net).items()}
    F, k = q["params"]["frac_bits"], q["params"]["threshold_exp"]
    for name in ("W_x", "W_y"):
        m = qn.quantization.tables[f"q_{name}"].astype(np.int64)
        assert qn.quantization.tables[f"q_{name}"].dtype == np.int8 and m.min() >= -128 and m.max() <= 127
        e = F - k - qn.quantization.tables[f"q_{name}_shift"][:, :, None, :]  # shift = F - e - k, per neuron
        # the exponent makes the largest weight of each neuron just fit: max |m| in [64, 127]
        top = np.abs(m).max(axis=2)
        assert top.min() >= 64 and top.max() <= 127
        err = np.abs(m * np.exp2(e) - w[name])
        assert np.all(err <= np.exp2(e - 1) * (1 + 1e-12))  # round half away: at most half a step
    s = q["summary"]["W_x"]
    assert s["saturated"] == 0 and 0 < s["rel_error"] < 0.02
    theta = qn.quantization.tables["q_theta_x"]
    assert np.all(np.abs(theta / 2.0 ** F - net.arrays["theta_x"]) <= 2.0 ** -(F + 1))
    # saving and loading keeps the integer tables; the fixed-point run is the same
    qn.save(tmp_path / "q.bdhsnn")
    back = SpikingNetwork.load(tmp_path / "q.bdhsnn")
    assert is_quantized(back)
    for name in q["arrays"]:
        a, b = back.quantization.tables[name], qn.quantization.tables[name]
        assert np.array_equal(a, b) and a.dtype == b.dtype
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(1))
    a = bs.simulate(qn, ids, timesteps=2, mode="fixed-point", record=("counts",))
    b = bs.simulate(back, ids, timesteps=2, mode="fixed-point", record=("counts",))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.records["y_counts"], b.records["y_counts"])
    # quantizing adds arrays only: discrete mode is bit-identical on the quantized network
    d1 = bs.simulate(net, ids, timesteps=2, record=("counts",))
    d2 = bs.simulate(qn, ids, timesteps=2, record=("counts",))
    assert torch.equal(d1.logits, d2.logits) and torch.equal(d1.records["x_counts"], d2.records["x_counts"])


def test_unrepresentable_weights_are_counted_and_named(model_factory):
    _, net, _ = small_net(model_factory)
    from bdh_spiking.semantics import fold_weights

    W = fold_weights(net)["W_x"].numpy()
    qn = quantize(net, clip_quantile=0.9, granularity="projection")
    s = qn.quantization.summary["W_x"]
    e = (16 - 16 - qn.quantization.tables["q_W_x_shift"][:, :, None, :]).astype(np.float64)  # F - k - shift
    scaled = np.abs(W) / np.exp2(e)
    r = np.sign(W) * np.floor(scaled + 0.5)  # round half away from zero
    # hand count: too large -> beyond [-128, 127] (saturated); too small -> |W / 2**e| < 1/2 (zeroed)
    assert s["saturated"] == int(((r > 127) | (r < -128)).sum()) > 0
    assert s["zeroed"] == int(((scaled < 0.5) & (W != 0)).sum()) > 0
    assert s["saturated_max_abs_error"] > 0 and s["zeroed_max_abs_weight"] > 0
    assert qn.quantization.weights_saturated >= s["saturated"]
    with pytest.raises(ConfigError, match="weight_bits"):
        quantize(net, weight_bits=1)
    with pytest.raises(ConfigError, match="threshold_exp"):
        quantize(net, state_bits=12, threshold_exp=11)


def test_neuron_saturations_counted_by_hand(model_factory):
    """state_bits 12 (|v| <= 2048), unit threshold 2**8 = 256, v0 = 128, rate coding, T = 4."""
    _, _, qn = small_net(model_factory, **NARROW)
    ex = FixedPointExecutor(qn, SimSettings(timesteps=4, coding="rate"))
    sat = Saturations(1)
    J = torch.tensor([[[-2000, 100, 300, 2000]]], dtype=torch.int64)
    P, _ = ex.population(J, sat, 0, "x")
    # -2000: -1872, then three clamps at -2048; 100: 228, 328 fire, 172, 272 fire -> 2;
    # 300: fires every step; 2000: 2128 clamps to 2047 at every step and fires every step
    assert (P // 256).tolist() == [[[0, 2, 4, 4]]]
    assert sat.per_layer[0]["x_membrane"] == 3 + 4 and sum(sat.totals().values()) == 7


def test_narrow_formats_saturate_and_lava_counts_them_identically(model_factory):
    pytest.importorskip("lava")
    _, _, qn = small_net(model_factory, n_layer=2, **NARROW)
    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(3))
    for coding in ("graded", "rate"):
        kw = dict(timesteps=2, coding=coding, mode="fixed-point", record=REC, plasticity={"decay_tau_tokens": 4.0})
        ref = bs.simulate(qn, ids, backend="reference", **kw)
        out = bs.simulate(qn, ids, backend="lava", **kw)
        assert ref.events["saturations_total"] > 0, ref.events["saturations"]
        assert set(ref.events["saturations"]) == set(SAT_KEYS)
        assert out.events == ref.events  # counters included
        assert out.settings["saturations_per_layer"] == ref.settings["saturations_per_layer"]
        assert_equal_runs(ref, out)


# -- reference fixed-point vs Lava fixed_pt: EQUAL ---------------------------------------------------
def assert_equal_runs(ref, out):
    for key in ("x_counts", "y_counts", "a_hat", "g_hat", "x_margins", "y_margins", "state"):
        if key in ref.records:
            assert torch.equal(out.records[key], ref.records[key]), key
    assert torch.equal(out.logits, ref.logits)
    for key in ref.stats:
        assert torch.equal(out.stats[key], ref.stats[key]), key
    assert out.events == ref.events


CASES = [(c, g, T) for c in ("graded", "rate", "multispike") for g in ("gain", "product") for T in (1, 4)]


@pytest.mark.parametrize("coding,gating,T", CASES)
def test_reference_and_lava_fixed_point_counts_equal(model_factory, coding, gating, T):
    pytest.importorskip("lava")
    _, _, qn = small_net(model_factory, gating=gating, n_layer=1 + (T == 4))
    gen = torch.Generator().manual_seed(hash((coding, gating, T)) % 1000)
    B, n = (2, 7) if T == 1 else (1, 9)
    ids = torch.randint(0, 256, (B, n), generator=gen)
    kw = dict(timesteps=T, coding=coding, max_spikes=3, mode="fixed-point", record=REC)
    ref = bs.simulate(qn, ids, backend="reference", **kw)
    out = bs.simulate(qn, ids, backend="lava", **kw)
    assert_equal_runs(ref, out)
    assert float(ref.records["x_counts"].sum()) > 0 and float(ref.records["y_counts"].sum()) > 0
    assert out.settings["run_cfg"] == "Loihi2SimCfg(select_tag='fixed_pt')" and out.settings["mode"] == "fixed-point"
    assert out.settings["lava_timesteps"] == 3 + (n - 1) * 2 * T + (1 + (T == 4)) * (2 * T - 1)


def test_plasticity_switches_equal_and_saved_graph_rebuilds(model_factory, tmp_path):
    pytest.importorskip("lava")
    from bdh_spiking.backends import lava as lava_backend

    _, _, qn = small_net(model_factory, gating="product", n_layer=2)
    ids = torch.randint(0, 256, (1, 14), generator=torch.Generator().manual_seed(5))
    kw = dict(timesteps=2, coding="rate", mode="fixed-point", record=("counts", "state"),
              plasticity={"freeze_after": 12, "reset_every": 5, "decay_tau_tokens": 3.0})
    ref = bs.simulate(qn, ids, backend="reference", **kw)
    out = bs.simulate(qn, ids, backend="lava", save_lava_dir=tmp_path / "g", **kw)
    assert_equal_runs(ref, out)
    assert float(ref.records["state"].abs().max()) > 0
    graph = json.loads((tmp_path / "g" / "lava_graph.json").read_text())
    assert graph["settings"]["mode"] == "fixed-point" and "fixed_pt" in graph["lava"]["run_cfg"]
    assert {p["name"]: p["model"] for p in graph["processes"]}["readout"].endswith("PyDenseModelBitAcc")
    again = lava_backend.simulate_saved(tmp_path / "g", ids, record=("counts", "state"))
    assert_equal_runs(ref, again)
    intact = bs.simulate(qn, ids, backend="reference", timesteps=2, coding="rate", mode="fixed-point",
                         record=("counts",))
    assert not torch.equal(intact.records["y_counts"], ref.records["y_counts"])


def test_float_network_is_quantized_on_the_fly_and_says_so(model_factory):
    _, net, qn = small_net(model_factory)
    ids = torch.randint(0, 256, (1, 5), generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="quantizing on the fly"):
        fly = bs.simulate(net, ids, timesteps=2, mode="fixed-point", record=("counts",))
    assert "on the fly" in fly.settings["quantization"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = bs.simulate(qn, ids, timesteps=2, mode="fixed-point", record=("counts",))
    assert torch.equal(fly.logits, done.logits) and torch.equal(fly.records["x_counts"], done.records["x_counts"])
    stale = quantize(net)
    stale.arrays = dict(stale.arrays, decoder=stale.arrays["decoder"] * 2)
    with pytest.raises(ConfigError, match="quantize"):
        bs.simulate(stale, ids, timesteps=2, mode="fixed-point")


# -- fidelity ----------------------------------------------------------------------------------------
def test_fixed_point_fidelity_on_the_tiny_model(model_factory):
    """Bounds measured on TINY (L=2, D=32, H=2, N=64), seeds 0-4, 2 x 32 random tokens: graded T=1
    top-1 vs dense 0.94-1.00, KL 0.0013-0.0018 nats/token; rate T=8 top-1 vs discrete mode 0.83-0.84,
    x counts equal to discrete 91.5-92%, y 95-96%. Asserted with margin."""
    from bdh_spiking.report import dense_reference, fidelity

    model = model_factory(seed=0)
    net = quantize(bs.convert(model, gating="gain", calibration=calibration_bytes(0, 2048)))
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    dense = dense_reference(model, ids)
    graded = fidelity(dense, bs.simulate(net, ids, timesteps=1, coding="graded", mode="fixed-point"), ids)
    assert graded["top1_agreement"] >= 0.9 and graded["kl_per_token"] < 0.01
    vs = compare_to_discrete(net, ids, timesteps=8, coding="rate")
    assert vs["top1_agreement_vs_discrete"] >= 0.75
    assert vs["x_counts_equal_fraction"] >= 0.85 and vs["y_counts_equal_fraction"] >= 0.85
    rate = fidelity(dense, bs.simulate(net, ids, timesteps=8, coding="rate", mode="fixed-point"), ids)
    disc = fidelity(dense, bs.simulate(net, ids, timesteps=8, coding="rate"), ids)
    assert abs(rate["ce_spiking"] - disc["ce_spiking"]) < 0.1 * disc["ce_spiking"]


def test_report_rows_carry_saturation_counters(model_factory):
    from bdh_spiking.report import compare

    model, _, qn = small_net(model_factory, **NARROW)
    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(4))
    rep = compare(model, qn, ids, timesteps=[2], mode="fixed-point")
    assert [r["mode"] for r in rep.runs] == ["fixed-point", "fixed-point"]
    assert all(set(r["saturations"]) == set(SAT_KEYS) and r["saturations_total"] >= 0 for r in rep.runs)
    assert "saturations" in rep.table()


# -- hardware fit ------------------------------------------------------------------------------------
def test_hardware_fit_hand_checked(model_factory, tmp_path):
    _, net, qn = small_net(model_factory)  # L=1, D=16, H=2, N=32, V=256, gain gating
    r = fit(qn, "loihi2")
    rows = {p["name"]: p for p in r["populations"]}
    assert rows["layer0.head0.x"]["synapses"] == 32 * 16 and rows["layer0.head0.y"]["fan_in"] == 17
    assert rows["layer0.head1.attn"]["bytes_per_neuron"] == 32 * 32 // 8  # N plastic synapses of 32 bits
    # embed 16*256 + 2 heads * (x 32*16 + attn 16*32 + y 32*17) + residual 16*64 + readout 256*16
    assert r["totals"]["synapses"] == 4096 + 2 * (512 + 512 + 544) + 1024 + 4096 == 12352
    assert r["totals"]["synaptic_bytes"] == 4096 + 2 * (512 + 2048 + 544) + 1024 + 4096 == 15424
    assert r["totals"]["cores"] == 9 and r["totals"]["chips"] == 1 and r["fits"]
    assert "weight_bits" in r["not_checked"]
    # a made-up chip with small cores: every number below is worked out by hand in the comments
    toml = tmp_path / "tiny_chip.toml"
    entry = 'source = "test", year = 2024'
    toml.write_text(f"""[device]\nname = "tiny chip"\nkind = "neuromorphic"\n[energy]\nsynaptic_op = {{ value = 1e-12, {entry} }}
[capacity]\nneurons_per_core = {{ value = 10, {entry} }}\nsynaptic_memory_bytes_per_core = {{ value = 300, {entry} }}
cores_per_chip = {{ value = 8, {entry} }}\ninput_axons_per_core = {{ value = 40, {entry} }}
weight_bits = {{ value = 8, {entry} }}\ngraded_spike_payload_bits = {{ value = 24, {entry} }}\n""")
    r = fit(qn, str(toml))
    cores = {p["name"]: p["cores"] for p in r["populations"]}
    # embed: 256 B/unit -> 1 per core, 16 cores; x: 16 B -> min(10, 18) = 10 per core, 32/10 -> 4;
    # attn: 128 B -> 2 per core, 16/2 -> 8; y: 17 B -> 10 per core -> 4; residual: 64 B -> 4 per core -> 4;
    # readout: 16 B -> 10 per core, 256/10 -> 26
    assert cores == {"embed": 16, "layer0.head0.x": 4, "layer0.head0.attn": 8, "layer0.head0.y": 4,
                     "layer0.head1.x": 4, "layer0.head1.attn": 8, "layer0.head1.y": 4, "layer0.residual": 4,
                     "readout": 26}
    assert r["totals"]["cores"] == 78 and r["totals"]["chips"] == 10  # ceil(78 / 8)
    assert not r["fits"] and len(r["does_not_fit"]) == 2  # fan-in 256 (embed) and 64 (residual) > 40 axons
    assert all("input_axons_per_core 40" in p for p in r["does_not_fit"])
    # the shipped profiles: Loihi (binary spikes) and TrueNorth (1-bit weights) do not fit; text report
    reports = {x["profile"]: x for x in fit_all(net)}
    assert set(reports) >= {"loihi", "loihi2", "truenorth"} and reports["loihi2"]["fits"]
    assert not reports["loihi"]["fits"] and any("binary spikes only" in p for p in reports["loihi"]["does_not_fit"])
    assert any("at most 1" in p for p in reports["truenorth"]["does_not_fit"])
    text = table(list(reports.values()))
    assert "loihi2" in text and "does not fit" in text


def test_cli_fixed_point_with_hardware_fit(model_factory, tmp_path, capsys):
    from bdh_spiking.checkpoint import save_checkpoint
    from bdh_spiking.cli import convert_main

    model = model_factory(seed=1, n_layer=1, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4)
    ckpt, calib = tmp_path / "m.pt", tmp_path / "c.txt"
    save_checkpoint(ckpt, model, {})
    calib.write_bytes(calibration_bytes(1))
    code = convert_main.run([str(ckpt), "--calibration", str(calib), "--mode", "fixed-point", "-T", "2",
                             "--max-tokens", "16", "--seq-len", "16", "--hardware-fit", "loihi2,truenorth",
                             "--json", str(tmp_path / "r.json"), "--save", str(tmp_path / "q.bdhsnn")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "quantized:" in out.err and "fixed-point" in out.out and "hardware fit" in out.out
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert all("saturations_total" in r for r in runs)
    assert is_quantized(SpikingNetwork.load(tmp_path / "q.bdhsnn"))
