"""bdh-convert: convert a dense BDH, run it on backends and report how closely it reproduces the
dense model; optionally save, export, generate, place on chips and price it."""

from __future__ import annotations

import argparse

from .common import (Parser, add_network_args, backend_options, check_input_file, check_network_outputs, entry_point,
                     int_list, log, nonneg_float, positive_float, positive_int, prepare_network, refuse, simulation_args,
                     write_outputs)


def convert_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-convert",
        description="Convert a dense BDH into a spiking network, run it on one or more backends and "
                    "report how closely it reproduces the dense model.",
        example="bdh-convert --backend reference,snntorch -T 8 --save net.bdhsnn --json report.json --plots plots/",
    )
    add_network_args(p)
    p.add_argument("--sweep-T", type=int_list, default=None, metavar="T1,T2,...",
                   help="run every T in the list (plots fidelity vs T with --plots)")
    p.add_argument("--save", metavar="NET", help="write the converted network (.bdhsnn)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here")
    p.add_argument("--generate", type=positive_int, default=None, metavar="N",
                   help="sample N bytes from the spiking network (reference executor)")
    p.add_argument("--prompt", default="ROMEO:\n", help="prompt for --generate")
    p.add_argument("--no-graded", action="store_true", help="skip the graded T=1 structural check run")
    p.add_argument("--energy", action="store_true",
                   help="also print the energy-per-token table (bdh-energy) for the last T")
    p.add_argument("--profile", default=None, metavar="NAME|all|FILE",
                   help="hardware profile(s) for --energy: NAME[,NAME...], 'all' (default) or a .toml file")
    p.add_argument("--hardware-fit", default=None, metavar="PROFILE|all",
                   help="print the cores/chips the network needs on these profiles (bdh_spiking.hardware_fit); "
                        "printed for loihi2 whenever --backend includes lava")
    p.add_argument("--save-lava", metavar="DIR", default=None,
                   help="write what rebuilds the Lava process graph without the checkpoint (network file + "
                        "process graph JSON; needs pip install 'bdh-spiking[lava]')")
    p.add_argument("--export-nir", metavar="FILE", default=None,
                   help="also write the parts of the network NIR can express as a NIR graph (HDF5; needs "
                        "pip install 'bdh-spiking[nir]'); what NIR cannot hold is listed on stderr and in the file")
    b = p.add_argument_group("mode biophysical (--backend brian2; parameters: bdh_spiking/data/biophysical.toml)")
    b.add_argument("--token-ms", type=positive_float, default=None, help="presentation time of one byte in ms")
    b.add_argument("--max-rate", type=positive_float, default=None, help="firing rate (Hz) of a unit input current")
    b.add_argument("--noise", type=nonneg_float, default=None, help="membrane noise std (threshold units)")
    b.add_argument("--bio-params", metavar="FILE", default=None, help="TOML file overriding the shipped parameters")
    b.add_argument("--sweep", metavar="PARAM=v1,v2,...", default=None,
                   help="run the report for each value of token-ms, max-rate or noise and plot fidelity vs it")
    b.add_argument("--record", metavar="spikes,v,weights", default=None,
                   help="monitors of chosen neurons/synapses; plotted into --plots")
    b.add_argument("--ladder", metavar="RUNG[,RUNG..]|all", default=None,
                   help="run each rung of the biological fidelity ladder (cumulative: rate-linearized, lif) and "
                        "report them as one table (docs/spiking-semantics.md, 'The fidelity ladder')")
    b.add_argument("--brian2-device", choices=["auto", "runtime", "cpp_standalone", "cuda_standalone"], default=None,
                   help="Brian2 device: auto (default) = cpp_standalone for rungs from psc on when a C++ compiler "
                        "works, else runtime; rate-linearized and lif always run on runtime (--brian2-target "
                        "chooses its code generator); cuda_standalone needs brian2cuda (untested)")
    b.add_argument("--threads", type=positive_int, default=None,
                   help="OpenMP threads of a standalone Brian2 device (default: Brian2's, no OpenMP)")
    return p


def check_flags(args) -> None:
    """Flags that cannot do what they say in the chosen mode: refused before any work."""
    bio = args.mode == "biophysical"
    if args.ladder:  # unknown rungs or rungs out of order: refused before any work
        from ..semantics.ladder import parse_ladder

        parse_ladder(args.ladder)
    refuse([
        (args.ladder and not bio, "--ladder runs rungs of --mode biophysical (add --mode biophysical)"),
        (args.ladder and args.sweep, "--ladder and --sweep cannot be combined: run one, then the other"),
        ((args.brian2_device or args.threads) and not bio, "--brian2-device and --threads belong to --mode "
                                                           "biophysical"),
        (bio and args.hardware_fit, "--hardware-fit places the discrete network on chip cores: not available "
                                    "with --mode biophysical"),
        (bio and args.save_lava, "--save-lava writes the Lava process graph of mode discrete or fixed-point: "
                                 "not available with --mode biophysical"),
        (bio and (args.energy or args.generate or args.export_nir or args.save),
         "--energy, --generate, --export-nir and --save take the discrete network: not available with --mode "
         "biophysical"),
        (args.generate and args.mode == "fixed-point", "--generate samples from the floating-point network "
                                                       "(reference, mode discrete): not available with --mode "
                                                       "fixed-point"),
    ])


