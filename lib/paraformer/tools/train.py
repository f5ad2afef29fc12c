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
from ..core.data import DATASETS, DatasetNotFoundError, load_data
from ..core.datasources import DataIntegrityError
from ..core.paths import own_data_results_dir, results_dir
from ..core.runcache import RunCacheError, run_paths
from ..experiments.profiles import PROFILES, get_profile, profile_device
from ..experiments.stats import wilson_interval
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
    parser.add_argument("--warmup-epochs", type=float, help="override the profile's warmup epochs (at most --epochs)")
    parser.add_argument("--batch-size", type=int, help="override the profile's batch size")
    parser.add_argument("--lr", type=float, help="override the profile's peak learning rate")
    parser.add_argument("--n-train", type=image_count, help="training images, or all (default: the profile's)")
    parser.add_argument("--n-test", type=image_count, help="test images, or all (default: the profile's)")
    parser.add_argument("--image-size", type=int, help="resize every image to this square size (default: native)")
    parser.add_argument("--patch-size", type=int, help="patch side in pixels, a divisor of the image size (default: "
                                                      "the profile's for that size)")
    parser.add_argument("--width", type=int, help="token dimension (default: the profile's)")
    parser.add_argument("--heads", type=int, help="attention heads, a divisor of the width (default: the profile's)")
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
    if args.log_every < 1:  # before the data load, not after it
        parser.error(f"--log-every {args.log_every}: give a number of steps >= 1")
    rank = int(os.environ.get("RANK", "0"))  # rank 0 speaks for a run across processes
    try:
        scale = get_profile(args.profile).scale
        shape = {"width": args.width, "num_heads": args.heads, "image_size": args.image_size}
        scale = replace(scale, **{k: v for k, v in shape.items() if v is not None})
        sizes = {k: (None if v == ALL else v) for k, v in (("n_train", args.n_train), ("n_test", args.n_test))
                 if v is not None}
        if (sizes.get("n_test") is not None and scale.n_test_per_epoch is not None
                and scale.n_test_per_epoch >= sizes["n_test"]):
            sizes["n_test_per_epoch"] = None  # fewer test images than the profile's curves use: curves on all
        data_config = replace(scale.data_config(args.dataset), **sizes)
        world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's
        overrides = {"method": args.method, "seed": args.seed if args.seed is not None else scale.seeds[0],
                     "epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "batch_size": args.batch_size,
                     "lr": args.lr, "device": args.device,
                     "compile": args.compile, "solver": args.solver, "mgrit_iterations": args.mgrit_iterations,
                     "mgrit_coarsening": args.mgrit_coarsening, "mgrit_check_every": args.mgrit_check_every,
                     "parallel": args.parallel, "processes": world if world > 1 or args.parallel else None}
        if args.epochs is not None and args.warmup_epochs is None and scale.recipe.warmup_epochs > args.epochs > 0:
            overrides["warmup_epochs"] = float(args.epochs)  # the profile's warmup would outlast the run
            if rank == 0:
                print(f"note: warmup shortened to --epochs {args.epochs} from the profile's "
                      f"{scale.recipe.warmup_epochs:g} epochs (--warmup-epochs sets it)", file=sys.stderr)
        recipe = replace(scale.recipe, **{k: v for k, v in overrides.items() if v is not None})
        profile_device(args.profile, recipe.device)  # before the data: a GPU profile refuses a silent CPU
        if args.dataset in DATASETS and os.path.isdir(args.dataset) and rank == 0:
            print(f"note: --dataset {args.dataset} is the registry's {args.dataset}, not the folder "
                  f"{os.path.join('.', args.dataset)}; pass {os.path.join('.', args.dataset)} for the folder",
                  file=sys.stderr)
        results = results_dir(args.profile) if args.dataset in DATASETS else own_data_results_dir(args.profile)
        data = load_data(data_config)
        size = scale.input_size or data.image_size
        if args.patch_size is not None:
            scale = replace(scale, patch_size={**scale.patch_size, size: args.patch_size})
        elif size not in scale.patch_size:
            raise ConfigError(f"profile {args.profile!r} has no patch size for {size}px images; pass --patch-size "
                              f"(a divisor of {size}), or --image-size to resize to one of {sorted(scale.patch_size)}")
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
                       results_root=results)
    except (ConfigError, DatasetNotFoundError, DataIntegrityError, RunCacheError, FloatingPointError, RankFailure,
            ValueError, OSError) as error:  # OSError: a results folder that cannot be written, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 3 if isinstance(error, RankFailure) else 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130  # the shell's code for Ctrl-C, so that make and scripts stop too
    if rank != 0:
        return 0
    record = run_paths(result.name, result.key, results)[0]
    origin = "from the run cache" if result.cached else f"trained in {result.wall_seconds:.0f} s on {result.device}"
    right = result.correct()  # per test image: the interval from counts, not from the rounded percentage
    images = len(right)
    low, high = wilson_interval(int(right.sum()), images)
    print(f"{result.name}: final test accuracy {result.final_test_acc:.2f}% on all {images} test images (95% "
          f"interval {low:.1f}-{high:.1f}%) ({origin}); record {record}")
    return 0


ALL = "all"


def image_count(text: str) -> int | str:
    """--n-train / --n-test: a count >= 1, or "all"."""
    if text == ALL:
        return ALL
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of images; give a count >= 1 or all") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} images: give a count >= 1 or all")
    return count


if __name__ == "__main__":
    sys.exit(main())
