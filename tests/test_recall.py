"""The associative-recall task, its statistics and the shipped recall model (converted network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bdh_spiking.errors import ConfigError
from bdh_spiking.study.recall import RecallStudySettings, collect, condition_inputs, summarize, tau50
from bdh_spiking.tasks.recall import FILLER, KEYS, QUERY, VALUES, chance_accuracy, make_batch


def test_alphabets_are_disjoint():
    sets = [set(KEYS), set(VALUES), set(FILLER), set(QUERY)]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            assert not sets[i] & sets[j]
    assert chance_accuracy() == pytest.approx(0.1)


@pytest.mark.parametrize("K,G", [(4, 0), (8, 16), (16, 64)])
def test_episodes_answer_their_own_study_phase(K, G):
    b = make_batch(3, K, G, 20)
    assert b.ids.shape == (20, 5 * K + G)
    for row, vals, lags in zip(b.ids, b.values, b.lags):
        study, filler, queries = row[: 2 * K], row[2 * K: 2 * K + G], row[2 * K + G:]
        assert len(set(study[0::2].tolist())) == K and set(study[0::2].tolist()) <= set(KEYS)
        assert set(study[1::2].tolist()) <= set(VALUES) and set(filler.tolist()) <= set(FILLER)
        pairs = dict(zip(study[0::2].tolist(), study[1::2].tolist()))
        assert (queries[0::3] == QUERY[0]).all() and sorted(queries[1::3].tolist()) == sorted(pairs)
        for i, (k, v) in enumerate(zip(queries[1::3].tolist(), queries[2::3].tolist())):
            assert pairs[k] == v == vals[i] == row[b.answers[i]]
            study_pos = 2 * list(pairs).index(k) + 1
            assert lags[i] == b.answers[i] - study_pos and row[study_pos] == v


def test_generator_is_reproducible_and_checked():
    a, b, c = make_batch(7, 8, 16, 5), make_batch(7, 8, 16, 5), make_batch(8, 8, 16, 5)
    assert np.array_equal(a.ids, b.ids) and not np.array_equal(a.ids, c.ids)
    with pytest.raises(ConfigError):
        make_batch(0, 27, 0, 1)
    with pytest.raises(ConfigError):
        make_batch(0, 4, -1, 1)


def test_condition_inputs_keep_queries_and_swap_context():
    b = make_batch(1, 4, 8, 6)
    inp = condition_inputs(b)
    q0 = b.query_start
    ids, _, ans = inp["reset_before_query"]
    assert torch.equal(ids, torch.from_numpy(b.ids[:, q0:].astype(np.int64))) and (ans == b.answers - q0).all()
    scr = inp["scrambled_context"][0]
    assert torch.equal(scr[:, q0:], torch.from_numpy(b.ids[:, q0:].astype(np.int64)))
    assert torch.equal(scr[1:, :q0], torch.from_numpy(b.ids[:-1, :q0].astype(np.int64)))
    assert inp["frozen_after_study"][1] == {"freeze_after": 2 * b.K}


def test_tau50_interpolates_and_censors():
    taus = np.array([1.0, 2.0, 4.0, 8.0])
    assert tau50(taus, np.array([0.1, 0.3, 0.5, 0.9]), 0.9, 0.1) == pytest.approx(4.0)
    assert tau50(taus, np.array([0.1, 0.1, 0.3, 0.7]), 0.9, 0.1) == pytest.approx(np.exp(np.log(4) + 0.5 * np.log(2)))
    assert tau50(taus, np.array([0.1, 0.1, 0.1, 0.2]), 0.9, 0.1) == float("inf")
    assert tau50(taus, np.array([0.9, 0.9, 0.9, 0.9]), 0.9, 0.1) == 1.0


@pytest.fixture(scope="module")
def recall_cells():
    from bdh_spiking.checkpoint import load_checkpoint
    from bdh_spiking.study.recall_report import recall_model_path

    model, _ = load_checkpoint(recall_model_path())
    s = RecallStudySettings(out="-", seeds=(0,), pairs=(8,), gaps=(16,), episodes=16, taus=(4.0, 64.0), n_boot=200,
                            probe_pairs=())
    return s, collect(model, s, lambda m: None)


def test_shipped_recall_model_meets_the_issue_thresholds(recall_cells):
    """Converted network (reference, multispike, T=8): intact >= 0.9, reset <= chance + 0.05,
    frozen after the study phase >= 95% of intact, on fresh episodes (K=8, G=16)."""
    s, cells = recall_cells
    r = summarize(cells, s, np.random.default_rng(0))
    acc = r["accuracy"]
    assert acc["intact"] >= 0.9, acc
    assert acc["reset_before_query"] <= r["chance"] + 0.05, acc
    assert acc["frozen_after_study"] >= 0.95 * acc["intact"], acc


def test_shipped_recall_model_answers_from_its_synapses(recall_cells):
    """What the shipped model does hold: above chance intact, at chance without the stored pairs
    (reset) and with another episode's pairs (scrambled); paired intervals exclude no difference."""
    s, cells = recall_cells
    r = summarize(cells, s, np.random.default_rng(0))
    acc, diff_ci = r["accuracy"], r["intact_minus_ci"]
    assert acc["reset_before_query"] <= r["chance"] + 0.05, acc
    assert acc["intact"] >= r["chance"] + 0.2, acc
    assert diff_ci["reset_before_query"][0] > 0 and diff_ci["scrambled_context"][0] > 0, diff_ci
    lo, hi = r["accuracy_ci"]["intact"]
    assert lo <= acc["intact"] <= hi


