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


def _planted_text(seed=0, n_words=700):
    """Random words; the concept 'kate' shares its letters with other words ('take', 'teak', 'kin')."""
    rng = np.random.default_rng(seed)
    vocab = ["kate", "take", "teak", "tank", "kin", "at", "eat", "sea", "tea", "bat", "cat", "net"]
    prob = np.array([4, 2, 1, 1, 1, 3, 3, 2, 3, 2, 2, 2], dtype=float)
    words = rng.choice(vocab, size=n_words, p=prob / prob.sum())
    return " ".join(words).encode()


def _planted_rows(ids, lab, rng, n_planted=15, n_decoy=15, n_background=200):
    """Per-token increments: planted rows larger on the concept's tokens than on the same letters
    elsewhere; decoy rows tuned to the byte 'k' (mostly inside the concept), independent of the
    concept given the byte; background noise; byte-determined rows (as in layer 0)."""
    n = ids.size
    noise = lambda k: rng.gamma(2.0, 1.0, size=(k, n)) * (rng.random((k, n)) < 0.7)  # noqa: E731
    planted = noise(n_planted) + lab[None] * (1.0 + rng.gamma(2.0, 1.0, size=(n_planted, n)))
    decoy = 0.3 * noise(n_decoy) + 5.0 * (ids == ord("k"))[None]
    byte_fn = np.stack([(ids % m).astype(float) for m in (3, 5, 7, 11)])
    return np.concatenate([planted, decoy, noise(n_background), byte_fn]), n_planted, n_decoy


def test_byte_controlled_null_finds_planted_concepts_not_byte_tuned_decoys():
    """The stratified permutation null (labels permuted within byte strata, maxT) finds synapses that
    carry the concept beyond its letters and calls none of the byte-tuned decoys selective; the old
    circular-shift null, pooled per activity stratum, calls the byte-tuned decoys selective."""
    from bdh_spiking.study.concept_test import family_scores, prepare_labels, summarize_family

    text = _planted_text()
    n = len(text) // 100 * 100
    ids = np.frombuffer(text[:n], dtype=np.uint8).astype(np.int64)
    labels, _ = study.concept_labels(text[:n], ["kate"])
    lab = labels[:, 0]
    rng = np.random.default_rng(3)
    rows, n_planted, n_decoy = _planted_rows(ids, lab, rng)
    prepared = prepare_labels(labels, ids, 100, [517, 1033], 200, rng)
    scores = family_scores([(rows, [[0, 0, 0, i] for i in range(rows.shape[0])])], prepared)
    summ, found = summarize_family(scores, ["kate"], 2, 0.05, 5, [0])
    byte_null = found[("kate", "byte")]
    assert byte_null[:n_planted].all(), "every planted synapse is found"
    assert not byte_null[n_planted:n_planted + n_decoy].any(), "no byte-tuned decoy is called selective"
    assert byte_null[n_planted:].sum() == 0, "nothing unplanted (family-wise at 0.05)"
    assert (scores["byte"]["z"][-4:] == 0).all(), "a value fixed by the byte is untestable: z = 0 (layer 0)"
    assert summ["kate"]["byte"]["global_p"] <= 1 / 201 + 1e-12
    assert summ["kate"]["decoy"]["discoveries_mean"] <= 1.0  # shifted labels: (almost) nothing
    assert found[("kate", "bigram")][:n_planted].sum() >= n_planted // 2  # the stricter null keeps power here
    # the old null: circular shifts, pooled per activity stratum, BH; the byte-tuned decoys pass it
    offsets = study.shift_offsets(n, 20, 100, np.random.default_rng(1))
    au = study.auroc_dense(rows, study.label_columns(labels, offsets).reshape(n, -1))
    old = study.select(au[:, 0], au[:, 1:], (rows > 0).mean(1), 0.05)["selective"]
    assert old[n_planted:n_planted + n_decoy].all(), "the circular-shift null calls byte tuning selective"


