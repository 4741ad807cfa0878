"""bdh-study: the selectivity pipeline on planted data, the memory measure on a copy task, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bdh_spiking import study
from bdh_spiking.errors import ConfigError


def _brute_auroc(v, y):
    pos, neg = v[y], v[~y]
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return (gt + 0.5 * eq) / (pos.size * neg.size)


def test_auroc_forms_agree_with_brute_force():
    rng = np.random.default_rng(0)
    T, K = 300, 5
    vals = rng.random((K, T)) * (rng.random((K, T)) > 0.4)  # zeros are ties
    lab = rng.random((T, 3)) < 0.1
    dense = study.auroc_dense(vals, lab)
    for k in range(K):
        active = np.nonzero(vals[k] > 0)[0]
        sparse = study.auroc_sparse(vals[k, active][None], active, lab)[0]
        for j in range(3):
            ref = _brute_auroc(vals[k], lab[:, j])
            assert dense[k, j] == pytest.approx(ref, abs=1e-9)
            assert sparse[j] == pytest.approx(ref, abs=1e-9)
    # binary features
    f = rng.random(T) < 0.3
    y = lab[:, 0]
    got = study.auroc_binary(float((f & y).sum()), float(f.sum()), float(y.sum()), T)
    assert got == pytest.approx(_brute_auroc(f.astype(float), y), abs=1e-12)


def _planted(seed=0, T=2000, K=400, planted=20, n_occ=25, occ_len=6):
    """Synthetic increments: sparse, autocorrelated activity; the first `planted` synapses are
    strengthened inside the concept's occurrences."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(T, dtype=bool)
    starts = rng.choice(np.arange(0, T - occ_len, occ_len * 3), size=n_occ, replace=False)
    for s in starts:
        labels[s:s + occ_len] = True
    active = rng.random((K, T)) < rng.uniform(0.05, 0.6, size=(K, 1))
    active = active | np.roll(active, 1, axis=1)  # some autocorrelation
    vals = rng.gamma(2.0, 1.0, size=(K, T)) * active
    boost = np.zeros((K, T))
    boost[:planted] = labels[None] * (1.0 + rng.gamma(2.0, 1.0, size=(planted, T)))
    vals = vals + boost
    return vals, labels


def test_selectivity_finds_planted_synapses_and_not_shuffled_ones():
    vals, labels = _planted()
    K, T = vals.shape
    rng = np.random.default_rng(1)
    offsets = study.shift_offsets(T, 21, 100, rng)
    cols = study.label_columns(labels[:, None], offsets)  # T, 1, 22: observed, decoy, 20 null shifts
    au = study.auroc_dense(vals, cols.reshape(T, -1)).reshape(K, 1, -1)
    activity = (vals > 0).mean(1)
    res = {"obs": au[:, :, 0], "null": au[:, :, 1:], "activity": activity}
    out = study.summarize_selectivity(res, ["planted"], 0.05, 20, lambda i: [i])["planted"]
    sel = study.select(au[:, 0, 0], au[:, 0, 2:], activity, 0.05)["selective"]
    assert sel[:20].all(), "every planted synapse is found"
    assert sel[20:].sum() <= 2, "almost no unplanted synapse is called selective"
    assert {t["synapse"][0] for t in out["top"]} == set(range(20))
    assert out["decoy_selective"] <= 2, "a shifted label (decoy) finds (almost) nothing"
    # shuffled labels: the planted synapses are not selective for a circularly shifted concept
    shuffled = np.roll(labels, 517)
    au_s = study.auroc_dense(vals, study.label_columns(shuffled[:, None], offsets).reshape(T, -1)).reshape(K, 1, -1)
    sel_s = study.select(au_s[:, 0, 0], au_s[:, 0, 2:], activity, 0.05)["selective"]
    assert sel_s.sum() <= 2


def test_benjamini_hochberg_matches_definition():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    keep = study.benjamini_hochberg(p, 0.05)
    assert keep.tolist() == [True, True] + [False] * 8


