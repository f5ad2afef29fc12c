"""Numbers reported in the papers, kept apart from ours so that no table can confuse the two.

Source: Wang & Li, "Universal Approximation Theory: Foundations for Parallelism in Neural Networks"
(arXiv 2407.21670, AAAI-style version), Tables 2-4: top-1 test accuracy in percent after 500 epochs
from scratch (Tables 2, 3) or 10 epochs of fine-tuning from ImageNet weights (Table 4).
Our dataset names are used as keys.
"""

PAPER_2024 = "Wang & Li 2024 (arXiv 2407.21670)"

# dataset -> model name -> accuracy (%)
TABLE2_LAYER_SWEEP = {
    "cifar10": {"Para-F-1-1": 55.95, "Para-F-1-6": 64.90, "Para-F-1-12": 66.88, "Para-F-1-24": 71.53},
    "cifar100": {"Para-F-1-1": 30.67, "Para-F-1-6": 38.84, "Para-F-1-12": 41.41, "Para-F-1-24": 46.96},
    "stl10": {"Para-F-1-1": 44.41, "Para-F-1-6": 51.57, "Para-F-1-12": 55.96, "Para-F-1-24": 59.53},
    "oxford_pets": {"Para-F-1-1": 19.62, "Para-F-1-6": 20.95, "Para-F-1-12": 22.07, "Para-F-1-24": 22.73},
    "flowers102": {"Para-F-1-1": 27.33, "Para-F-1-6": 32.65, "Para-F-1-12": 37.42, "Para-F-1-24": 35.84},
}

TABLE3_DEPTH_SWEEP = {
    "cifar10": {"Para-F-6-6": 79.39, "Para-F-2-24": 74.75, "Para-F-3-24": 77.21, "Para-F-6-24": 79.92},
    "cifar100": {"Para-F-6-6": 55.18, "Para-F-2-24": 51.04, "Para-F-3-24": 52.65, "Para-F-6-24": 56.15},
    "stl10": {"Para-F-6-6": 62.81, "Para-F-2-24": 61.60, "Para-F-3-24": 62.75, "Para-F-6-24": 64.30},
    "oxford_pets": {"Para-F-6-6": 26.05, "Para-F-2-24": 23.65, "Para-F-3-24": 26.02, "Para-F-6-24": 25.92},
    "flowers102": {"Para-F-6-6": 37.97, "Para-F-2-24": 39.17, "Para-F-3-24": 40.12, "Para-F-6-24": 40.51},
}

TABLE4_FINETUNE = {
    "cifar10": {"Para-F-12-12": 98.62},
    "cifar100": {"Para-F-12-12": 91.36},
    "stl10": {"Para-F-12-12": 99.47},
    "oxford_pets": {"Para-F-12-12": 91.87},
    "flowers102": {"Para-F-12-12": 96.89},
}

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
