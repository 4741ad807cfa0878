"""bdh-convert --mode biophysical: the report (or a sweep of reports) of Brian2's biophysical mode,
and the monitor run behind its figures."""

from __future__ import annotations

from pathlib import Path

import torch

from .backends.brian2.params import ALIASES, PARAMS, load_params
from .backends.registry import BIO_RECORDABLE
from .errors import ConfigError

SWEEPABLE = {"token-ms": "token_ms", "max-rate": "max_rate_hz", "noise": "noise"}


def parse_sweep(text: str):
    """'token-ms=50,100,200' -> ('token_ms', 'token-ms', [50.0, 100.0, 200.0])."""
    if "=" not in text:
        raise ConfigError(f"--sweep expects PARAM=v1,v2,... with PARAM one of {', '.join(SWEEPABLE)}; got {text!r}")
    name, values = text.split("=", 1)
    name = name.strip()
    if name not in SWEEPABLE:
        raise ConfigError(f"cannot sweep {name!r}: use one of {', '.join(SWEEPABLE)}")
    try:
        vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep {name}: expected comma-separated numbers, got {values!r}") from None
    if not vals:
        raise ConfigError(f"--sweep {name}: no values given")
    return SWEEPABLE[name], name, vals


def _check_args(args, backends) -> list:
    """The biophysical flags' consistency; returns the monitors asked for with --record."""
    if args.mode != "biophysical":
        raise ConfigError("--token-ms, --max-rate, --noise, --bio-params, --sweep and --record belong to "
                          "--mode biophysical")
    if list(backends) != ["brian2"]:
        raise ConfigError(f"--mode biophysical runs on --backend brian2 only (got {','.join(backends)})")
    record = [r.strip() for r in (args.record or "").split(",") if r.strip()]
    bad = set(record) - set(BIO_RECORDABLE)
    if bad:
        raise ConfigError(f"--record: unknown monitor(s) {sorted(bad)}: use {', '.join(BIO_RECORDABLE)}")
    return record


def check_biophysical(args, backends) -> None:
    """The biophysical flags (--record, --sweep, mode and backend, the Brian2 device for every rung
    to run), checked before any work."""
    _check_args(args, backends)
    if args.sweep:
        parse_sweep(args.sweep)
    from .backends.brian2.devices import check_device
    from .semantics.ladder import DEFAULT_RUNG, parse_ladder

    for rung in parse_ladder(args.ladder) if getattr(args, "ladder", None) else (DEFAULT_RUNG,):
        check_device(getattr(args, "brian2_device", None), rung, getattr(args, "threads", None))
    # every rung's own parameter checks (e.g. [local], [divnorm]) before the conversion
    from .backends.brian2.rungs import network_spec

    par = _params({"params_file": args.bio_params, "token_ms": args.token_ms, "max_rate_hz": args.max_rate,
                   "noise": args.noise})
    for rung in parse_ladder(args.ladder) if getattr(args, "ladder", None) else (DEFAULT_RUNG,):
        network_spec(rung, par)


def _params(options: dict) -> dict:
    return load_params(options.get("params_file"), **{k: x for k, x in options.items() if k in PARAMS or k in ALIASES})


def run_cli_biophysical(args, model, net, ids, backends, timesteps, device, dtype, text_name, log) -> int:
    """The report (or a sweep of reports) of mode 'biophysical'; called by bdh-convert."""
    from .report import compare

    record = _check_args(args, backends)
    base = {"token_ms": args.token_ms, "max_rate_hz": args.max_rate, "noise": args.noise}
    base = {k: v for k, v in base.items() if v is not None}
    base.update({k: v for k, v in (("brian2_device", getattr(args, "brian2_device", None)),
                                   ("threads", getattr(args, "threads", None))) if v is not None})
    target = getattr(args, "brian2_target", "auto")
    if args.bio_params:
        base["params_file"] = args.bio_params
    ladder = getattr(args, "ladder", None)
    if ladder:
        from .semantics.ladder import parse_ladder

        run_ladder(args, model, net, ids, parse_ladder(ladder), dict(base, target=target), timesteps, device, dtype,
                   text_name, log)
        if record:
            _monitor_run(args, net, ids, timesteps, target, base, record, log)
        return 0
    sweep = parse_sweep(args.sweep) if args.sweep else None
    values = sweep[2] if sweep else [None]
    runs = [dict(base, **({sweep[0]: v} if sweep else {})) for v in values]
    for opts in runs:  # every parameter set is validated before the first run
        _params(opts)
    reports = []
    for v, opts in zip(values, runs):
        if sweep:
            log(f"sweep {sweep[1]} = {v:g}")
        # the report's reference baseline (the "vs ref" count columns) runs mode 'discrete' at the
        # same coding/T; the fidelity numbers are against the dense model
        report = compare(model, net, ids, backends=["brian2"], timesteps=timesteps, codings=[args.coding],
                         include_graded=False, mode="biophysical", max_spikes=args.max_spikes, device=device,
                         dtype=dtype, text_name=text_name, seed=args.seed, progress=True, log=log,
                         backend_options={"brian2": dict(opts, target=target)})
        for run in report.runs:  # coding and T do not apply: LIF neurons, windows of token_ms
            run.update(biophysical=_params(opts), coding="lif", timesteps=None)
        if sweep:
            print(f"--- {sweep[1]} = {v:g} ---")
        print(report.table())
        reports.append(report)
    _write_outputs(args, sweep, values, reports, log)
    if record:
        _monitor_run(args, net, ids, timesteps, target, base, record, log)
    return 0