def test_stratified_statistic_matches_brute_force():
    """z and the stratified AUROC against a direct computation (midranks, ties, exact permutation variance)."""
    rng = np.random.default_rng(0)
    n = 120
    strata = rng.integers(0, 4, size=n)
    lab = rng.random(n) < 0.3
    vals = np.round(rng.random((3, n)) * 4) / 4  # many ties
    prep = study.stratified_label(lab, strata, 50, rng)
    sc = study.stratified_scores(study.centered_ranks(vals, strata), study.dense_codes(strata), prep)
    for r in range(3):
        u = pairs = var = 0.0
        for s in np.unique(strata):
            m = strata == s
            pos, neg = vals[r, m & lab], vals[r, m & ~lab]
            if pos.size == 0 or neg.size == 0:
                continue
            u += (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum() - pos.size * neg.size / 2
            pairs += pos.size * neg.size
            from scipy.stats import rankdata

            rk = rankdata(vals[r, m]) - (m.sum() + 1) / 2
            var += pos.size * neg.size / (m.sum() * (m.sum() - 1)) * (rk ** 2).sum()
        assert sc["auroc"][r] == pytest.approx(0.5 + u / pairs, abs=1e-9)
        assert sc["z"][r] == pytest.approx(u / np.sqrt(var), abs=1e-6)
    # permutations keep each stratum's label count
    for p in range(prep.permuted.shape[1]):
        for s in np.unique(strata[prep.tokens]):
            m = strata[prep.tokens] == s
            assert prep.permuted[m, p].sum() == prep.observed[m].sum()


def test_read_path_sigma_identity_and_phase_free_limit():
    """The y drive equals sigma_t q_t / sqrt(var + eps) (identity); with every oscillator frequency 0 the
    phases vanish, so the phase-free sigma explains all of it, and values from another passage do not."""
    rng = np.random.default_rng(0)
    n_pass, seq_len, L, H, N, D = 2, 24, 1, 2, 8, 6
    n = n_pass * seq_len
    x = rng.normal(size=(n, L, D))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)  # residual inputs leave a LayerNorm
    a = np.maximum(rng.normal(size=(n, L, H, N)), 0)
    act = study.Activity("t", a.astype(np.float32), a.astype(np.float32), x.astype(np.float32))
    enc_v = rng.normal(size=(H, D, N))
    ids = rng.integers(97, 100, size=n)
    rot = study.read_path_sigma(act, ids, enc_v, np.full(N, 0.13, dtype=np.float32), seq_len, [0], rng)
    flat = study.read_path_sigma(act, ids, enc_v, np.zeros(N, dtype=np.float32), seq_len, [0], rng)
    # float32 inputs: the mean over d of x is 0 only to ~1e-7, which the identity inherits
    assert rot["identity_max_rel_error"] < 1e-6 and flat["identity_max_rel_error"] < 1e-6
    assert flat["explained"]["phase_free"]["r2"] == pytest.approx(1.0, abs=1e-9)
    assert rot["explained"]["phase_free"]["r2"] < 0.99
    assert flat["explained"]["value_shuffled"]["r2_fit"] < 0.5


def test_concept_forms():
    data = b"KATHARINA:\nGood Kate, sweet Katharina; kate."
    assert study.concept_forms("KATHARINA|Kate") == ["KATHARINA", "Kate"]
    assert study.form_counts(data, "KATHARINA|Kate") == {"KATHARINA": 2, "Kate": 2}
    assert len(study.concept_occurrences(data, "KATHARINA|Kate")) == 4
    assert study.concept_forms("|") == ["|"]


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
    # one pairing unit per string: its first pass and its repeats (byte p predicted from p-1; a
    # repeat's first byte, p = period, has no predecessor to look up)
    words = [{"passage": b, "first": list(range(1, p)),
              "repeats": [list(range(s + 1, min(s + p, 64))) for s in range(p, 64 - 1, p)]}
             for b, p in enumerate(periods)]
    conds = {"intact": None, "frozen_from_start": {"freeze_after": 0}, "reset_every_4": {"reset_every": 4}}
    ce = {name: study.token_losses(bs.simulate(net, ids, timesteps=8, plasticity=p).logits, ids)
          for name, p in conds.items()}
    with torch.no_grad():
        ce["dense"] = study.token_losses(model(ids)[0], ids)
    table = study.memory_table(ce, words, "frozen_from_start", np.random.default_rng(0), n_boot=200)
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
    with pytest.raises(ConfigError, match="cannot reach"):  # 1/(P+1) > alpha: no discovery possible
        study.StudySettings(out="x", permutations=10, alpha=0.05).validate()


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
    sel = res["selectivity"]
    assert isinstance(sel["null"], str) and "byte" in sel["null"]
    assert sel["layers"] == [0, 1, 2, 3]  # --quick analyses every layer
    assert sel["layer0_discoveries"] == 0 and isinstance(sel["decoy_discoveries_mean"], float)
    for fams in sel["runs"].values():  # layer 0 is a function of the byte: nothing in it is testable
        for fam in fams.values():
            for d in fam["factors"]["per_concept"].values():
                assert d["byte"]["testable_per_layer"]["0"] == 0
    for sg in res["sigma"].values():
        assert sg["identity_max_rel_error"] < 1e-5


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


@pytest.mark.slow  # ~35 s of Brian2 (numpy target) on 2 cores: over the default run's budget
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


