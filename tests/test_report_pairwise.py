"""compare() with several backends: the pairwise spike-count table (report.meta['pairwise'],
Report.pairwise_table) and CPU-only backends run on the CPU when CUDA is asked for."""

from __future__ import annotations

import warnings

import pytest
import torch

import bdh_spiking as bs
from bdh_spiking import report as report_mod

from conftest import make_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning)  # norse's torch.jit.script at import

pytest.importorskip("snntorch")
pytest.importorskip("norse")

BACKENDS = ["reference", "snntorch", "norse"]
_CACHE = {}


def _setup():
    if not _CACHE:
        gen = torch.Generator().manual_seed(11)
        model = make_model(seed=1, n_embd=16, mlp_internal_dim_multiplier=8)
        net = bs.convert(model, calibration=bytes(torch.randint(0, 256, (512,), generator=gen).tolist()))
        ids = torch.randint(0, 256, (2, 12), generator=gen)
        _CACHE.update(model=model, net=net, ids=ids)
    return _CACHE["model"], _CACHE["net"], _CACHE["ids"]


def _report():
    if "report" not in _CACHE:
        model, net, ids = _setup()
        _CACHE["report"] = bs.compare(model, net, ids, backends=BACKENDS, timesteps=[3], codings=["multispike"],
                                      max_spikes=2)
    return _CACHE["report"]


def test_pairwise_entries_for_every_pair_and_config():
    rep = _report()
    pairs = rep.meta["pairwise"]
    configs = [("graded", 1), ("multispike", 3)]
    want = [(c, T, a, b) for c, T in configs for a, b in
            [("reference", "snntorch"), ("reference", "norse"), ("snntorch", "norse")]]
    assert sorted((p["coding"], p["timesteps"], p["a"], p["b"]) for p in pairs) == sorted(want)
    for p in pairs:
        assert set(p) >= {"coding", "timesteps", "a", "b", "max_spike_count_diff", "differing",
                          "near_threshold_ties", "non_tie_differences"}
        assert p["non_tie_differences"] == 0  # both backends are exact up to near-threshold ties
    # a pair with the reference repeats that run's own comparison with the reference
    rows = {(r["backend"], r["coding"], r["timesteps"]): r for r in rep.runs}
    for p in pairs:
        if p["a"] == "reference":
            row = rows[(p["b"], p["coding"], p["timesteps"])]
            assert p["max_spike_count_diff"] == row["max_spike_count_diff_vs_reference"]
            assert p["near_threshold_ties"] == row["near_threshold_ties"]


def test_pairwise_matches_direct_comparison():
    """snntorch vs norse, recomputed from two independent simulate calls."""
    model, net, ids = _setup()
    kw = dict(timesteps=3, coding="multispike", max_spikes=2, record=("counts", "margins"))
    ref = bs.simulate(net, ids, backend="reference", **kw)
    a = bs.simulate(net, ids, backend="snntorch", **kw)
    b = bs.simulate(net, ids, backend="norse", **kw)
    direct = report_mod.pair_differences(report_mod._pair_counts(a), report_mod._pair_counts(b), ref, False)
    (entry,) = [p for p in _report().meta["pairwise"]
                if (p["coding"], p["a"], p["b"]) == ("multispike", "snntorch", "norse")]
    assert {k: entry[k] for k in direct} == direct
    # and it is the plain max |count difference| over both populations
    mx = max(float((a.records[f"{p}_counts"] - b.records[f"{p}_counts"]).abs().max()) for p in ("x", "y"))
    assert entry["max_spike_count_diff"] == mx


def test_pairwise_table_text():
    text = _report().pairwise_table()
    lines = text.splitlines()
    assert "backend against backend" in lines[0] and "max|dcount|" in lines[1]
    assert len(lines) == 3 + 6
    assert any("snntorch" in line and "norse" in line and "multispike" in line for line in lines)


def test_single_backend_has_no_pairwise():
    model, net, ids = _setup()
    rep = bs.compare(model, net, ids[:, :4], backends=["reference"], timesteps=[2], include_graded=False)
    assert "pairwise" not in rep.meta and rep.pairwise_table() == ""


def test_cpu_only_backend_runs_on_cpu_when_cuda_asked(monkeypatch):
    model, net, ids = _setup()
    seen = []
    real = report_mod.simulate

    def fake_simulate(net, ids, backend, device, **kw):
        seen.append((backend, str(device)))
        return real(net, ids, backend=backend, device="cpu", **kw)  # this machine may have no GPU

    monkeypatch.setattr(report_mod, "simulate", fake_simulate)
    monkeypatch.setattr(report_mod, "CPU_ONLY_BACKENDS", ("norse",))  # stands in for lava / brian2
    logs = []
    rep = bs.compare(model, net, ids[:, :4], backends=["reference", "norse"], timesteps=[2], include_graded=False,
                     device="cuda", log=logs.append)
    assert seen == [("reference", "cuda"), ("norse", "cpu")]
    rows = {r["backend"]: r for r in rep.runs}
    assert rows["norse"]["device"] == "cpu" and "CPU only" in rows["norse"]["device_note"]
    assert "device_note" not in rows["reference"]
    assert any("norse runs on the CPU only" in m for m in logs)


def test_cli_prints_pairwise_table(run_cli, tmp_path):
    from bdh_spiking.checkpoint import save_checkpoint

    ckpt, calib = tmp_path / "tiny.pt", tmp_path / "calib.txt"
    save_checkpoint(ckpt, make_model(seed=1, n_embd=16, mlp_internal_dim_multiplier=8))
    calib.write_bytes(bytes(range(256)) * 2)
    code, stdout, stderr = run_cli("bdh-convert", ckpt, "--calibration", calib, "--max-tokens", "16",
                                   "--seq-len", "16", "-T", "2", "--no-graded", "--backend", "reference,norse")
    assert code == 0, stderr
    assert "backend against backend" in stdout
    assert any("reference" in line and "norse" in line for line in stdout.split("backend against backend")[1]
               .splitlines())


def test_clipping_warning_never_reads_zero_percent():
    """A tiny clipped share is printed in scientific form, not as '0.000%'; none at 0."""
    from bdh_spiking.clipping import clipping_warning

    run = {"clipped_fraction": 3e-8, "clipped_fraction_x": 0.0, "clipped_fraction_y": 6e-8, "coding": "multispike",
           "max_spikes": 4}
    text = clipping_warning(run, "t")
    assert "0.000%" not in text.split("(")[0] and "3.0e-06%" in text and "y 6.0e-06%" in text
    assert clipping_warning(dict(run, clipped_fraction=0.0), "t") is None
    assert "1.250%" in clipping_warning(dict(run, clipped_fraction=0.0125), "t")