def biophysical_asked(args) -> bool:
    return args.mode == "biophysical" or bool(args.sweep or args.record or args.bio_params) or any(
        v is not None for v in (args.token_ms, args.max_rate, args.noise))


@entry_point
def main(argv=None):
    args = convert_parser().parse_args(argv)
    check_flags(args)
    check_network_outputs(args)
    check_input_file(args.bio_params, "--bio-params")
    timesteps = args.sweep_T or [args.timesteps]
    backends, device, dtype = simulation_args(args, timesteps)
    if biophysical_asked(args):
        from ..cli_biophysical import check_biophysical

        check_biophysical(args, backends)
    energy_profiles = None
    if args.energy or args.profile is not None:
        from ..energy import parse_profiles

        energy_profiles = parse_profiles(args.profile or "all")
    if args.export_nir:  # a missing nir fails before the runs
        from ..nir_export import _import_nir

        _import_nir()
    fit_spec = args.hardware_fit or ("loihi2" if "lava" in backends else None)
    from .. import distributed

    distributed.start_cli(args, device)  # under torchrun: rank 0 converts, every rank gets its network
    model, net, ids, text_name = distributed.on_main_then_broadcast(lambda: prepare_network(args))
    if args.mode == "fixed-point":
        from ..conversion.quantize import describe, ensure_quantized, is_quantized, quantize

        net = ensure_quantized(net)[0] if is_quantized(net) else quantize(net)
        log(f"quantized: {describe(net)}")
    fit_profiles = None
    if fit_spec:  # bad profile names fail before the runs
        from ..hardware_fit import parse_fit_profiles

        fit_profiles = parse_fit_profiles(fit_spec)
    if biophysical_asked(args):
        from ..cli_biophysical import run_cli_biophysical

        return run_cli_biophysical(args, model, net, ids, backends, timesteps, device, dtype, text_name, log)
    from ..report import compare

    report = compare(model, net, ids, backends=backends, timesteps=timesteps, codings=[args.coding],
                     include_graded=not args.no_graded, mode=args.mode, max_spikes=args.max_spikes,
                     device=device, dtype=dtype, text_name=text_name, seed=args.seed, progress=True, log=log,
                     backend_options=backend_options(args))
    print(report.table())
    write_extras(args, model, net, ids, report, backends, timesteps[-1], device, dtype, text_name,
                 energy_profiles, fit_profiles)
    return 0


def write_extras(args, model, net, ids, report, backends, last_T, device, dtype, text_name, energy_profiles,
                 fit_profiles) -> None:
    """What the flags ask for after the report, in this order: Lava graph, pairwise table, chip
    placement, energy table, generated text, NIR graph, network file, JSON and plots."""
    if args.save_lava:
        from ..backends import load_backend
        from ..semantics import SimSettings

        lava = load_backend("lava")
        lava.save_process_graph(net, args.save_lava, SimSettings(timesteps=last_T, coding=args.coding,
                                                                 max_spikes=args.max_spikes, mode=args.mode),
                                lava_graph=args.lava_graph)
        log(f"wrote the Lava process graph to {args.save_lava} (rebuild: "
            "bdh_spiking.backends.lava.simulate_saved(DIR, ids))")
    if report.meta.get("pairwise"):  # more than one backend ran
        print()
        print(report.pairwise_table())
    if fit_profiles is not None:
        from ..hardware_fit import fit_all, table

        print()
        print(table(fit_all(net, fit_profiles)))
        if args.lava_graph == "explicit":
            _fit_explicit_graph(args, net, last_T, fit_profiles)
    if energy_profiles is not None:
        from ..energy import estimate

        print()
        print(estimate(model, net, ids, backends=backends, profiles=energy_profiles, timesteps=last_T,
                       coding=args.coding, mode=args.mode, max_spikes=args.max_spikes, device=device, dtype=dtype,
                       text_name=text_name, log=log, backend_options=backend_options(args)).table())
    if args.generate:
        from ..generate import generate

        text = generate(net, args.prompt, args.generate, timesteps=last_T, coding=args.coding,
                        max_spikes=args.max_spikes, device=device, seed=args.seed)
        print(f"\n--- sampled from the spiking network (reference, {args.coding}, T={last_T}) ---")
        print(text)
    if args.export_nir:
        from ..nir_export import export_nir, format_lost

        info = export_nir(net, args.export_nir, timesteps=last_T)
        log(f"wrote NIR graph {args.export_nir} ({info['bytes']:,} bytes; nodes "
            f"{', '.join(f'{k} {v}' for k, v in sorted(info['nodes'].items()))}; T = {last_T})")
        log(format_lost(info["lost"]))
    if args.save:
        net.save(args.save)
        log(f"wrote network {args.save}")
    write_outputs(report, args)


def _fit_explicit_graph(args, net, last_T, fit_profiles) -> None:
    """--hardware-fit with --lava-graph explicit: the placement of the graph that runs, process by process."""
    from ..backends import load_backend
    from ..hardware_fit import fit_lava_graph, graph_table
    from ..semantics import SimSettings

    settings = SimSettings(timesteps=last_T, coding=args.coding, max_spikes=args.max_spikes, mode=args.mode)
    spec = load_backend("lava").spec_of(net, settings, None, "explicit")
    print()
    print(graph_table([fit_lava_graph(spec, p) for p in fit_profiles]))

