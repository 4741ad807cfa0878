"""The dense model's cost of the local-plasticity and divisive-norm constraints (issue 16), apart
from conversion: validation loss (nats/byte) and top-1 agreement with the official forward pass,
for each dense form (semantics/bio_forms.py) on the same windows. Also prints the distribution of
|S| (the official unbounded plastic state) after each window, which the bound w_max is set against.

    python benchmarks/bio_forms_dense.py [--text ../shared/data/tinyshakespeare.txt] [--windows 32]
        [--block-size 256] [--checkpoint CKPT] [--json F]

Without --text: the shipped held-out text (bdh_spiking/data/heldout.txt)."""

from __future__ import annotations

import argparse
import json
import math
import platform

import torch
import torch.nn.functional as F

from bdh_spiking.checkpoint import load_checkpoint
from bdh_spiking.model import causal_linear_attention, rotate_pairs
from bdh_spiking.semantics.bio_forms import BioForms, replaced_forms
from bdh_spiking.text import read_bytes, shipped_text_path, split, to_ids

TOKEN_MS = 100.0  # the ladder's default presentation time: keep = exp(-token_ms / tau_decay_ms)


def forms_to_measure() -> list:
    keep = lambda tau_ms: math.exp(-TOKEN_MS / tau_ms)  # noqa: E731
    rows = [("official (forms None)", None), ("BioForms() defaults", BioForms())]
    rows += [(f"payload {p}", BioForms(payload=p)) for p in ("cos", "none")]
    rows += [(f"w_max {w:g}", BioForms(w_max=w)) for w in (4.0, 1.0, 0.3, 0.1)]
    rows += [(f"tau_decay {t / 1000:g} s", BioForms(keep=keep(t))) for t in (60000.0, 10000.0, 2000.0)]
    local = dict(payload="cos", w_max=4.0, keep=keep(10000.0))  # the shipped [local] defaults
    rows += [("rung 6 (cos, w_max 4, tau 10 s)", BioForms(**local)),
             ("rung 6 + 7 (divisive sigma 0.1, mean subtracted)", BioForms(**local, norm_kind="divisive", sigma=0.1,
                                                                          subtract_mean=True))]
    rows += [(f"divisive sigma {s:g}{'' if m else ', no mean'}", BioForms(norm_kind="divisive", sigma=s,
                                                                         subtract_mean=m))
             for s, m in ((0.01, True), (0.1, True), (0.3, True), (1.0, True), (0.1, False))]
    return rows


def plastic_state_abs(model, inputs) -> torch.Tensor:
    """|S| of every layer's official plastic state at the end of each window (sum_s q_s x_s^T)."""
    out = []
    with torch.no_grad():
        model.forms = None
        x = F.layer_norm(model.embed(inputs).unsqueeze(1), (model.config.n_embd,))
        cos, sin = model.attn.cos_sin(torch.arange(inputs.shape[1]))
        for layer in range(model.config.n_layer):
            a = F.relu(x @ model.encoder)
            q = rotate_pairs(a, cos, sin)
            out.append((q.mT @ x).abs().reshape(-1))
            y_kv = F.layer_norm(causal_linear_attention(q, x), (x.shape[-1],))
            g = a * F.relu(y_kv @ model.encoder_v)
            B, H, T, N = g.shape
            y = g.transpose(1, 2).reshape(B, 1, T, N * H) @ model.decoder
            x = F.layer_norm(x + F.layer_norm(y, (y.shape[-1],)), (x.shape[-1],))
    return torch.cat(out)


def recall_accuracy(path: str, episodes: int = 256, K: int = 8, G: int = 16, seed: int = 12345) -> list:
    """Accuracy (argmax at the answer bytes; chance 0.1) of a recall model under each payload form,
    K pairs, gap G, episodes from seed (disjoint from training's): the oscillator payload's part in
    binding a key to its value (docs/study.md, "Associative recall")."""
    from bdh_spiking.tasks.recall import make_batch

    model, _ = load_checkpoint(path)
    model.eval()
    batch = make_batch(seed, K, G, episodes)
    ids = torch.as_tensor(batch.ids, dtype=torch.int64)
    pos = torch.as_tensor(batch.answers) - 1  # the prediction at the byte before each answer
    truth = ids[:, torch.as_tensor(batch.answers)]
    rows = []
    forms_list = [("official", None)] + [(f"payload {p}", BioForms(payload=p)) for p in ("cos", "none")]
    forms_list += [(f"w_max {w:g}", BioForms(w_max=w)) for w in (4.0, 1.0)]
    forms_list += [("local: cos, w_max 4, tau 10 s", BioForms(payload="cos", w_max=4.0, keep=math.exp(-TOKEN_MS / 1e4))),
                   ("divisive sigma 0.1", BioForms(norm_kind="divisive", sigma=0.1, subtract_mean=True))]
    for label, forms in forms_list:
        with torch.no_grad(), replaced_forms(model, forms):
            logits, _ = model(ids)
        acc = float((logits[:, pos].argmax(-1) == truth).double().mean())
        rows.append({"form": label, "recall_accuracy": acc, "K": K, "G": G, "episodes": episodes})
        print(f"recall {label:26s} accuracy {acc:.3f} (K={K}, G={G}, {episodes} episodes, chance 0.1)", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--json", default=None)
    ap.add_argument("--recall", default=None, metavar="CKPT", help="also: recall accuracy of this recall model")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(a.checkpoint)
    model.eval()
    if a.text:
        data, name = split(read_bytes(a.text))[1], f"{a.text} (validation split)"
    else:
        data, name = read_bytes(shipped_text_path("heldout.txt")), "shipped heldout.txt"
    count = min(a.windows, (len(data) - 1) // a.block_size)
    ids = to_ids(data[: count * a.block_size + 1])
    inputs, targets = ids[:-1].view(count, a.block_size), ids[1:].view(count, a.block_size)
    with torch.no_grad():
        ref, _ = model(inputs)
    s_abs = plastic_state_abs(model, inputs)
    qs = {p: float(torch.quantile(s_abs[torch.randperm(s_abs.numel(), generator=torch.Generator().manual_seed(0))
                                        [:2_000_000]], p)) for p in (0.5, 0.99, 0.999)}
    print(f"dense forms | {name}: {count} windows x {a.block_size} bytes | cpu {platform.processor() or 'cpu'}")
    print(f"|S| official state at window end: median {qs[0.5]:.3g}, 99% {qs[0.99]:.3g}, 99.9% {qs[0.999]:.3g}, "
          f"max {float(s_abs.max()):.3g}")
    rows = []
    for label, forms in forms_to_measure():
        with torch.no_grad(), replaced_forms(model, forms):
            logits, loss = model(inputs, targets)
        top1 = float((logits.argmax(-1) == ref.argmax(-1)).double().mean())
        rows.append({"form": label, "val_loss": float(loss), "top1_vs_official": top1,
                     "identical": bool(torch.equal(logits, ref))})
        print(f"{label:34s} loss {float(loss):.4f}  top-1 vs official {100 * top1:6.2f}%  "
              f"bit-identical {rows[-1]['identical']}", flush=True)
    recall = recall_accuracy(a.recall) if a.recall else []
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"text": name, "windows": count, "block_size": a.block_size, "S_abs_quantiles": qs,
                       "token_ms": TOKEN_MS, "rows": rows,
                       "recall": recall}, fh, indent=1)


if __name__ == "__main__":
    main()
