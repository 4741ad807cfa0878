"""Energy model: event counts checked by hand on a tiny network, linear pricing, unavailable figures,
identical counts across backends, dense baselines, and the bdh-energy / bdh-convert --energy CLIs."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import bdh_spiking as bs
from bdh_spiking.backends import available, backend_names
from bdh_spiking.checkpoint import default_model_path, save_checkpoint
from bdh_spiking.energy import (compare_event_counts, dense_activity, dense_macs, estimate, parse_profiles,
                                price_dense, price_spiking, spiking_counts)
from bdh_spiking.errors import ProfileError
from bdh_spiking.model import rope_cos_sin
from bdh_spiking.profiles import load_profile
from bdh_spiking.text import shipped_text_path

from conftest import corpus_text, make_model

T_STEPS = 4
IDS = torch.tensor([[5, 77, 200]])  # 3 tokens


def tiny_net(gating="gain"):
    model = make_model(n_layer=1, n_embd=8, n_head=2, mlp_internal_dim_multiplier=2)
    return model, bs.convert(model, gating=gating, calibration=corpus_text(400).encode())


@pytest.fixture(scope="module", params=["gain", "product"])
def tiny(request):
    model, net = tiny_net(request.param)
    result = bs.simulate(net, IDS, backend="reference", timesteps=T_STEPS, record=("counts",))
    return model, net, result


def write_profile(path, kind="neuromorphic", **values):
    lines = ["[device]", 'name = "test chip"', f'kind = "{kind}"', "", "[energy]"]
    lines += [f'{k} = {{ value = {v!r}, source = "test", year = 2024 }}' for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def hand_counts(net, result):
    """Every count from the recorded spike counts and the formulas of docs/energy.md."""
    d = net.dims
    L, H, D, N, V = d.L, d.H, d.D, d.N, d.V
    xc, yc = result.records["x_counts"], result.records["y_counts"]  # B,T,L,H,N
    tok = IDS.numel()
    X, Y = float(xc.sum()), float(yc.sum())
    xa, ya = float((xc > 0).sum()), float((yc > 0).sum())
    # non-zero rotated payloads: q_2k = a_2k c - a_2k+1 s, q_2k+1 = a_2k+1 c + a_2k s
    cos, sin = rope_cos_sin(torch.as_tensor(net.arrays["freqs"]), torch.arange(IDS.shape[1]))
    ac = 0
    for t in range(IDS.shape[1]):
        for layer in range(L):
            for h in range(H):
                for k in range(0, N, 2):
                    a0, a1 = bool(xc[0, t, layer, h, k] > 0), bool(xc[0, t, layer, h, k + 1] > 0)
                    c, s = float(cos[t, k]) != 0.0, float(sin[t, k]) != 0.0
                    ac += int((a0 and c) or (a1 and s)) + int((a1 and c) or (a0 and s))
    gain = net.gating == "gain"
    gnz = ya if gain else float(((xc > 0) & (yc > 0)).sum())
    fan_y = D if gain else 1
    ln_values, ln_norms = D + L * (H * D + 2 * D), 1 + L * (H + 2)
    return {
        "x_spikes": X, "y_spikes": Y, "spikes": X + Y, "x_active": xa, "y_active": ya,
        "active_columns": float(ac), "g_nonzero": gnz,
        "synaptic_events": X * (2 * D + 1) + Y * fan_y,
        "graded_encoder_events": tok * L * 2 * D * H * N,
        "graded_lm_head_events": tok * D * V,
        "graded_decoder_events": 0.0 if gain else gnz * D,
        "graded_synaptic_events": tok * (L * 2 * D * H * N + D * V) + (0.0 if gain else gnz * D),
        "neuron_updates": tok * L * 2 * H * N * T_STEPS,
        "neuron_updates_inactive": (tok * L * H * N - xa) * T_STEPS if gain else 0.0,
        "plastic_updates": ac * D,
        "plastic_updates_rotating": tok * L * H * D * N,
        "routed_spikes": X + Y,
        "routed_graded_packets": tok * (L * (D + H * D) + D) + (0.0 if gain else gnz),
        "arith_adds": tok * 3 * ln_values + tok * L * D + ac,
        "arith_mults": tok * (2 * ln_values + ln_norms) + (xa if gain else gnz) + 2 * ac,
        "spikes_per_synapse": (X * (2 * D + 1) + Y * fan_y) / (tok * L * H * N * ((2 * D + 1) + fan_y)),
        "spike_rate": (X + Y) / (tok * L * 2 * H * N * T_STEPS),
    }


def test_counts_match_hand_computation(tiny):
    _, net, result = tiny
    want = hand_counts(net, result)
    assert want["x_spikes"] > 0 and want["y_spikes"] > 0 and want["active_columns"] > 0  # not vacuous
    assert want["x_active"] < IDS.numel() * net.dims.H * net.dims.N  # some x silent: gating counted
    got = spiking_counts(result, net)
    tok = IDS.numel()
    for key, value in want.items():
        scale = 1 if key in ("spikes_per_synapse", "spike_rate") else tok
        assert got[key] * scale == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert got["neuron_updates_active"] + got["neuron_updates_inactive"] == got["neuron_updates"]


def test_loihi_energy_by_hand(tiny):
    _, net, result = tiny
    c = hand_counts(net, result)
    tok = IDS.numel()
    lo, ref = load_profile("loihi"), load_profile("digital45nm")
    j = lo.joules
    graded = j("synaptic_op") + ref.joules("mult")  # no graded_synaptic_op on Loihi: op + FP32 multiply
    active = c["neuron_updates"] - c["neuron_updates_inactive"]
    want = (c["synaptic_events"] * j("synaptic_op") + c["graded_synaptic_events"] * graded
            + active * j("neuron_update") + c["neuron_updates_inactive"] * j("neuron_update_inactive")
            + c["plastic_updates"] * j("plastic_update")
            + (c["routed_spikes"] + c["routed_graded_packets"]) * j("spike_hop")
            + c["arith_adds"] * ref.joules("add") + c["arith_mults"] * ref.joules("mult")) / tok
    row = price_spiking(spiking_counts(result, net), lo, ref)
    assert row["energy_per_token_j"] == pytest.approx(want, rel=1e-12)
    assert row["unavailable"] == []
    assert sum(v["energy_j"] for v in row["components"].values()) == pytest.approx(want, rel=1e-12)
    assert row["plastic_energy_rotating_per_token_j"] == pytest.approx(
        c["plastic_updates_rotating"] / tok * j("plastic_update"), rel=1e-12)
    # the assumptions made to price Loihi are stated in the row
    assert any("graded_synaptic_op" in n for n in row["notes"])
    assert any("digital45nm" in n for n in row["notes"])


def test_energy_scales_linearly_with_each_constant(tmp_path, tiny):
    _, net, result = tiny
    counts = spiking_counts(result, net)
    base = dict(synaptic_op=2e-11, graded_synaptic_op=3e-11, spike_hop=4e-12, neuron_update=8e-11,
                neuron_update_inactive=5e-11, plastic_update=1.2e-10, add=1e-12, mult=3e-12)
    row0 = price_spiking(counts, load_profile(write_profile(tmp_path / "base.toml", **base)))
    assert row0["unavailable"] == []
    assert all("routing" in n for n in row0["notes"])  # the profile prices everything itself: no fallback
    changed = {"synaptic_op": ["synaptic"], "graded_synaptic_op": ["graded_synaptic"], "spike_hop": ["routing"],
               "plastic_update": ["plastic_update"], "add": ["arithmetic_add"], "mult": ["arithmetic_mult"],
               ("neuron_update", "neuron_update_inactive"): ["neuron_update"]}
    for names, components in changed.items():
        names = names if isinstance(names, tuple) else (names,)
        values = dict(base)
        for n in names:
            values[n] *= 2
        row = price_spiking(counts, load_profile(write_profile(tmp_path / f"x_{names[0]}.toml", **values)))
        for comp, c0 in row0["components"].items():
            factor = 2 if comp in components else 1
            assert c0["energy_j"] > 0, comp
            assert row["components"][comp]["energy_j"] == pytest.approx(factor * c0["energy_j"], rel=1e-12), (names, comp)
        extra = sum(row0["components"][c]["energy_j"] for c in components)
        assert row["energy_per_token_j"] == pytest.approx(row0["energy_per_token_j"] + extra, rel=1e-12)


def test_graded_coding_prices_spikes_as_graded_events(tmp_path):
    _, net = tiny_net("gain")
    result = bs.simulate(net, IDS, backend="reference", timesteps=T_STEPS, coding="graded", record=("counts",))
    counts = spiking_counts(result, net)
    xc, yc = result.records["x_counts"], result.records["y_counts"]
    # one graded spike per step while the current is positive
    assert counts["x_spikes"] * IDS.numel() == float((xc > 0).sum()) * T_STEPS > 0
    assert counts["synaptic_events_graded_coding"]
    prof = load_profile(write_profile(tmp_path / "g.toml", synaptic_op=2e-11, graded_synaptic_op=3e-11))
    row = price_spiking(counts, prof)
    assert row["components"]["synaptic"]["joules_each"] == 3e-11
    assert row["components"]["synaptic"]["energy_j"] == pytest.approx(counts["synaptic_events"] * 3e-11, rel=1e-12)
    assert not row["break_even"]["binary_spikes"]
    rate = price_spiking(spiking_counts(bs.simulate(net, IDS, timesteps=T_STEPS), net), prof)
    assert rate["components"]["synaptic"]["joules_each"] == 2e-11 and rate["break_even"]["binary_spikes"]


def test_unavailable_entries_are_reported_not_zero(tmp_path, tiny):
    _, net, result = tiny
    counts = spiking_counts(result, net)
    sparse_profile = load_profile(write_profile(tmp_path / "only_syn.toml", synaptic_op=2e-11))
    row = price_spiking(counts, sparse_profile, load_profile("digital45nm"))
    assert row["energy_per_token_j"] is None
    for comp in ("neuron_update", "plastic_update", "routing"):
        assert row["components"][comp]["energy_j"] is None, comp
        assert any(u.startswith(comp) for u in row["unavailable"]), comp
    known = sum(c["energy_j"] for c in row["components"].values() if c["energy_j"] is not None)
    assert row["energy_per_token_lower_bound_j"] == pytest.approx(known, rel=1e-12) and known > 0
    # without the 45 nm fallback, neither graded events nor arithmetic can be priced
    bare = price_spiking(counts, sparse_profile, None)
    assert bare["components"]["graded_synaptic"]["energy_j"] is None
    assert bare["components"]["arithmetic_add"]["energy_j"] is None
    # an entry present with value 0 (TrueNorth: inside its total-energy synaptic_op) is a real zero
    tn = price_spiking(counts, load_profile("truenorth"), load_profile("digital45nm"))
    assert tn["components"]["neuron_update"]["energy_j"] == 0.0
    assert tn["components"]["plastic_update"]["energy_j"] is None
    # dense INT8 on a CPU profile without mac_int8: unavailable, shown as n/a in the table
    dense = price_dense(net.dims, load_profile("cpu"), "recurrent-int8")
    assert dense["energy_per_token_j"] is None and dense["components"]["mac"]["energy_j"] is None


def test_dense_mac_formulas():
    dims = {"L": 4, "H": 4, "D": 128, "N": 512, "V": 256}
    assert dense_macs(dims, "recurrent") == 4 * (3 * 4 * 128 * 512 + 2 * 4 * 128 * 512) + 128 * 256 == 5_275_648
    assert dense_macs(dims, "parallel", seq_len=32) == 4 * (3 * 4 * 128 * 512 + 4 * 32 * (512 + 128)) + 128 * 256
    sparse = dense_macs(dims, "recurrent", density={"a": 0.3, "q": 0.5, "g": 0.1})
    assert sparse == pytest.approx(4 * (2 + 0.5 * 2 + 0.1) * 4 * 128 * 512 + 128 * 256)
    d45 = load_profile("digital45nm")
    row = price_dense(dims, d45, "recurrent-fp32")
    c = row["components"]
    assert c["mac"]["energy_j"] == pytest.approx(5_275_648 * 4.6e-12, rel=1e-12)
    assert row["energy_per_token_j"] == pytest.approx(c["mac"]["energy_j"] + c["arithmetic_add"]["count"] * 0.9e-12
                                                      + c["arithmetic_mult"]["count"] * 3.7e-12, rel=1e-12)
    int8 = price_dense(dims, d45, "recurrent-int8")
    assert int8["components"]["mac"]["energy_j"] == pytest.approx(5_275_648 * 0.23e-12, rel=1e-12)


def test_dense_activity_is_measured(tiny):
    model, net, _ = tiny
    dens = dense_activity(model, IDS)
    assert 0.0 < dens["g"] <= dens["a"] <= 1.0 and 0.0 < dens["q"] <= 1.0


def test_backends_give_identical_counts_and_energy():
    model, net = tiny_net("gain")
    chunked = bs.simulate(net, IDS, backend="reference", timesteps=T_STEPS)
    stepwise = bs.simulate(net, IDS, backend="reference", timesteps=T_STEPS, stepwise=True)
    same = compare_event_counts({"reference": chunked, "reference-stepwise": stepwise})
    assert same["compared"] and same["identical"] and same["max_abs_difference"] == 0.0
    doctored = copy.deepcopy(stepwise)
    doctored.stats["y_spikes"][0, 1] += 1
    diff = compare_event_counts({"reference": chunked, "other": doctored})
    assert not diff["identical"] and diff["max_abs_difference"] == 1.0 and "y_spikes" in diff["worst_key"]

    rep = estimate(model, net, IDS, backends="all", profiles="loihi,truenorth", timesteps=T_STEPS)
    cb = rep.meta["cross_backend"]
    text = rep.table()
    if len(cb["backends"]) > 1:
        verdict = "yes" if cb["identical"] else "no"
        assert f"event counts identical across backends: {verdict}, max difference {cb['max_abs_difference']:g}" in text
    else:
        assert "event counts identical across backends: n/a" in text
    for prof in ("loihi", "truenorth"):
        rows = {r["backend"]: r for r in rep.rows if r["kind"] == "spiking" and r["profile"] == prof}
        assert list(rows) == cb["backends"]
        for b, r in rows.items():  # identical counts <=> identical energy
            same_counts = rep.meta["counts"][b] == rep.meta["counts"]["reference"]
            same_energy = r["energy_per_token_lower_bound_j"] == rows["reference"]["energy_per_token_lower_bound_j"]
            assert same_counts == same_energy, (prof, b)
    # dense baselines are always there, on the conventional profiles
    dense = {(r["profile"], r["variant"]) for r in rep.rows if r["kind"] == "dense"}
    assert ("gpu", "recurrent-fp32") in dense and ("digital45nm", "recurrent-int8") in dense
    assert ("cpu", "recurrent-sparse-fp32") in dense and ("digital45nm", "parallel-fp32") in dense
    assert "Dampfhoffer" in text and "Yan" in text and "n/a" in text  # truenorth plastic / cpu int8
    json.loads(rep.to_json())


@pytest.mark.parametrize("backend", [b for b in backend_names() if b != "reference"])
def test_every_backend_counts_the_same_events_as_reference(backend):
    """Discrete mode: every backend's spikes, hence event counts and energy, equal the reference's."""
    if not available(backend):
        pytest.skip(f"backend {backend} is not installed")
    model, net = tiny_net("gain")
    results = {b: bs.simulate(net, IDS, backend=b, timesteps=T_STEPS) for b in ("reference", backend)}
    same = compare_event_counts(results)
    assert same["identical"], same
    prof = load_profile("loihi")
    rows = [price_spiking(spiking_counts(r, net), prof) for r in results.values()]
    assert rows[0]["energy_per_token_j"] == rows[1]["energy_per_token_j"]


def test_parse_profiles():
    assert [p.key for p in parse_profiles("loihi, digital45nm")] == ["loihi", "digital45nm"]
    assert len(parse_profiles("all")) >= 8
    with pytest.raises(ProfileError, match="unknown hardware profile"):
        parse_profiles("loihi,nochip")


# -- CLI -----------------------------------------------------------------------------------


def one_line_error(rc, stderr, *phrases):
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for p in phrases:
        assert p in lines[0], stderr


def test_cli_malformed_profile_is_one_line_exit_2(run_cli, tmp_path):
    bad = tmp_path / "my_chip.toml"
    bad.write_text('[device]\nname = "x"\nkind = "neuromorphic"\n[energy]\n'
                   'synaptic_op = { value = "abc", source = "s", year = 2020 }\n')
    rc, _, stderr = run_cli("bdh-energy", "--profile", bad, "--max-tokens", 16, cwd=tmp_path)
    one_line_error(rc, stderr, "my_chip.toml", "energy.synaptic_op.value")



def test_convert_unknown_profile_is_one_line_exit_2(capsys):
    from bdh_spiking.cli import convert_main

    rc = convert_main.run(["--energy", "--profile", "loihi,nochip"])  # fails before any model is loaded
    one_line_error(rc, capsys.readouterr().err, "nochip", "valid names")


REQUIRED = ("backend", "profile", "energy_per_token_j", "synaptic_events_per_token", "neuron_updates_per_token",
            "plastic_updates_per_token", "spikes_per_token")


def test_cli_end_to_end_default_model(run_cli, tmp_path):
    if not default_model_path().is_file():
        pytest.skip("the shipped default model is not built yet")
    out = tmp_path / "energy.json"
    # the shipped default model; a short calibration text keeps the conversion fast on a busy machine
    calibration = tmp_path / "calibration.txt"
    calibration.write_bytes(shipped_text_path("calibration").read_bytes()[:1024])
    rc, stdout, stderr = run_cli("bdh-energy", "--calibration", calibration, "--max-tokens", 64, "--seq-len", 32, "-T", 4, "--backend", "reference",
                                 "--profile", "loihi,digital45nm", "--json", out, "--plots", tmp_path / "plots",
                                 cwd=tmp_path)
    assert rc == 0, stderr
    assert "Traceback" not in stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    for r in rows:
        for key in REQUIRED:
            assert key in r, key
    spiking = [r for r in rows if r["kind"] == "spiking"]
    assert [(r["backend"], r["profile"]) for r in spiking] == [("reference", "loihi"), ("reference", "digital45nm")]
    loihi = spiking[0]
    assert loihi["energy_per_token_j"] > 0 and math.isfinite(loihi["energy_per_token_j"])
    assert spiking[1]["energy_per_token_j"] is None  # digital45nm: no neuron/plastic/hop figures
    d = data["meta"]["dims"]
    assert loihi["neuron_updates_per_token"] == d["L"] * 2 * d["H"] * d["N"] * 4
    assert loihi["spikes_per_token"] > 0 and loihi["synaptic_events_per_token"] > loihi["spikes_per_token"]
    dense = {(r["profile"], r["variant"]): r for r in rows if r["backend"] == "dense"}
    assert {p for p, _ in dense} == {"gpu", "cpu", "digital45nm"}
    assert dense[("gpu", "recurrent-fp32")]["macs_per_token"] == dense_macs(d, "recurrent")
    assert (tmp_path / "plots" / "energy_per_token.png").stat().st_size > 0
    assert "event counts identical across backends" in stdout and "loihi" in stdout


def test_cli_convert_energy_flag(tmp_path, capsys):
    from bdh_spiking.cli import convert_main

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, make_model(n_layer=1, n_embd=8, n_head=2, mlp_internal_dim_multiplier=2))
    calibration = tmp_path / "calibration.txt"
    calibration.write_text(corpus_text(600))
    rc = convert_main.run([str(ckpt), "--calibration", str(calibration), "--max-tokens", "24", "--seq-len", "12",
                           "-T", "2", "--no-graded", "--energy", "--profile", "loihi"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    assert "energy per token" in stdout
    lines = [line for line in stdout.splitlines() if line.strip().startswith("reference") and "loihi" in line]
    assert len(lines) == 1 and "e-" in lines[0]


def biophysical_result(result, timesteps, **settings):
    """``result`` as if brian2 had run it in mode biophysical (30 ms per byte at dt 0.1 ms) with -T timesteps."""
    bio = copy.copy(result)
    bio.settings = {"timesteps": timesteps, "coding": "lif-rate", "mode": "biophysical", "gating": result.settings["gating"],
                    "biophysical": {"token_ms": 30.0, "dt_ms": 0.1}, **settings}
    return bio


@pytest.mark.parametrize("extra", [{}, {"sim_steps_per_token": 300}, {"token_ms": 30.0, "dt_ms": 0.1}])
def test_biophysical_rates_ignore_the_T_flag(tiny, extra):
    """Issue 14 (1): in mode biophysical -T means nothing; rates divide by the simulator's steps per token."""
    _, net, result = tiny
    one = spiking_counts(biophysical_result(result, 1, **extra), net)
    eight = spiking_counts(biophysical_result(result, 8, **extra), net)
    assert one["spike_rate"] == eight["spike_rate"]
    assert one["timesteps"] == eight["timesteps"] == 300
    neurons = net.dims.L * 2 * net.dims.H * net.dims.N
    assert one["spike_rate"] == pytest.approx(result.events["spikes"] / (IDS.numel() * neurons * 300), rel=1e-12)
    assert one["neuron_updates_inactive"] == eight["neuron_updates_inactive"]
    lo = load_profile("loihi")
    assert price_spiking(one, lo)["break_even"] == price_spiking(eight, lo)["break_even"]
    # the discrete modes still divide by their timesteps
    assert spiking_counts(result, net)["timesteps"] == T_STEPS