def test_reset_before_query_equals_a_reset_of_the_plastic_state():
    """The query-only run equals resetting S at the first query (reset_every = q0 is exact when G >= K)."""
    from bdh_spiking.backends import simulate
    from bdh_spiking.checkpoint import load_checkpoint
    from bdh_spiking.study.recall import convert_for_recall
    from bdh_spiking.study.recall_report import recall_model_path

    model, _ = load_checkpoint(recall_model_path())
    net = convert_for_recall(model, 0)
    b = make_batch(5, 4, 8, 4)
    ids = torch.from_numpy(b.ids.astype(np.int64))
    q0 = b.query_start
    full = simulate(net, ids, timesteps=8, coding="multispike", max_spikes=4, plasticity={"reset_every": q0}).logits
    alone = simulate(net, ids[:, q0:], timesteps=8, coding="multispike", max_spikes=4).logits
    pos = torch.as_tensor(b.answers - 1)
    assert torch.equal(full[:, pos].argmax(-1), alone[:, pos - q0].argmax(-1))
    assert torch.allclose(full[:, pos], alone[:, pos - q0], atol=1e-3)


@pytest.mark.slow
def test_train_recall_is_reproducible_and_study_cli_writes_results(tmp_path):
    """bdh-train --task recall (3 steps of a tiny model, twice: same weights), then bdh-study --task recall."""
    import json

    from bdh_spiking.checkpoint import load_checkpoint
    from bdh_spiking.cli.study import main as study_main
    from bdh_spiking.cli.train import main as train_main

    args = ["--task", "recall", "--steps", "3", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--mult", "4",
            "--eval-every", "1000", "--device", "cpu", "--seed", "5"]
    assert train_main.run(args + ["--out", str(tmp_path / "a.pt")]) == 0
    assert train_main.run(args + ["--out", str(tmp_path / "b.pt")]) == 0
    (ma, ia), (mb, _) = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert ia["meta"]["task"] == "recall" and ia["meta"]["steps"] == 3 and ia["config"]["n_layer"] == 1
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k
    out = tmp_path / "study"
    assert study_main.run([str(tmp_path / "a.pt"), "--task", "recall", "--out", str(out), "--seeds", "0",
                       "--pairs", "4", "--gaps", "0,8", "--episodes", "4", "--quick"]) == 0
    r = json.loads((out / "results.json").read_text())["recall"]
    for key in ("chance", "accuracy", "accuracy_ci", "tau50_tokens", "accuracy_vs_lag", "lesion", "biophysical"):
        assert key in r
    assert set(r["accuracy"]) == {"intact", "reset_before_query", "frozen_after_study", "scrambled_context"}
    assert all(lo <= r["accuracy"][c] <= hi for c, (lo, hi) in r["accuracy_ci"].items())
    assert str(r["accuracy"]["intact"])[:5] in (out / "report.md").read_text() or "intact" in (out / "report.md").read_text()


def _tiny_net():
    from bdh_spiking.conversion import convert
    from conftest import make_model

    model = make_model(seed=3)
    return convert(model, gating="product", calibration=torch.from_numpy(make_batch(0, 4, 4, 4).ids.reshape(-1)
                                                                          .astype(np.int64)))


