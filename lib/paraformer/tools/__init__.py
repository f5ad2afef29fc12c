"""Command lines: one training run (`train`), the time a profile will take (`estimate`), the benchmarks
(`bench`), the numerics record (`numerics`). Nothing imports this package."""
