"""FLOP counting for the benchmarks and estimates: torch's FlopCounterMode, with attention counted on every device.

The counter knows the CUDA attention kernels but not the CPU's fused one, nor what the meta device runs, so
attention is counted through its math kernel, whose matrix products are the same arithmetic (the numbers a
counted computation produces are thrown away).
"""

from __future__ import annotations

from typing import Callable

from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs of the matrix products, convolutions and attention that `work()` runs (forward and any backward)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()