def run_ladder(args, model, net, ids, rungs: tuple, opts: dict, timesteps, device, dtype, text_name, log):
    """--ladder: one report per rung on the same text, printed as one table; --json, --plots."""
    from .biophysical_figures import plot_ladder
    from .ladder_report import ladder_report, ladder_table
    from .report import compare

    _params(opts)
    reports = []
    for rung in rungs:
        log(f"ladder rung {rung}")
        report = compare(model, net, ids, backends=["brian2"], timesteps=timesteps, codings=[args.coding],
                         include_graded=False, mode="biophysical", max_spikes=args.max_spikes, device=device,
                         dtype=dtype, text_name=text_name, seed=args.seed, progress=True, log=log,
                         backend_options={"brian2": dict(opts, ladder=rung)})
        for run in report.runs:
            run.update(biophysical=_params(opts), coding="lif", timesteps=None)
        reports.append(report)
    report = ladder_report(reports, rungs)
    print(ladder_table(report))
    if args.json:
        report.to_json(args.json)
        log(f"wrote {args.json}")
    if args.plots:
        log(f"wrote {plot_ladder(report.runs, Path(args.plots) / 'ladder.png')}")
    return report


def _write_outputs(args, sweep, values, reports, log) -> None:
    """--json (one report, or the sweep's), the sweep's fidelity plot or the report's plots."""
    from .biophysical_figures import plot_sweep
    from .fileio import atomic_write_text, json_text

    if args.json:
        doc = reports[0].to_dict() if not sweep else {
            "sweep": {"parameter": sweep[1], "values": values}, "reports": [r.to_dict() for r in reports]}
        atomic_write_text(args.json, json_text(doc, default=lambda o: o.tolist()
                                                if isinstance(o, torch.Tensor) else str(o)) + "\n")
        log(f"wrote {args.json}")
    if sweep:
        out = Path(args.plots or ".")
        rows = [r.runs[-1] for r in reports]
        path = plot_sweep(sweep[1], values, rows, out / f"fidelity_vs_{sweep[1].replace('-', '_')}.png")
        log(f"wrote {path}")
    elif args.plots:
        _staged_plots(args.plots, reports[0].plot, log)


def _monitor_run(args, net, ids, timesteps, target, base, record, log) -> None:
    """--record: one run of the first sequence with the monitors, plotted into --plots."""
    from .backends import simulate
    from .biophysical_figures import plot_monitors

    log(f"monitor run (first sequence, {ids.shape[1]} tokens): {', '.join(record)}")
    base = {k: v for k, v in base.items() if k not in ("brian2_device", "threads")}  # rung rate-linearized: runtime
    result = simulate(net, ids[:1], backend="brian2", timesteps=timesteps[-1], coding=args.coding,
                      max_spikes=args.max_spikes, mode="biophysical", record=tuple(record), target=target, **base)
    if args.plots:
        _staged_plots(args.plots, lambda tmp: plot_monitors(result, tmp), log)
    else:
        log("--record without --plots: nothing written (give --plots DIR)")


def _staged_plots(directory, draw, log) -> None:
    """draw(tmp) -> paths: every figure is drawn before any replaces an old one in ``directory``."""
    from .fileio import staged_files

    with staged_files(directory) as tmp:
        names = [Path(p).name for p in draw(tmp)]
    for name in names:
        log(f"wrote {Path(directory) / name}")
