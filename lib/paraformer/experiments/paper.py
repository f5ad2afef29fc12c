"""Numbers reported in the papers, kept apart from ours so that no table can confuse the two.

Source: Wang & Li, "Universal Approximation Theory: Foundations for Parallelism in Neural Networks"
(arXiv 2407.21670, AAAI-style version), Tables 2-4: top-1 test accuracy in percent after 500 epochs
from scratch (Tables 2, 3) or 10 epochs of fine-tuning from ImageNet weights (Table 4).
Our dataset names are used as keys.
"""

PAPER_2024 = "Wang & Li 2024 (arXiv 2407.21670)"


def _by_model(models: tuple[str, ...], rows: dict[str, tuple[float, ...]]) -> dict:
    """dataset -> model name -> accuracy (%), from the paper's table as printed: one row of figures per dataset."""
    return {dataset: dict(zip(models, row, strict=True)) for dataset, row in rows.items()}


TABLE2_LAYER_SWEEP = _by_model(("Para-F-1-1", "Para-F-1-6", "Para-F-1-12", "Para-F-1-24"), {
    "cifar10": (55.95, 64.90, 66.88, 71.53),
    "cifar100": (30.67, 38.84, 41.41, 46.96),
    "stl10": (44.41, 51.57, 55.96, 59.53),
    "oxford_pets": (19.62, 20.95, 22.07, 22.73),
    "flowers102": (27.33, 32.65, 37.42, 35.84),
})
TABLE3_DEPTH_SWEEP = _by_model(("Para-F-6-6", "Para-F-2-24", "Para-F-3-24", "Para-F-6-24"), {
    "cifar10": (79.39, 74.75, 77.21, 79.92),
    "cifar100": (55.18, 51.04, 52.65, 56.15),
    "stl10": (62.81, 61.60, 62.75, 64.30),
    "oxford_pets": (26.05, 23.65, 26.02, 25.92),
    "flowers102": (37.97, 39.17, 40.12, 40.51),
})
TABLE4_FINETUNE = _by_model(("Para-F-12-12",), {"cifar10": (98.62,), "cifar100": (91.36,), "stl10": (99.47,),
                                                 "oxford_pets": (91.87,), "flowers102": (96.89,)})

# Li, Wang & Wei, "ParaFormer: Shallow Parallel Transformers with Progressive Approximation" (arXiv 2510.15425).
# Only the abstract's headline figures are public (the body, its tables and protocols could not be retrieved).
PAPER_2025 = "Li, Wang & Wei 2025 (arXiv 2510.15425)"
BEST_GAIN_OVER_VIT = 2.39  # "outperforms ... ViT ... with performance gains of up to 2.39%" (points, best case)
BEST_COMPRESSION = 15.07  # "supports up to 15.07x model compression" (how the ratio is counted is not stated)
FAIRSCALE_SPEEDUP = (3.30, 0.86)  # "3.30x faster than ... FairScale" (+- 0.86), multi-GPU


def combine(*tables: dict) -> dict:
    """One dataset -> model -> accuracy table from several (e.g. Tables 2 and 3 for the two sweeps together)."""
    return {d: {m: a for table in tables for m, a in table.get(d, {}).items()}
            for d in dict.fromkeys(d for table in tables for d in table)}


# Jiang et al., "Layer-Parallel Training for Transformers" (arXiv 2601.09026). Only the abstract is public here, and
# it gives no figure: its claims (layer-parallel acceleration; accuracy commensurate with serial pre-training;
# fine-tuning unaffected) are judged against margins of our own (paraformer.experiments.layer_parallel).
PAPER_2026 = "Jiang et al. 2026 (arXiv 2601.09026)"
