"""How far MGRIT with few iterations is from serial training (docs/parallel.md): the relative error of the output and
of the gradient against backpropagation, per iteration count, level count, coarsening, relaxation, step size and
depth, in one process (the iterate does not depend on the ranks), for ViTs at initialization (a fixed seed) on random
images; trained weights are measured in notebook 08. Two step sizes: h = 1, the ViT that the rest of the suite
trains, and h = 1 / depth, the paper's ODE reading with T = 1, in which a coarse step stays close to the fine steps.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..core.config import ConfigError, ModelConfig
from ..core.files import atomic_write_text
from ..core.model import ParaFormer
from ..core.paths import results_dir
from ..core.provenance import code_version
from ..parallel.mgrit import LayerParallel, MGRITConfig, check_layout, flat_gradient, relative_error, serial_reference


@dataclass(frozen=True)
class ConvergenceSettings:
    depths: tuple[int, ...]  # ViT depths N
    iterations: tuple[int, ...]  # forward and backward MGRIT iterations (the same count for both)
    levels: tuple[int, ...]
    coarsenings: tuple[int, ...]
    relaxations: tuple[str, ...]  # on the finest level
    steps: tuple[str, ...]  # "1" or "1/N"
    width: int = 32
    batch: int = 8
    image_size: int = 16  # patch 4: 17 tokens
    seed: int = 0


def convergence_table(setting: ConvergenceSettings, progress: bool = True) -> pd.DataFrame:
    """One row per (depth, step, levels, coarsening, relaxation, iterations) that the layout allows (every
    level's spacing must divide the depth), with the output's and the gradient's relative error."""
    generator = torch.Generator().manual_seed(setting.seed + 1)
    images = torch.randn(setting.batch, 3, setting.image_size, setting.image_size, generator=generator)
    labels = torch.randint(0, 10, (setting.batch,), generator=generator)
    combos = list(itertools.product(setting.depths, setting.steps, setting.levels, setting.coarsenings,
                                    setting.relaxations))
    rows = []
    for depth, step, levels, coarsening, relaxation in tqdm(combos, desc="MGRIT convergence", disable=not progress):
        try:
            check_layout(depth, 1, MGRITConfig(levels=levels, coarsening=coarsening))
        except ConfigError:
            continue  # e.g. 3 levels of coarsening 4 need a depth divisible by 16
        torch.manual_seed(setting.seed)
        model = ParaFormer(ModelConfig(image_size=setting.image_size, patch_size=4, width=setting.width, num_heads=4,
                                       mlp_ratio=2.0, branch_depth=depth, num_layers=depth, num_classes=10))
        if step not in ("1", "1/N"):
            raise ConfigError(f"step {step!r} is not known; use '1' or '1/N'")
        h = 1.0 if step == "1" else 1.0 / depth
        reference = copy.deepcopy(model)
        reference_output, _ = serial_reference(reference, images, labels, h)
        reference_gradient = flat_gradient(reference)
        for iterations in setting.iterations:
            config = MGRITConfig(levels=levels, coarsening=coarsening, fine_relaxation=relaxation,
                                 forward_iterations=iterations, backward_iterations=iterations)
            trial = copy.deepcopy(model)
            solver = LayerParallel(trial, config, h)
            solver.loss_and_gradients(images, labels)
            output = solver.forward(images)
            rows.append(dict(depth=depth, step=step, h=h, levels=levels, coarsening=coarsening,
                             relaxation=relaxation, iterations=iterations,
                             output_error=relative_error(output, reference_output),
                             gradient_error=relative_error(flat_gradient(trial), reference_gradient)))
    return pd.DataFrame(rows)


def output_paths(profile: str, root: Path | None = None) -> tuple[Path, Path]:
    folder = (Path(root) if root is not None else results_dir(profile)) / "tables"
    return folder / "mgrit_convergence.csv", folder / "mgrit_convergence.md"


def write(table: pd.DataFrame, setting: ConvergenceSettings, profile: str,
          root: Path | None = None) -> tuple[Path, Path]:
    """The CSV (every row stamped with the setting, code and torch version) and a Markdown view of the errors."""
    csv_path, md_path = output_paths(profile, root)
    stamped = table.assign(profile=profile, width=setting.width, batch=setting.batch, seed=setting.seed,
                           code_version=code_version(), torch_version=torch.__version__)
    atomic_write_text(stamped.to_csv(index=False, float_format="%.3e"), csv_path)
    keys = ["depth", "step", "levels", "coarsening", "relaxation"]
    wide = table.pivot_table(index=keys, columns="iterations", values=["output_error", "gradient_error"])
    wide = wide[["output_error", "gradient_error"]].sort_index()  # pivot_table sorts the values alphabetically
    wide.columns = [f"{'out' if kind == 'output_error' else 'grad'} it{k}" for kind, k in wide.columns]
    lines = ["# MGRIT against serial: relative error of the output and of the gradient", "",
             wide.reset_index().to_markdown(index=False, floatfmt=".1e"), "",
             f"- ViTs at initialization (seed {setting.seed}), width {setting.width}, batch {setting.batch} of random "
             f"{setting.image_size}x{setting.image_size} images; the same count of forward and backward iterations.",
             f"- Made by `python -m paraformer.tools.bench --profile {profile} --only convergence` ({code_version()}, "
             f"torch {torch.__version__}); settings: {asdict(setting)}."]
    atomic_write_text("\n".join(lines) + "\n", md_path)
    return csv_path, md_path
