"""The fidelity ladder's report: one row per rung (bdh-convert's report schema {meta, runs}), its
console table and its checks (docs/spiking-semantics.md, "The fidelity ladder")."""

from __future__ import annotations

import math

from .report import Report

CLIP_LIMIT = 0.02  # the clipped activation mass a rung may have (issue 15)
LADDER_COLUMNS = (("rung", "rung", "{}"), ("brian2 device", "brian2_device", "{}"), ("read", "plastic_read", "{}"), ("top1 %", "top1_agreement", "{:.2%}"), ("dCE %", "ce_rel_diff", "{:+.2%}"),
                  ("KL/tok", "kl_per_token", "{:.3f}"), ("rate Hz (median)", "rate_hz_median", "{:.1f}"),
                  ("active", "fraction_active", "{:.3f}"), ("clipped", "clipped_fraction", "{:.4f}"),
                  ("clipped x / y", None, None), ("Dale viol.", "dale_violations", "{}"),
                  ("neg. rates", "negative_rates", "{}"), ("wall s", "wall_s", "{:.1f}"), ("bytes/s", "tokens_per_s", "{:.3f}"),
                  ("bio s / wall s", "bio_s_per_wall_s", "{:.4f}"))
# why the last column does not compare rungs: what one byte costs in biological time differs
BIO_TIME_NOTE = ("bio s / wall s counts the biological time simulated: rate-linearized and lif run 2L stage windows of "
                 "token_ms per byte, psc and later rungs one token_ms per byte; bytes/s compares rungs")


def ladder_report(reports: list, rungs: tuple) -> Report:
    """One Report whose runs are the rungs' rows (each report ran one rung on the same text)."""
    rows = []
    for rung, report in zip(rungs, reports):
        row = dict(report.runs[-1])
        row["rung"] = rung
        row["clip_limit_met"] = bool(row.get("clipped_fraction", math.inf) <= CLIP_LIMIT)
        rows.append(row)
    meta = dict(reports[0].meta, ladder=list(rungs), clip_limit=CLIP_LIMIT)
    return Report(meta, rows)


def _cell(row: dict, key, fmt) -> str:
    if key is None:  # the per-population clipped fractions
        x, y = row.get("clipped_fraction_x"), row.get("clipped_fraction_y")
        return "-" if x is None else f"{x:.4f} / {y:.4f}"
    value = row.get(key)
    return "-" if value is None else fmt.format(value).replace("%", "")


def ladder_table(report: Report) -> str:
    """The ladder as one table, with the text and a line per rung that misses the clip limit."""
    rows = [[h for h, _, _ in LADDER_COLUMNS]]
    rows += [[_cell(run, key, fmt) for _, key, fmt in LADDER_COLUMNS] for run in report.runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    m = report.meta
    head = (f"fidelity ladder (brian2, mode biophysical) | text: {m['text']['name']} ({m['text']['tokens']} bytes) | "
            f"dense CE {m['dense']['ce']:.4f} | clip limit {CLIP_LIMIT:g}")
    notes = [f"NOT MET: rung {r['rung']} clips {r['clipped_fraction']:.4f} of the x and y activation mass "
             f"(> {CLIP_LIMIT:g})" for r in report.runs if not r["clip_limit_met"]]
    return "\n".join([head, *lines, BIO_TIME_NOTE, *notes])
