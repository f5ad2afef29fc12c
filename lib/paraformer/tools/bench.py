"""The benchmarks of a profile, from the command line, each with that profile's settings
(`paraformer.experiments.profiles`):

    python -m paraformer.tools.bench --profile quick                      # make bench: strategies, layers, multi
    python -m paraformer.tools.bench --profile quick --only throughput    # make throughput: ours against timm's
    python -m paraformer.tools.bench --profile quick --only convergence   # MGRIT's error against serial

Everything goes to the profile's results folder: bench/<profile>/*.csv, and tables/mgrit_convergence.* for the
convergence table.
"""

from __future__ import annotations

import sys

import torch

from ..bench import convergence, speed, throughput
from ..core.config import ConfigError, OneLineArgumentParser
from ..core.provenance import device_name
from ..experiments.profiles import PROFILES, get_profile, profile_device

CHOICES = (*speed.BENCHMARKS, "throughput", "convergence")


def _positive_int(text: str) -> int:
    value = int(text)  # argparse reports its ValueError, and the one below, as an invalid value
    if value < 1:
        raise ValueError(f"{text!r} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--only", nargs="+", default=list(speed.BENCHMARKS), choices=CHOICES,
                        help=f"which benchmarks (default: {' '.join(speed.BENCHMARKS)})")
    parser.add_argument("--processes", nargs="+", type=_positive_int, default=None,
                        help="process counts of the multi-process benchmark, one device (GPU or CPU core) each "
                             "(default: the profile's, 1 and 2, up to what this machine has); counts beyond it are "
                             "reported as not measured here")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when present, else the CPU (refused at gpu and paper: say cpu to mean it)")
    parser.add_argument("--batches", type=_positive_int, nargs="+", help="throughput: batch sizes (default: the "
                                                                         "profile's)")
    parser.add_argument("--repeats", type=_positive_int, help="throughput: timed rounds (default: the profile's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    profile = get_profile(args.profile)
    try:
        if "throughput" in args.only and profile.throughput is None:  # before anything is measured
            raise ConfigError(f"profile {args.profile!r} has no throughput settings; use ci, quick or gpu")
        timed = [name for name in args.only if name in speed.BENCHMARKS]
        if timed or "throughput" in args.only:  # the convergence table is computed on the CPU whatever the profile
            device = profile_device(args.profile, args.device)
        if timed:
            speed.run(profile.bench, profile.multi, tuple(timed),
                      tuple(args.processes) if args.processes else None, device)
        if "throughput" in args.only:
            print(f"throughput profile {args.profile} on {device_name(device)}", file=sys.stderr)
            speed.steady_allocator()  # as make bench does: freed memory stays in the process, for steadier times
            table = throughput.measure(profile.throughput, device, tuple(args.batches) if args.batches else None,
                                       args.repeats)
            csv_path, md_path = throughput.write(table, throughput.output_path(args.profile))
            target = throughput.speed_target(table)
            print(f"wrote {speed.shown(csv_path)} and {md_path.name}; target ({throughput.TARGET}) "
                  f"{'met' if target['met'] else 'NOT met'}: {target['rows_met']} of {target['rows']} rows, worst "
                  f"{target['worst_ratio']:.2f}x")
        if "convergence" in args.only:
            paths = convergence.write(convergence.convergence_table(profile.convergence), profile.convergence,
                                      args.profile)
            print("wrote", *(speed.shown(p) for p in paths), file=sys.stderr)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