def _paired_losses(n_words=40, effect=0.2, spread=1.0, noise=0.05, seed=0):
    """Per-token losses of n_words words (one passage each, first occurrence at bytes 1-4, one repeat
    at 11-14): word difficulty varies a lot between words (spread), the repeat is easier by `effect`
    inside every word; a second condition ('none') has no effect."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(3.0, spread, n_words)
    words = [{"passage": b, "first": [1, 2, 3, 4], "repeats": [[11, 12, 13, 14]]} for b in range(n_words)]
    ce = {c: np.full((n_words, 16), np.nan) for c in ("intact", "none")}
    for c, eff in (("intact", effect), ("none", 0.0)):
        ce[c][:, 1:5] = difficulty[:, None] + rng.normal(0, noise, (n_words, 4))
        ce[c][:, 11:15] = difficulty[:, None] - eff + rng.normal(0, noise, (n_words, 4))
    return ce, words


def test_paired_bootstrap_finds_a_paired_effect_the_unpaired_one_misses():
    ce, words = _paired_losses()
    table = study.memory_table(ce, words, "none", np.random.default_rng(0), n_boot=500)
    row = table["intact"]
    lo, hi = row["raw_benefit_ci95"]
    assert 0.15 < lo < 0.2 < hi < 0.25, row  # the known within-word effect, tightly
    ulo, uhi = row["raw_benefit_unpaired_ci95"]
    assert ulo < 0 < uhi and (uhi - ulo) > 5 * (hi - lo), row  # resampled independently: wide, includes 0
    clo, chi = row["context_benefit_ci95"]
    assert 0.1 < clo < 0.2 < chi  # against the no-effect condition, word by word
    assert table["none"]["context_benefit"] == 0.0 and table["none"]["context_benefit_ci95"] == [0.0, 0.0]


def test_hold_time_against_the_floor():
    """Decay conditions whose benefit grows as tau / (tau + 4): tau_half near 4 tokens, with an interval;
    when the intact benefit is not above the floor, no hold time is claimed."""
    ce, words = _paired_losses(effect=0.4)
    rng = np.random.default_rng(3)
    decay = {}
    for tau in (1.0, 2.0, 4.0, 8.0, 16.0, 64.0):
        name = f"decay_tau_tokens_{tau:g}"
        decay[name] = tau
        c = ce["none"].copy()
        c[:, 11:15] -= 0.4 * tau / (tau + 4.0) + rng.normal(0, 0.05, (len(words), 4))
        ce[name] = c
    _, per, idx = study.paired_analysis(ce, words, "none", np.random.default_rng(0), n_boot=300)
    h = study.hold_time(per, decay, "none", idx)
    assert h["intact_above_floor"] and 3.0 < h["tau_half_tokens"] < 5.5, h
    lo, hi = h["tau_half_tokens_ci95"]
    assert lo <= h["tau_half_tokens"] <= hi and hi - lo < 4.0
    assert h["detectable_from_tau_tokens"] == 1.0  # tau 1 already holds 0.08 nats, well above the floor
    null_ce, _ = _paired_losses(effect=0.0, seed=1)
    null_ce.update({n: null_ce["none"].copy() for n in decay})
    _, per0, idx0 = study.paired_analysis(null_ce, words, "none", np.random.default_rng(0), n_boot=300)
    h0 = study.hold_time(per0, decay, "none", idx0)
    assert h0["tau_half_tokens"] is None and "floor" in h0["why_none"]
    assert study.tau_half(np.array([1.0, 2.0]), np.array([0.0, 0.1]), 1.0) == float("inf")  # never reached
    assert study.tau_half(np.array([1.0, 2.0]), np.array([0.6, 0.9]), 1.0) == 1.0  # already there: upper bound


def test_raster_keeps_multispike_counts_and_samples_every_head(model_factory):
    """The raster's events are per-step counts (up to K, not one tick), drawn with those counts, at
    i * token_ms + s * dt_ms, from neurons of every layer and head; their sums are the run's counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bdh_spiking.conversion import convert
    from bdh_spiking.semantics import fold_weights
    from bdh_spiking.study.figures import raster_artists
    from bdh_spiking.study.rates import raster_spikes

    model = model_factory(seed=2, n_layer=2, n_embd=16, mlp_internal_dim_multiplier=4)
    rng = np.random.default_rng(0)
    net = convert(model, calibration=bytes(rng.integers(97, 123, size=128).astype(np.uint8)))
    ids = torch.tensor(list(b"the cat sat on the mat, the end")).view(1, -1)
    s = study.StudySettings(out="unused", timesteps=4, max_spikes=4, token_ms=50.0, dt_ms=2.0, seed=3)
    w = fold_weights(net, torch.device("cpu"), torch.float64)
    act = study.spiking_activity(net, ids, w, s)
    r = raster_spikes(act, net, w, s, ids.shape[1])
    assert r.count_check_max_diff == 0
    assert {row[:2] for row in r.rows} == {(layer, h) for layer in range(2) for h in range(net.dims.H)}
    assert r.counts.max() > 1 and r.counts.min() >= 1 and r.counts.max() <= 4
    steps = np.round((r.times % s.token_ms - 0.5 * s.dt_ms) / s.dt_ms)
    assert set(steps.tolist()) <= set(range(s.timesteps)) and r.times.max() < r.n_tokens * s.token_ms
    fig, ax = plt.subplots()
    coll = raster_artists(ax, r)
    assert np.array_equal(np.asarray(coll.get_array()), r.counts)  # colour = count
    assert np.array_equal(coll.get_offsets()[:, 0], r.times)
    assert len(set(np.asarray(coll.get_sizes()).tolist())) > 1  # size = count too
    plt.close(fig)


