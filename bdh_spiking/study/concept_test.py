"""Experiment 1's test: which plastic synapses carry a concept *beyond the bytes it is spelled with*.

Candidates come in two families whose per-token increments factorise into a left and a right
factor (docs/study.md, "Which synapses"):

* ``S``: the executed x -> residual synapses, increment |x_t[d]| * ||a_t(pair k)|| (residual unit d
  of the layer's input, oscillator pair k of a head; frame-free);
* ``sigma``: the read-path neuron-to-neuron state sigma = E_v^T S (x neuron i -> y neuron j of a
  head), phase dropped: increment |v_t[j]| * a_t[i] with v_t = E_v^T x_t.

Each family is tested at the level of its factors (all of them) and of its synapses (a seeded
random sample per layer). The statistic is the stratified rank statistic of ``statistics``: midranks
within the tokens of one byte (or one (previous byte, byte) pair), the null permutes the concept's
labels within those strata, and the maxT correction over the whole family gives family-wise
adjusted p-values and a global test per concept. Decoys: every concept's labels circularly shifted
by each offset, tested the same way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .statistics import byte_strata, centered_ranks, dense_codes, maxt_adjusted, stratified_label, stratified_scores

STRATA = ("byte", "bigram")  # the first is the main null; decoys are tested under it
CHUNK_ROWS = 2048


@dataclasses.dataclass
class ProductFamily:
    """Synapses whose increment on token t is left[t, l, h, i] * right[t, l, h, j] (both >= 0).
    ``left`` may have one head (shared by all heads: the residual factor of S)."""

    name: str
    left: np.ndarray  # (n_tokens, L, H or 1, n_left)
    right: np.ndarray  # (n_tokens, L, H, n_right)
    left_kind: str
    right_kind: str
    layers: list  # model layer of each analysed position

    def factor_chunks(self):
        """(values (rows, n_tokens), ids [kind, layer, head, index]) per factor block."""
        for kind, arr in ((self.left_kind, self.left), (self.right_kind, self.right)):
            for pos, layer in enumerate(self.layers):
                for h in range(arr.shape[2]):
                    head = h if arr.shape[2] > 1 else -1  # -1: shared by every head
                    vals = np.ascontiguousarray(arr[:, pos, h].T)
                    yield vals, [[kind, layer, head, i] for i in range(vals.shape[0])]

    def sample(self, per_layer: int | None, rng: np.random.Generator) -> list:
        """Synapses [layer position, head, left index, right index]: all, or per_layer drawn per layer."""
        n_heads, n_left, n_right = self.right.shape[2], self.left.shape[3], self.right.shape[3]
        total = n_heads * n_left * n_right
        out = []
        for pos in range(len(self.layers)):
            flat = np.arange(total) if per_layer is None or per_layer >= total else np.sort(
                rng.choice(total, size=per_layer, replace=False))
            out += [[pos, int(f // (n_left * n_right)), int(f // n_right % n_left), int(f % n_right)] for f in flat]
        return out

    def synapse_chunks(self, picks: list):
        for start in range(0, len(picks), CHUNK_ROWS):
            p = np.asarray(picks[start: start + CHUNK_ROWS])
            lh = np.where(self.left.shape[2] > 1, p[:, 1], 0)
            vals = (self.left[:, p[:, 0], lh, p[:, 2]] * self.right[:, p[:, 0], p[:, 1], p[:, 3]]).T
            yield np.ascontiguousarray(vals), [[self.layers[r[0]], int(r[1]), int(r[2]), int(r[3])] for r in p]


def prepare_labels(labels: np.ndarray, ids: np.ndarray, seq_len: int, offsets: list, n_perm: int,
                   rng: np.random.Generator) -> dict:
    """Per stratification: its strata codes and the prepared labels. Under the main ('byte') null:
    the C concepts, then every concept shifted by every offset (decoys, concept-major); under the
    others, the concepts only."""
    out = {}
    for kind in STRATA:
        strata = byte_strata(ids, seq_len, kind)
        cols = [labels[:, c] for c in range(labels.shape[1])]
        if kind == STRATA[0]:
            cols += [np.roll(labels[:, c], off) for c in range(labels.shape[1]) for off in offsets]
        out[kind] = {"strata": strata, "codes": dense_codes(strata),
                     "labels": [stratified_label(col, strata, n_perm, rng) for col in cols]}
    return out


def family_scores(chunks, prepared: dict) -> dict:
    """z, stratified AUROC and maxT-adjusted p of every candidate against every prepared label."""
    ids, acc = [], {k: {"z": [], "auroc": []} for k in prepared}
    perm_max = {k: [np.full(lab.permuted.shape[1], -np.inf) for lab in v["labels"]] for k, v in prepared.items()}
    for values, chunk_ids in chunks:
        ids += chunk_ids
        for kind, prep in prepared.items():
            ranks = centered_ranks(values, prep["strata"])
            z = np.empty((values.shape[0], len(prep["labels"])))
            au = np.empty_like(z)
            for i, lab in enumerate(prep["labels"]):
                sc = stratified_scores(ranks, prep["codes"], lab)
                z[:, i], au[:, i] = sc["z"], sc["auroc"]
                if sc["z_perm"].size:
                    perm_max[kind][i] = np.maximum(perm_max[kind][i], sc["z_perm"].max(0))
            acc[kind]["z"].append(z)
            acc[kind]["auroc"].append(au)
    out = {"ids": ids}
    for kind in prepared:
        z = np.concatenate(acc[kind]["z"])
        p = np.stack([maxt_adjusted(z[:, i], perm_max[kind][i]) for i in range(z.shape[1])], 1)
        out[kind] = {"z": z, "auroc": np.concatenate(acc[kind]["auroc"]), "p": p}
    return out


def _label_summary(scores: dict, col: int, ids: list, alpha: float, top_k: int, layers: list) -> dict:
    z, p, au = scores["z"][:, col], scores["p"][:, col], scores["auroc"][:, col]
    found = (p <= alpha) & (z > 0)
    layer_of = np.asarray([i[1] if isinstance(i[0], str) else i[0] for i in ids])
    order = np.argsort(-z, kind="stable")[:top_k]
    return {
        "discoveries": int(found.sum()),
        "per_layer": {str(layer): int((found & (layer_of == layer)).sum()) for layer in layers},
        "testable": int((z != 0).sum()),
        "testable_per_layer": {str(layer): int(((z != 0) & (layer_of == layer)).sum()) for layer in layers},
        "global_p": float(p.min()) if p.size else 1.0,
        "max_z": float(z.max()) if z.size else float("nan"),
        "max_auroc": float(np.nanmax(au)) if np.isfinite(au).any() else float("nan"),
        "top": [{"id": ids[i], "z": float(z[i]), "auroc": float(au[i]), "p_fwer": float(p[i]),
                 "selective": bool(found[i])} for i in order],
    }, found


def summarize_family(scores: dict, concepts: list, n_shifts: int, alpha: float, top_k: int, layers: list) -> dict:
    """Per concept and stratification: discoveries (maxT, family-wise at alpha), per layer, the global
    test, the top candidates; under the main null also the decoys (every shift)."""
    out, found = {}, {}
    n_c = len(concepts)
    for c, name in enumerate(concepts):
        out[name] = {}
        for kind in STRATA:
            out[name][kind], mask = _label_summary(scores[kind], c, scores["ids"], alpha, top_k, layers)
            found[(name, kind)] = mask
        decoys = [_label_summary(scores[STRATA[0]], n_c + c * n_shifts + s, scores["ids"], alpha, 0, layers)[0]
                  for s in range(n_shifts)]
        out[name]["decoy"] = {"discoveries_per_shift": [d["discoveries"] for d in decoys],
                              "discoveries_mean": float(np.mean([d["discoveries"] for d in decoys])) if decoys else 0.0,
                              "global_p_per_shift": [d["global_p"] for d in decoys]}
    return out, found


def factor_explained(syn_ids: list, syn_found: dict, fac_ids: list, fac_found: dict, family: ProductFamily) -> dict:
    """Per concept: the fraction of discovered synapses with at least one discovered factor."""
    out = {}
    for (name, kind), mask in syn_found.items():
        if kind != STRATA[0]:
            continue
        fac = {tuple(i) for i, f in zip(fac_ids, fac_found[(name, kind)]) if f}
        hits = [s for s, f in zip(syn_ids, mask) if f]
        shared = family.left.shape[2] == 1
        explained = sum(((family.left_kind, s[0], -1 if shared else s[1], s[2]) in fac)
                        or ((family.right_kind, s[0], s[1], s[3]) in fac) for s in hits)
        out[name] = float(explained / len(hits)) if hits else float("nan")
    return out


def families(act, enc_v: np.ndarray, layers: list) -> list:
    """The two product families of one run (activity restricted to the analysed layers).
    enc_v: (H, D, N) the y encoder E_v shared by all layers."""
    from .selectivity import pair_norms

    a = act.x_activity[:, layers]  # T, L, H, N
    x = act.xres[:, layers]  # T, L, D
    s_family = ProductFamily("S", np.abs(x)[:, :, None, :], pair_norms(a), "residual", "pair", list(layers))
    v = np.einsum("tld,hdn->tlhn", x.astype(np.float32), enc_v.astype(np.float32))
    sigma = ProductFamily("sigma", np.abs(v), a, "y", "x", list(layers))
    return [s_family, sigma]


NULL_DESCRIPTION = (
    "stratified permutation: the concept's per-token labels are permuted among the tokens with the same "
    "current byte (main null; secondary: the same (previous byte, byte) pair); statistic: sum over labelled "
    "tokens of the within-stratum centred midrank of the increment (stratified Mann-Whitney), standardized by "
    "its exact permutation variance; family-wise: single-step maxT over all candidates of a family "
    "(all analysed layers), which also gives the global test per concept; decoys: every concept's labels "
    "circularly shifted by every decoy offset, tested the same way")


def _headline(out: dict, layers: list, n_shifts: int) -> None:
    """layer-0 discoveries, total discoveries and the mean decoy discoveries (main null), summed over
    runs, families, levels and concepts."""
    main = STRATA[0]
    total, layer0, per_shift, stricter = 0, 0, np.zeros(n_shifts), 0
    for run in out["runs"].values():
        for fam in run.values():
            for level in ("factors", "synapses"):
                for d in fam[level]["per_concept"].values():
                    total += d[main]["discoveries"]
                    stricter += d.get(STRATA[1], {}).get("discoveries", 0)
                    layer0 += d[main]["per_layer"].get("0", 0) if 0 in layers else 0
                    per_shift += np.asarray(d["decoy"]["discoveries_per_shift"], dtype=float)
    out.update(discoveries=int(total), discoveries_bigram_null=int(stricter), layer0_discoveries=int(layer0),
               decoy_discoveries_per_shift=[int(v) for v in per_shift],
               decoy_discoveries_mean=float(per_shift.mean()) if n_shifts else 0.0)


def _family_result(fam: ProductFamily, prepared, concepts, settings, n_shifts, picks) -> dict:
    layers = fam.layers
    fac_scores = family_scores(fam.factor_chunks(), prepared)
    syn_scores = family_scores(fam.synapse_chunks(picks), prepared)
    fac_sum, fac_found = summarize_family(fac_scores, concepts, n_shifts, settings.alpha, settings.top_k, layers)
    syn_sum, syn_found = summarize_family(syn_scores, concepts, n_shifts, settings.alpha, settings.top_k, layers)
    return {"left": fam.left_kind, "right": fam.right_kind,
            "factors": {"candidates": len(fac_scores["ids"]), "per_concept": fac_sum},
            "synapses": {"candidates": len(syn_scores["ids"]), "per_concept": syn_sum,
                         "with_selective_factor": factor_explained(syn_scores["ids"], syn_found, fac_scores["ids"],
                                                                   fac_found, fam)}}


def run_concept_test(runs: dict, labels: np.ndarray, ids: np.ndarray, concepts: list, enc_v: np.ndarray,
                     settings, seq_len: int, rng: np.random.Generator, log) -> dict:
    """Experiment 1 on every run and both families: results["selectivity"]."""
    from .statistics import shift_offsets

    n_tokens = labels.shape[0]
    layers = list(settings.layers) if settings.layers is not None else list(range(runs["dense"].x_activity.shape[1]))
    offsets = shift_offsets(n_tokens, settings.shifts, seq_len, rng)
    prepared = prepare_labels(labels, ids, seq_len, offsets, settings.permutations, rng)
    out = {"null": NULL_DESCRIPTION, "alpha": settings.alpha, "permutations": settings.permutations,
           "strata": list(STRATA), "decoy_shifts": offsets, "layers": layers,
           "synapse_sample_per_layer": settings.synapse_sample,
           "informative_concept_tokens": {kind: {c: int(prepared[kind]["labels"][i].observed.sum())
                                                 for i, c in enumerate(concepts)} for kind in STRATA},
           "runs": {}}
    picks = None
    for name, act in runs.items():
        log(f"experiment 1 on the {name} run: {len(layers)} layers, {settings.permutations} permutations, "
            f"{len(offsets)} decoy shifts")
        out["runs"][name] = {}
        for fam in families(act, enc_v, layers):
            if picks is None or fam.name not in picks:  # the same sampled synapses in every run
                picks = picks or {}
                picks[fam.name] = fam.sample(settings.synapse_sample, rng)
            out["runs"][name][fam.name] = _family_result(fam, prepared, concepts, settings, len(offsets),
                                                         picks[fam.name])
    _headline(out, layers, len(offsets))
    return out


def legacy_variants(sel: dict) -> dict:
    """experiment1["variants"] as the figures read it: per run, 'increments' (S synapses) and 'sigma'
    (sigma synapses), per concept the main-null discoveries and the top sampled synapses."""
    kinds = {"increments": "S", "sigma": "sigma"}
    main = STRATA[0]
    out = {}
    for run, fams in sel["runs"].items():
        out[run] = {}
        for kind, fam in kinds.items():
            per = fams[fam]["synapses"]["per_concept"]
            out[run][kind] = {"per_concept": {c: {
                "selective": d[main]["discoveries"],
                "top": [{"synapse": t["id"], "auroc": t["auroc"], "z": t["z"], "p": t["p_fwer"],
                         "selective": t["selective"]} for t in d[main]["top"]]} for c, d in per.items()}}
    return out
