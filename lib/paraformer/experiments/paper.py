"""Numbers reported in the papers, kept apart from ours so that no table can confuse the two.

Source: Wang & Li, "Universal Approximation Theory: Foundations for Parallelism in Neural Networks"
(arXiv 2407.21670, AAAI-style version), Tables 2-4: top-1 test accuracy in percent after 500 epochs
from scratch (Tables 2, 3) or 10 epochs of fine-tuning from ImageNet weights (Table 4).
Our dataset names are used as keys.
"""

PAPER_2024 = "Wang & Li 2024 (arXiv 2407.21670)"
PAPER_EPOCHS = 500  # Tables 2 and 3: every model trained from scratch for 500 epochs on the full training sets


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

# Wang, Wei & Li, "ParaFormer: Shallow Parallel Transformers with Progressive Approximation" (arXiv 2510.15425).
# Only its abstract is public here (the body, its tables and protocols could not be retrieved), and one figure we
# test comes from a third-party summary of it, not from the abstract: each figure names its source (`SOURCES`).
PAPER_2025 = "Wang, Wei & Li 2025 (arXiv 2510.15425)"
BEST_GAIN_OVER_VIT = 2.39  # "performance gains of up to 2.39%" over ViT (points, best case): the summary's words
BEST_COMPRESSION = 15.07  # "supports up to 15.07x model compression" (how the ratio is counted is not stated)
FAIRSCALE_SPEEDUP = (3.30, 0.86)  # "3.30x faster than ... FairScale", multi-GPU; the +- 0.86 is not in the abstract

ABSTRACT_2025 = "001_dcbc4538c3857e49.txt"  # the seeds' file holding the 2025 abstract (../shared/seeds/)
SUMMARY_2025 = "000_eb363b58094f126d.txt"  # a third-party summary of the 2025 paper (same folder)


def combine(*tables: dict) -> dict:
    """One dataset -> model -> accuracy table from several (e.g. Tables 2 and 3 for the two sweeps together)."""
    return {d: {m: a for table in tables for m, a in table.get(d, {}).items()}
            for d in dict.fromkeys(d for table in tables for d in table)}


# Jiang et al., "Layer-Parallel Training for Transformers" (arXiv 2601.09026). Only the abstract is public here, and
# it gives no figure: its claims (layer-parallel acceleration; accuracy commensurate with serial pre-training;
# fine-tuning unaffected) are judged against margins of our own (paraformer.experiments.layer_parallel).
PAPER_2026 = "Jiang et al. 2026 (arXiv 2601.09026)"


# Where each claim the suite tests comes from: "paper" (the paper's own text: a table, a section, the abstract),
# "summary" (a third-party summary of the paper, not the paper), or "ours" (a question this suite asks, or an
# extension of the paper's). Every claim row carries one (`stats.Verdict.source`).
SOURCES = {
    "table2": ("paper", "Table 2 and its text"),
    "table3": ("paper", "Table 3 and its text"),
    "table4": ("paper", "Table 4"),
    "inference_growth": ("paper", "section 3.3"),
    "n_over_m": ("paper", "section 3.3"),
    "gain_over_vit": ("summary", f"a third-party summary ({SUMMARY_2025}); the abstract says only 'outperforming "
                                 "standard Transformers like ViT'"),
    "convergence": ("paper", "abstract: 'enabling faster convergence'"),
    "compression": ("paper", "abstract"),
    "expansion": ("ours", "the abstract says only that ParaFormer 'facilitates model expansion for adaptive "
                          "continuous learning'; the comparison with fine-tuning is our protocol"),
    "fairscale": ("paper", "abstract: '3.30x faster'; the +- 0.86 is not in the abstract"),
    "regrouped": ("ours", "our extension of Table 4: the paper fine-tunes Para-F-12-12 only"),
    "layer_parallel_commensurate": ("paper", "abstract: 'accuracy commensurate with serial pre-training'"),
    "layer_parallel_fixed_cycles": ("ours", "our question: the paper's own method adapts its solver"),
    "layer_parallel_finetune": ("paper", "abstract: 'fine-tuning is unaffected' (of a model pre-trained "
                                         "layer-parallel)"),
    "layer_parallel_speed": ("paper", "abstract: 'parallel acceleration over the layer dimension'"),
}


def source(key: str) -> dict:
    """`SOURCES[key]` as the keyword arguments `stats.judge` takes (source, source_note)."""
    if key not in SOURCES:
        raise KeyError(f"no source recorded for claim {key!r}; add it to paper.SOURCES (one of {sorted(SOURCES)})")
    kind, note = SOURCES[key]
    return {"source": kind, "source_note": note}


def table3_exceptions(tie: float = 0.5) -> dict[str, str]:
    """Where the 2024 paper's own Table 3 does not show "Para-F-6-6 consistently outperforms Para-F-2-24 and
    Para-F-3-24": per dataset, "loses to 2-24/3-24" or "ties 3-24" (within `tie` points), from the table itself."""
    found = {}
    for dataset, row in TABLE3_DEPTH_SWEEP.items():
        words = []
        for other in ("Para-F-2-24", "Para-F-3-24"):
            gap = row["Para-F-6-6"] - row[other]
            if abs(gap) <= tie:
                words.append(f"ties {other.removeprefix('Para-F-')} ({gap:+.2f})")
            elif gap < 0:
                words.append(f"loses to {other.removeprefix('Para-F-')} ({gap:+.2f})")
        if words:
            found[dataset] = ", ".join(words)
    return found