def _verdict_inputs(ctx_ci, words=5, dense_ci=(0.29, 0.31)):
    e2 = {"table": {"intact": {"context_benefit": sum(ctx_ci) / 2, "context_benefit_ci95": list(ctx_ci)}},
          "units": {"words": words}, "baseline": "scrambled_context", "hold_time": {"tau_half_tokens": None,
                                                                                     "why_none": "x"}}
    e3 = {"sparsity": {"paper_reference": 0.05, "dense_x_active_fraction": sum(dense_ci) / 2,
                       "dense_x_active_fraction_ci95": list(dense_ci), "spiking_x_active_fraction": 0.3,
                       "spiking_x_active_fraction_ci95": [0.28, 0.32]},
          "rates": {"token_ms": 100.0, "x": {"mean_hz": 36.0, "mean_spikes_per_token": 3.6,
                                              "in_cortical_band_fraction": 0.2}}}
    e1 = {"variants": {"spiking": {"increments": {"per_concept": {"A": {"selective": 7}}}}}}
    return {"experiment1": e1, "experiment2": e2, "experiment3": e3}


def test_verdict_logic():
    from bdh_spiking.study.verdicts import verdicts

    v = verdicts(_verdict_inputs((0.05, 0.3), dense_ci=(0.03, 0.07)))
    assert v["a"]["verdict"] == "supported" and v["a"]["ci95"] == [0.05, 0.3]
    assert v["c"]["verdict"] == "supported"
    assert v["b"]["verdict"] == "not testable here" and v["b"]["number"] == 7  # null does not control the byte
    assert v["d"]["verdict"] == "not testable here"
    v = verdicts(_verdict_inputs((-0.1, 0.3)))
    assert v["a"]["verdict"] == "not supported" and v["c"]["verdict"] == "not supported"
    assert verdicts(_verdict_inputs((0.05, 0.06), dense_ci=(0.08, 0.11)))["c"]["verdict"] == "not supported"
    assert verdicts(_verdict_inputs((0.1, 0.2), words=0))["a"]["verdict"] == "not testable here"
    res = _verdict_inputs((0.1, 0.2))
    res["selectivity"] = {"null": "labels permuted within byte", "discoveries": 12, "decoy_discoveries_mean": 0.5}
    assert verdicts(res)["b"]["verdict"] == "supported"
    res["selectivity"]["discoveries"] = 0
    assert verdicts(res)["b"]["verdict"] == "not supported"


def test_first_occurrence_replacement_touches_only_first_occurrences():
    text = b"Gremio said: good Gremio, good morrow."
    ids = torch.tensor(list(text)).view(1, -1)
    words = study.collect_words(ids)
    out = study.replace_first_occurrences(ids, words, seed=0)
    changed = np.nonzero((out != ids).numpy()[0])[0].tolist()
    first_spans = {p for w in words for p in range(w["first"][0] - 1, w["first"][-1] + 1)}
    assert changed and set(changed) <= first_spans  # repeats and every other byte unchanged
    assert bytes(out[0, 18:24].tolist()) == b"Gremio" and bytes(out[0, 26:30].tolist()) == b"good"
    assert all(chr(int(out[0, p])).isupper() == chr(int(ids[0, p])).isupper() for p in first_spans)


def test_passage_resampling_is_wider_when_words_share_a_passage_effect():
    from bdh_spiking.study.memory_stats import passage_cluster_ci
    from bdh_spiking.study.statistics import bootstrap_indices

    rng = np.random.default_rng(0)
    passages = np.repeat(np.arange(4), 10)
    values = 0.1 + rng.normal(0, 0.5, 4)[passages] + rng.normal(0, 0.05, 40)  # a shared effect per passage
    by_word = study.ci95(values[bootstrap_indices(np.random.default_rng(1), 40, 500)].mean(1))
    by_passage = passage_cluster_ci(values, passages, np.random.default_rng(1), 500)
    assert by_passage[1] - by_passage[0] > 2 * (by_word[1] - by_word[0])