def test_freezing_removes_the_context_benefit_on_a_copy_task():
    """A model that copies (tests/data/copy_model.pt, trained by tests/copy_task.py: a random
    string of 8-20 letters repeated, period varying, so repeats can only be predicted by looking
    up what followed the current letter earlier). Converted, on sequences it never saw: with
    intact plasticity the repeats are predicted (loss falls by nats, as in the dense model);
    without synaptic memory (frozen from the start, or reset every 4 tokens, shorter than any
    period) the benefit is gone."""
    import bdh_spiking as bs
    from copy_task import copy_task

    model = bs.load_model(Path(__file__).parent / "data" / "copy_model.pt")
    calib, _ = copy_task(16, np.random.default_rng(1))
    net = bs.convert(model, calibration=bytes(calib[:, :64].astype(np.uint8).ravel()))
    seqs, periods = copy_task(8, np.random.default_rng(2))  # other strings than the calibration's
    ids = torch.from_numpy(seqs[:, :64])
    # targets: byte p predicted from p-1; a repeat's first byte (p = period) has no predecessor to look up
    units = {"first": [(b, list(range(1, p))) for b, p in enumerate(periods)],
             "repeat": [(b, list(range(p + 1, 64))) for b, p in enumerate(periods)]}
    conds = {"intact": None, "frozen_from_start": {"freeze_after": 0}, "reset_every_4": {"reset_every": 4}}
    ce = {name: study.token_losses(bs.simulate(net, ids, timesteps=8, plasticity=p).logits, ids)
          for name, p in conds.items()}
    with torch.no_grad():
        ce["dense"] = study.token_losses(model(ids)[0], ids)
    table = study.memory_table(ce, units, "frozen_from_start", np.random.default_rng(0), n_boot=200)
    intact, frozen, reset = table["intact"], table["frozen_from_start"], table["reset_every_4"]
    assert intact["raw_benefit_ci95"][0] > 1.0, intact  # copying works in the spiking network
    assert intact["context_benefit_ci95"][0] > 1.0
    assert abs(intact["loss_repeat"] - table["dense"]["loss_repeat"]) < 0.1  # as in the dense model
    for cond in (frozen, reset):  # no synaptic memory: repeats are no easier than first passes
        assert abs(cond["raw_benefit"]) < 0.2 and cond["raw_benefit_ci95"][1] < 0.3, cond
        assert cond["loss_repeat"] > intact["loss_repeat"] + 1.0


def test_word_units_definition():
    u = study.word_units(b"Gremio said: good Gremio, good morrow. GREMIO")
    # 'Gremio' recurs (exact bytes), 'good' recurs; 'GREMIO' differs in case: not a repeat
    assert len(u["first"]) == 2 and len(u["repeat"]) == 2
    assert u["repeat"][0] == list(range(19, 24))  # letters after the first of the second 'Gremio'


def test_concept_matching():
    data = b"GREMIO:\nGood morrow, Gremio. Gremios the theme\n"
    assert len(study.concept_occurrences(data, "GREMIO")) == 2  # whole word, any case
    assert len(study.concept_occurrences(data, "the")) == 1
    assert len(study.concept_occurrences(data, ":\n")) == 1
    assert study.parse_concepts(["a\\nb", "", "x"]) == ["a\nb", "x"]


def test_bad_settings_raise():
    with pytest.raises(ConfigError):
        study.StudySettings(out="x", taus_ms=(0.0,)).validate()
    with pytest.raises(ConfigError):
        study.StudySettings(out="x", token_ms=4.0, timesteps=8, dt_ms=1.0).validate()


def test_cli_error_is_one_line(run_cli, tmp_path):
    """A concepts file with no occurrence in the text: one line, exit 2 (other bad settings: above)."""
    concepts = tmp_path / "c.txt"
    concepts.write_text("zyzzyvaqq\nxqxqxq\n")
    rc, out, err = run_cli("bdh-study", "--out", tmp_path / "o", "--concepts", concepts, timeout=60)
    assert rc == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1


def test_quick_run_writes_report_matching_json(run_cli, tmp_path):
    out_dir = tmp_path / "study"
    rc, out, err = run_cli("bdh-study", "--quick", "--out", out_dir, timeout=240)
    assert rc == 0, err[-2000:]
    res = json.loads((out_dir / "results.json").read_text())
    report = (out_dir / "report.md").read_text()
    for fig in res["figures"]:
        assert (out_dir / fig).stat().st_size > 1000
        assert fig in report
    assert out.splitlines() == study.summary_lines(res)
    # spot-check: the printed numbers are the JSON's
    m = re.search(r"exp2 intact: loss_repeat=([0-9.]+)", out)
    assert float(m.group(1)) == pytest.approx(res["experiment2"]["table"]["intact"]["loss_repeat"], abs=1e-4)
    assert f"Seed: {res['meta']['settings']['seed']}" in report


def test_passage_window_prefers_balanced_windows():
    labels = np.zeros((2 * 16, 1), dtype=bool)
    labels[0:8] = True  # passage 0: concept fills bytes 0-7
    labels[16 + 10:16 + 13] = True  # passage 1: three concept bytes
    assert study.passage_window(labels, 16, 8) == (0, 4)  # bytes 4-11: four with, four without


def test_increment_scores_rank_a_planted_synapse_first():
    rng = np.random.default_rng(0)
    T, L, H, N, D = 40, 2, 3, 8, 5
    a = rng.random((T, L, H, N)) * 0.1
    xres = rng.normal(size=(T, L, D)) * 0.1
    lab = np.zeros(T, dtype=bool)
    lab[::5] = True
    a[lab, 1, 2, 6] = 2.0  # pair k=3 of head 2 in layer 1 fires on the concept
    xres[lab, 1, 4] = 3.0  # residual unit d=4 of layer 1 is large there
    scores = study.increment_scores(a, xres, lab)
    n_pairs = N // 2
    best = int(np.argmax(scores))
    assert best == ((1 * H + 2) * D + 4) * n_pairs + 3
    assert study.synapse_of(best, (L, H, D, n_pairs)) == [1, 2, 4, 3]
    assert study.synapse_of(best, (L, H, D, n_pairs), layers=[2, 3]) == [3, 2, 4, 3]


