"""bdh-energy: energy per token of the spiking network on hardware profiles, next to the dense model."""

from __future__ import annotations

import argparse

from .common import (Parser, add_network_args, backend_options, check_network_outputs, entry_point, log,
                     prepare_network, simulation_args, write_outputs)


def energy_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bdh-energy",
        description="Energy per token of the spiking network on neuromorphic hardware profiles, counted from "
                    "each backend's actual spikes, next to the dense model on conventional hardware.",
        example="bdh-energy --load net.bdhsnn --backend reference --profile loihi2,truenorth --json energy.json",
    )
    add_network_args(p)
    p.add_argument("--profile", default="all", metavar="NAME|all|FILE",
                   help="hardware profile(s): NAME[,NAME...], 'all' (default) or a .toml profile file")
    p.add_argument("--json", metavar="FILE", help="write one row per backend x profile (and the dense baselines)")
    p.add_argument("--plots", metavar="DIR", help="write the energy-per-token plot here")
    return p


@entry_point
def main(argv=None):
    args = energy_parser().parse_args(argv)
    check_network_outputs(args)
    from ..energy import estimate, parse_profiles

    profiles = parse_profiles(args.profile)
    backends, device, dtype = simulation_args(args, [args.timesteps])
    from .. import distributed

    distributed.start_cli(args, device)  # under torchrun: rank 0 converts, every rank gets its network
    model, net, ids, text_name = distributed.on_main_then_broadcast(lambda: prepare_network(args))
    report = estimate(model, net, ids, backends=backends, profiles=profiles, timesteps=args.timesteps,
                      coding=args.coding, mode=args.mode, max_spikes=args.max_spikes, device=device, dtype=dtype,
                      text_name=text_name, progress=True, log=log, backend_options=backend_options(args))
    print(report.table())
    write_outputs(report, args)
    return 0
