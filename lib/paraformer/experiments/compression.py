"""Compression by selective branch usage: keep k of a trained ParaFormer's m branches.

Two ways to choose the k branches:
- `prefix`: the first k, the models that progressive training asks to be good on their own;
- `greedy`: forward selection on the validation split: start from no branch and add, each time, the branch
  whose addition gives the highest validation accuracy. The test split is never used to choose.

Every kept model is built for real (`ParaFormer.select_branches`, no weights of dropped branches) and its test
accuracy measured on it. Sizes are reported three ways: parameters (stem and head included), branch
parameters alone, and forward FLOPs counted by torch's FlopCounterMode on one image.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ConfigError, Recipe
from ..data import ImageData
from ..model import ParaFormer
from ..train import evaluate, prepare_batch


def forward_flops(model: ParaFormer) -> int:
    """FLOPs of one image's forward pass (matrix products, convolution and attention; torch's count)."""
    c = model.config
    x = torch.zeros(1, c.in_channels, c.image_size, c.image_size, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@torch.inference_mode()
def branch_cls_outputs(model: ParaFormer, images: torch.Tensor, data: ImageData, batch_size: int = 512) -> torch.Tensor:
    """(num_branches, images, width): every branch's CLS output, so that any subset's sum is a cheap addition."""
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        tokens = model.embed(prepare_batch(images[start:start + batch_size], data, model.config, device))
        chunks.append(torch.stack([branch(tokens) for branch in model.branches]).cpu())
    return torch.cat(chunks, dim=1)


@torch.inference_mode()
def _subset_accuracy(model: ParaFormer, outputs: torch.Tensor, labels: torch.Tensor, subset: list[int]) -> float:
    total = outputs[subset[0]]
    for b in subset[1:]:  # in selection order, one at a time, as the compressed model sums them
        total = total + outputs[b]
    head_device = next(model.parameters()).device
    predicted = model.classify(total.to(head_device)).argmax(1).cpu()
    return 100.0 * (predicted == labels).sum().item() / len(labels)


def greedy_order(model: ParaFormer, outputs: torch.Tensor, labels: torch.Tensor) -> list[tuple[list[int], float]]:
    """Forward selection: for k = 1..m, the chosen subset of k branches and its accuracy on `labels`."""
    chosen, steps = [], []
    remaining = list(range(model.num_branches))
    while remaining:
        scores = {b: _subset_accuracy(model, outputs, labels, chosen + [b]) for b in remaining}
        best = max(remaining, key=lambda b: (scores[b], -b))  # ties go to the earlier branch
        chosen.append(best)
        remaining.remove(best)
        steps.append((list(chosen), scores[best]))
    return steps


def compression_table(model: ParaFormer, data: ImageData, recipe: Recipe) -> pd.DataFrame:
    """One row per (selection, k): the kept branches, validation and test accuracy, and the three ratios."""
    if len(data.val_labels) == 0:
        raise ConfigError("compression chooses branches on a validation split, and this data has none; "
                          "set DataConfig.val_fraction > 0")
    val_outputs = branch_cls_outputs(model, data.val_images, data)
    full_params, full_flops = model.num_parameters(), forward_flops(model)
    branch_params = sum(p.numel() for p in model.branches[0].parameters())
    m = model.num_branches
    candidates = [("prefix", list(range(k))) for k in range(1, m + 1)]
    candidates += [("greedy", subset) for subset, _ in greedy_order(model, val_outputs, data.val_labels)]
    rows = []
    for selection, subset in candidates:
        kept = model.select_branches(subset)
        params = kept.num_parameters()
        rows.append({
            "selection": selection, "branches_kept": len(subset), "layers_kept": len(subset) * model.config.branch_depth,
            "branches": " ".join(map(str, subset)),
            "val_acc": _subset_accuracy(model, val_outputs, data.val_labels, subset),
            "test_acc": evaluate(kept, data.test_images, data.test_labels, data, recipe),
            "params": params, "param_ratio": full_params / params, "branch_ratio": m / len(subset),
            "flops_ratio": full_flops / forward_flops(kept), "branch_params": branch_params * len(subset),
        })
    return pd.DataFrame(rows)


def smallest_within(table: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per selection, the fewest branches whose *validation* accuracy is within `tolerance` points of the full
    model's: the compression one would choose without looking at the test split."""
    picks = []
    for _, rows in table.groupby("selection", sort=False):
        full = rows.loc[rows["branches_kept"].idxmax()]
        ok = rows[rows["val_acc"] >= full["val_acc"] - tolerance]
        pick = ok.loc[ok["branches_kept"].idxmin()].copy()
        pick["full_val_acc"], pick["full_test_acc"] = full["val_acc"], full["test_acc"]
        picks.append(pick)
    return pd.DataFrame(picks).reset_index(drop=True)


def compression_summary(picks: pd.DataFrame, table: pd.DataFrame, tolerance: float, paper_ratio: float) -> list[str]:
    """Per dataset, in words: the best compression within `tolerance` points (chosen on validation), and whether
    progressive training makes the prefix models better than joint training does."""
    lines = []
    for dataset, rows in picks.groupby("dataset", sort=False):
        best = rows.sort_values(["param_ratio", "val_acc"]).iloc[-1]
        parts = [f"{r['method']}/{r['selection']}: {r['branches_kept']} of {r['branches_kept'] * r['branch_ratio']:.0f} "
                 f"branches, x{r['param_ratio']:.2f} parameters, test {r['test_acc']:.1f} vs full {r['full_test_acc']:.1f}"
                 + (f", ViT of that size {r['vit_same_size_acc']:.1f}" if "vit_same_size_acc" in r and
                    pd.notna(r["vit_same_size_acc"]) else "")
                 for _, r in rows.iterrows()]
        line = (f"**{dataset}**: the smallest kept model whose validation accuracy is within {tolerance:g} point(s) of "
                f"the full model's: " + "; ".join(parts) + f". Best ratio: x{best['param_ratio']:.2f} parameters "
                f"(x{best['branch_ratio']:.2f} branches, x{best['flops_ratio']:.2f} FLOPs; {best['method']}, "
                f"{best['selection']} selection; test {best['test_acc'] - best['full_test_acc']:+.1f} points against "
                f"the full model), against the paper's up to x{paper_ratio:.2f}.")
        prefixes = table[(table["dataset"] == dataset) & (table["selection"] == "prefix")]
        partial = prefixes[prefixes["branch_ratio"] > 1].groupby("method", sort=False)["test_acc"].mean()
        if len(partial):
            order = ", ".join(f"{method} {acc:.1f}" for method, acc in partial.sort_values(ascending=False).items())
            line += (f" Mean test accuracy of the proper prefixes (first k < m branches): {order}" +
                     (f"; joint training's prefixes are {'the worst' if partial.idxmin() == 'joint' else 'not the worst'}."
                      if "joint" in partial else "."))
        lines.append(line)
    return lines
