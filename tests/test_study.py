"""bdh-study: the selectivity pipeline on planted data, the memory measure on a copy task, the CLI."""

from __future__ import annotations

import json
import re

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


def test_freezing_removes_the_context_benefit_on_a_copy_task(model_factory):
    """A random string presented twice: with intact plasticity the second copy's loss depends on
    the plastic state; frozen from the start (no synaptic memory) the benefit is 0 by definition,
    and freezing changes the repeated half's loss."""
    from bdh_spiking.backends import simulate
    from bdh_spiking.conversion import convert

    model = model_factory(seed=3)
    rng = np.random.default_rng(0)
    half = 48
    s = rng.integers(97, 123, size=half)
    ids = torch.as_tensor(np.concatenate([s, s]))[None]
    net = convert(model, calibration=bytes(rng.integers(97, 123, size=512).astype(np.uint8)))
    ce = {}
    for name, plast in {"intact": None, "frozen_from_start": {"freeze_after": 0}}.items():
        logits = simulate(net, ids, timesteps=8, coding="multispike", plasticity=plast).logits
        ce[name] = study.token_losses(logits, ids)
    units = {"first": [(0, list(range(1, half)))], "repeat": [(0, list(range(half + 1, 2 * half)))]}
    table = study.memory_table(ce, units, "frozen_from_start", np.random.default_rng(0), n_boot=50)
    assert table["frozen_from_start"]["context_benefit"] == 0.0
    assert abs(table["intact"]["loss_repeat"] - table["frozen_from_start"]["loss_repeat"]) > 1e-3
    assert np.isfinite(table["intact"]["context_benefit"])


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