def test_noise_and_lesion_switches_are_seeded_checked_and_reference_only():
    """Synaptic noise: reproducible from its seed, different with another, zero noise is intact;
    a lesioned synapse stays 0 and changes only its own sequence; other backends and bad indices refused."""
    from bdh_spiking.backends import simulate

    net = _tiny_net()
    ids = torch.from_numpy(make_batch(1, 4, 4, 3).ids.astype(np.int64))

    def run(plast=None, **kw):
        return simulate(net, ids, timesteps=4, coding="multispike", max_spikes=4, plasticity=plast, **kw)

    base = run(record=("state",))
    assert torch.equal(run({"noise": 0.0}).logits, base.logits)
    a, b = run({"noise": 0.5, "noise_seed": 1}), run({"noise": 0.5, "noise_seed": 1})
    c = run({"noise": 0.5, "noise_seed": 2})
    assert torch.equal(a.logits, b.logits) and not torch.equal(a.logits, c.logits)
    assert not torch.allclose(a.logits, base.logits)
    S = base.records["state"]  # L,B,H,D,N
    layer, head, d, n = [int(i) for i in np.unravel_index(int(S[:, 1].abs().argmax()), S[:, 1].shape)]
    les = run({"lesion": [(1, layer, head, d, n)]}, record=("state",))
    assert les.records["state"][layer, 1, head, d, n] == 0 and S[layer, 1, head, d, n] != 0
    step = run(stepwise=True)  # the perturbed runs use the stepwise form
    assert torch.equal(les.logits[[0, 2]], step.logits[[0, 2]]) and not torch.allclose(les.logits[1], step.logits[1])
    with pytest.raises(ConfigError):
        run({"lesion": [(3, 0, 0, 0, 0)]})  # row 3 of a batch of 3
    with pytest.raises(ConfigError):
        run({"noise": -1.0})
    with pytest.raises(ConfigError):
        simulate(net, ids, backend="torch", timesteps=4, plasticity={"noise": 0.5})
    with pytest.raises(ConfigError):
        simulate(net, ids, mode="fixed-point", timesteps=4, plasticity={"lesion": [(0, 0, 0, 0, 0)]})


def test_lesion_picks_top_synapses_and_activity_matched_controls():
    """choose_synapses: the top set maximises |sum_s x_s[d] q_s[n] q_t[n]|; each control lies in the
    same layer and head, outside the top-100, with activity close in rank to its top synapse."""
    from bdh_spiking.study.recall_probes import EXCLUDE_TOP, TOP, choose_synapses

    g = torch.Generator().manual_seed(0)
    x, q = torch.randn(12, 2, 8, generator=g, dtype=torch.float64), torch.rand(12, 2, 2, 16, generator=g,
                                                                               dtype=torch.float64)
    top, rand, act = choose_synapses(x, q, [2, 3], 9, np.random.default_rng(0))
    contrib = torch.einsum("sld,slhn,lhn->lhdn", x[[2, 3]], q[[2, 3]], q[9]).abs()
    order = torch.argsort(contrib.reshape(-1), descending=True)
    assert [np.ravel_multi_index(s, contrib.shape) for s in top] == order[:TOP].tolist()
    excluded = set(order[:EXCLUDE_TOP].tolist())
    assert len(set(rand)) == TOP and all(np.ravel_multi_index(s, contrib.shape) not in excluded for s in rand)
    assert all(t[:2] == r[:2] for t, r in zip(top, rand))
    assert abs(np.mean(act["top"]) - np.mean(act["random"])) < 0.5 * np.mean(act["top"])


def test_training_episodes_with_repeated_queries_stay_consistent():
    """repeat_queries: keys queried with replacement (a training variant), answers and lags still right."""
    b = make_batch(4, 6, 5, 30, repeat_queries=True)
    repeats = 0
    for row, vals, lags in zip(b.ids, b.values, b.lags):
        pairs = dict(zip(row[0:12:2].tolist(), row[1:12:2].tolist()))
        queried = row[18::3].tolist()
        repeats += len(queried) != len(set(queried))
        for i, k in enumerate(queried):
            study_pos = 2 * list(pairs).index(k) + 1
            assert pairs[k] == vals[i] == row[b.answers[i]] and lags[i] == b.answers[i] - study_pos
    assert repeats > 0


def test_dense_writes_mask_freezes_the_hebbian_state():
    """BDH.forward(writes=...): all ones is the plain model; zeros from p on change nothing up to p,
    equal the chunked form, and (all zeros) leave only the feed-forward path."""
    from conftest import make_model

    model = make_model(seed=1)
    ids = torch.from_numpy(make_batch(2, 4, 6, 2).ids.astype(np.int64))
    T, p = ids.shape[1], 9
    with torch.no_grad():
        plain = model(ids)[0]
        assert torch.equal(model(ids, writes=torch.ones(T))[0], plain)
        w = (torch.arange(T) < p).float()
        frozen = model(ids, writes=w)[0]
        assert torch.allclose(frozen[:, : p + 1], plain[:, : p + 1], atol=1e-6)
        assert not torch.allclose(frozen[:, p + 2:], plain[:, p + 2:], atol=1e-3)
        assert torch.allclose(model(ids, writes=w[None].expand(2, T), chunk=4)[0], frozen, atol=1e-5)
