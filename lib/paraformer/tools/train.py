"""One training run from the command line, with a profile's data, width and recipe, through the same `train()` as
the notebooks: the run cache answers a finished run at once and an interrupted one resumes.

    python -m paraformer.tools.train --model 1-6 --method authors --dataset cifar10 --profile gpu
    torchrun --nproc_per_node 2 -m paraformer.tools.train ... --parallel branch
    python -m paraformer.tools.train --report-stale --profile quick   # what make reproduce prints last
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from ..core.config import METHODS, PARALLELISMS, SOLVERS, ConfigError, OneLineArgumentParser
from ..core.data import DatasetNotFoundError, load_data
from ..core.paths import results_dir
from ..core.runcache import RunCacheError, run_paths
from ..experiments.profiles import PROFILES, get_profile, profile_device
from ..parallel.processes import RankFailure
from ..training import train
from ..training.numerics import report_stale


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m paraformer.tools.train",
        description="Train one model with a profile's data, width and recipe, through the same train() as the "
                    "notebooks: the run cache answers a finished run at once and an interrupted one resumes. The "
                    "record goes to the profile's results folder (results/ for quick, results/<profile>/ otherwise).",
        epilog="example: python -m paraformer.tools.train --model 1-6 --method authors --dataset cifar10 --profile gpu")
    parser.add_argument("--model", help="Para-F-m-n name: m layers per branch, n in all (1-6: six branches of one "
                                         "layer; 6-6: ViT-6)")
    parser.add_argument("--dataset", help="registry name (cifar10, fashion_mnist, ...) or an ImageFolder path")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="data subset, width and recipe to use")
    parser.add_argument("--method", choices=METHODS, default="joint", help="how the branches learn (default joint)")
    parser.add_argument("--seed", type=int, help="training seed (default: the profile's first)")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--batch-size", type=int, help="override the profile's batch size")
    parser.add_argument("--lr", type=float, help="override the profile's peak learning rate")
    parser.add_argument("--n-train", type=int, help="training images (default: the profile's)")
    parser.add_argument("--n-test", type=int, help="test images (default: the profile's)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the profile's, auto; at gpu and paper, "
                                          "auto without CUDA is refused: say cpu to mean it)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction,
                        help="torch.compile the model (default: the profile's)")
    parser.add_argument("--step", help="the layers' step h (ModelConfig.step): a number, or 1/depth (default 1, "
                                       "the ordinary layer)")
    parser.add_argument("--solver", choices=SOLVERS,
                        help="gradients by backprop (default) or by MGRIT across the layers of a ViT")
    parser.add_argument("--mgrit-iterations", type=int, nargs=2, metavar=("FORWARD", "ADJOINT"),
                        help="MGRIT cycles of the forward and adjoint solves (default 1 1)")
    parser.add_argument("--mgrit-coarsening", type=int, help="MGRIT coarsening factor (default 4)")
    parser.add_argument("--mgrit-check-every", type=int,
                        help="steps between checks of the MGRIT gradient against backprop (default 0: never)")
    parser.add_argument("--parallel", choices=PARALLELISMS[1:],
                        help="under torchrun: share the run across its processes by data, branch or layer "
                             "parallelism (layer: with --solver mgrit)")
    parser.add_argument("--name", help="run name (default: <dataset>-<model>[-<method>])")
    parser.add_argument("--log-every", type=int, default=50, help="steps between reads of the step log (default 50)")
    parser.add_argument("--report-stale", action="store_true",
                        help="only say how many cached runs of --profile are not this code's numbers")
    args = parser.parse_args(argv)
    if args.report_stale:
        return report_stale(results_dir(args.profile))
    missing = [f"--{name}" for name in ("model", "dataset", "profile") if getattr(args, name) is None]
    if missing:
        parser.error(f"a run needs {', '.join(missing)}")
    rank = int(os.environ.get("RANK", "0"))  # rank 0 speaks for a run across processes
    try:
        scale = get_profile(args.profile).scale
        sizes = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v is not None}
        if args.n_test is not None and scale.n_test_per_epoch is not None and scale.n_test_per_epoch >= args.n_test:
            sizes["n_test_per_epoch"] = None  # fewer test images than the profile's curves use: curves on all
        data_config = replace(scale.data_config(args.dataset), **sizes)
        world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
        overrides = {"method": args.method, "seed": args.seed if args.seed is not None else scale.seeds[0],
                     "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "device": args.device,
                     "compile": args.compile, "solver": args.solver, "mgrit_iterations": args.mgrit_iterations,
                     "mgrit_coarsening": args.mgrit_coarsening, "mgrit_check_every": args.mgrit_check_every,
                     "parallel": args.parallel, "processes": world if world > 1 or args.parallel else None}
        recipe = replace(scale.recipe, **{k: v for k, v in overrides.items() if v is not None})
        profile_device(args.profile, recipe.device)  # before the data: a GPU profile refuses a silent CPU
        data = load_data(data_config)
        model_config = scale.model_config(args.model, data)
        if args.step is not None:
            try:
                step = 1.0 / model_config.num_layers if args.step == "1/depth" else float(args.step)
            except ValueError:
                raise ConfigError(f"--step {args.step!r} must be a number or 1/depth") from None
            model_config = replace(model_config, step=step)
        if rank == 0:
            print(f"{model_config.name} ({args.method}) on {data!r}\n{recipe.describe()}", flush=True)
        result = train(model_config, data_config, recipe, name=args.name, data=data, log_every=args.log_every,
                       results_root=results_dir(args.profile))
    except (ConfigError, DatasetNotFoundError, RunCacheError, FloatingPointError, RankFailure) as error:
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, RankFailure) else 2
    if rank != 0:
        return 0
    record = run_paths(result.name, result.key, results_dir(args.profile))[0]
    origin = "from the run cache" if result.cached else f"trained in {result.wall_seconds:.0f} s on {result.device}"
    print(f"{result.name}: final test accuracy {result.final_test_acc:.2f}% ({origin}); record {record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