def test_biophysical_runs_on_a_tiny_network(model_factory):
    """The brian2 biophysical window runs (numpy target): rates, the chosen memory points and the
    passage-scale selectivity. Frozen from the start, the plastic read-out is 0 in both networks,
    so their logits (and losses) must agree exactly."""
    pytest.importorskip("brian2")
    from bdh_spiking.conversion import convert
    from bdh_spiking.semantics import fold_weights

    model = model_factory(seed=5, n_layer=1, n_embd=16, mlp_internal_dim_multiplier=4)
    rng = np.random.default_rng(0)
    # the biophysical window takes thresholds designed for one spike per step (issue 15)
    net = convert(model, calibration=bytes(rng.integers(97, 123, size=256).astype(np.uint8)), design_max_spikes=1)
    # two passages of 16; the window closest to half concept bytes lies in the second
    text = b"zzzzzzzzzzzzzzzz" + b"a cat, the hat s"
    ids = torch.tensor(list(text)).view(2, 16)
    labels, _ = study.concept_labels(text, ["the", "hat"])
    s = study.StudySettings(out="unused", bio_tokens=8, timesteps=2, taus_ms=(50.0,), top_k=3, token_ms=30.0)
    w = fold_weights(net, torch.device("cpu"), torch.float64)
    out = study.biophysical_runs(model, net, ids, labels, ["the", "hat"], w, s, 16, lambda *_: None)
    win = out["window"]
    assert win["passage"] == 1
    assert win["text"].encode("latin-1") == text[16 + win["offset"]:16 + win["offset"] + 8]
    mem = out["memory"]["loss_all"]
    assert set(mem) == {"intact", "frozen_from_start", "decay_tau_50ms"}
    assert mem["frozen_from_start"]["biophysical"] == pytest.approx(mem["frozen_from_start"]["reference"], abs=1e-9)
    assert mem["decay_tau_50ms"]["biophysical"] != mem["intact"]["biophysical"]  # the decay reached Brian2
    assert all(np.isfinite(r["biophysical"]) for r in mem.values())
    assert out["x"]["mean_hz"] > 0 and out["tokens"] == 8
    sel = out["selectivity"]
    assert sel, "a balanced window holds at least one concept"
    window_labels = labels[16 + win["offset"]:16 + win["offset"] + 8]
    for ci, c in enumerate(["the", "hat"]):
        if c in sel:
            assert sel[c]["concept_bytes"] == int(window_labels[:, ci].sum())
    for d in sel.values():
        assert set(d["top_k_overlap"]) == {"dense~reference", "dense~biophysical", "reference~biophysical"}
        assert all(np.isnan(v) or 0.0 <= v <= 1.0 for v in d["top_k_overlap"].values())
        for syn in d["top"]["reference"]:
            assert 0 <= syn[0] < 1 and 0 <= syn[1] < net.dims.H and 0 <= syn[2] < 16 and 0 <= syn[3] < net.dims.N // 2


@pytest.mark.slow  # ~3 minutes on 2 cores; test_biophysical_runs_on_a_tiny_network covers the window
def test_quick_run_with_the_biophysical_window(run_cli, tmp_path):
    """--quick plus a 4-byte brian2 biophysical window (numpy target in tests; about a minute): the
    three experiments' biophysical parts are in the JSON, the report and the printed lines."""
    pytest.importorskip("brian2")
    out_dir = tmp_path / "study"
    rc, out, err = run_cli("bdh-study", "--quick", "--bio-tokens", "4", "--out", out_dir, timeout=1200)
    assert rc == 0, err[-2000:]
    res = json.loads((out_dir / "results.json").read_text())
    report = (out_dir / "report.md").read_text()
    mem = res["experiment2"]["biophysical_confirm"]["memory"]["loss_all"]
    assert mem["frozen_from_start"]["biophysical"] == pytest.approx(mem["frozen_from_start"]["reference"], abs=1e-9)
    assert res["experiment3"]["biophysical"]["tokens"] == 4
    assert "selectivity" in res["experiment1"]["biophysical"]
    assert "Chosen points in the brian2 biophysical network" in report
    assert "Same synapses in the brian2 biophysical network?" in report
    for fig in ("biophysical_raster.png", "biophysical_weights.png"):
        assert fig in res["figures"] and (out_dir / fig).stat().st_size > 1000 and fig in report
    assert out.splitlines() == study.summary_lines(res)
