"""A cost model of one training step on P devices, fed by measured times (`paraformer.multibench` costs) and
checked against the step times measured at 1 and 2 processes before it is trusted at 4, 8 or 24.

Inputs, all measured on the device: `layer(b)` and `cls_layer(b)`, one layer's forward and backward at batch b
over every token or for the CLS token only; `stem_head(b)`; `adamw`, seconds per parameter of an optimizer step;
an all-reduce and a send/receive round trip of each message size, at 2 processes.

ParaFormer, branch parallel (nb branches of depth d shared over P ranks, batch b, width w):
    T = stem_head(b) + ceil(nb / P) * ((d - 1) * layer(b) + cls_layer(b))
        + allreduce_P(4 b w) + allreduce_P(stem bytes) + adamw * (stem + head + ceil(nb / P) branch parameters)
Pipeline (GPipe schedule; L layers in P stages, M micro-batches of b / M):
    T = (M + P - 1) * (L / P * layer(b / M) + p2p(b / M)) + stem_head(b) + adamw * parameters / P
(1F1B runs the same number of slots, in another order.) A ring all-reduce over P ranks moves 2 (P - 1) / P of
the message per rank in 2 (P - 1) steps: allreduce_P(n) = 2 (P - 1) alpha + 2 (P - 1) / P * n * beta, with the
latency alpha and the inverse bandwidth beta fitted to the 2-process measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


def _line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (slope 0 when there is a single point)."""
    if len(set(x)) < 2:
        return float(np.mean(y)), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


@dataclass(frozen=True)
class Costs:
    layer: tuple[float, float]  # seconds = intercept + slope * batch, every token
    cls_layer: tuple[float, float]  # the same for a last layer that computes the CLS token only
    stem_head: tuple[float, float]
    adamw: float  # seconds per parameter
    allreduce: tuple[float, float]  # alpha (seconds per step), beta (seconds per byte)
    p2p: tuple[float, float]  # seconds per round trip = intercept + slope * bytes

    @classmethod
    def from_measurements(cls, one: pd.DataFrame, two: pd.DataFrame) -> "Costs":
        """`one`: the costs CSV of the 1-process run (compute); `two`: of the 2-process run (communication)."""
        def fit(what):
            rows = one[(one["kind"] == "compute") & (one["what"] == what)]
            return _line(rows["batch"].tolist(), rows["seconds"].tolist())

        ar = two[two["kind"] == "allreduce"]
        # at P = 2 the ring formula is 2 alpha + n beta
        intercept, beta = _line(ar["bytes"].tolist(), ar["seconds"].tolist())
        p2p = two[two["kind"] == "p2p"]
        adamw = one[one["what"] == "adamw_per_parameter"]["seconds"].iloc[0]
        return cls(layer=fit("layer"), cls_layer=fit("cls_layer"), stem_head=fit("stem_head"), adamw=float(adamw),
                   allreduce=(max(intercept, 0.0) / 2, max(beta, 0.0)),
                   p2p=_line(p2p["bytes"].tolist(), p2p["seconds"].tolist()))

    def compute(self, which: tuple[float, float], batch: float) -> float:
        return max(which[0] + which[1] * batch, 0.0)

    def allreduce_seconds(self, nbytes: float, ranks: int) -> float:
        if ranks == 1:
            return 0.0
        alpha, beta = self.allreduce
        return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes * beta


def branch_parallel_step(costs: Costs, ranks: int, num_branches: int, branch_depth: int, batch: int, width: int,
                         stem_parameters: int, head_parameters: int, branch_parameters: int) -> float:
    local = math.ceil(num_branches / ranks)
    compute = (costs.compute(costs.stem_head, batch)
               + local * ((branch_depth - 1) * costs.compute(costs.layer, batch)
                          + costs.compute(costs.cls_layer, batch)))
    communication = (costs.allreduce_seconds(4 * batch * width, ranks)
                     + costs.allreduce_seconds(4 * stem_parameters, ranks))
    update = costs.adamw * (stem_parameters + head_parameters + local * branch_parameters)
    return compute + communication + update


def pipeline_step(costs: Costs, stages: int, micro_batches: int, num_layers: int, batch: int, tokens: int,
                  width: int, parameters: int) -> float:
    micro = batch / micro_batches
    p2p = 0.0 if stages == 1 else costs.compute(costs.p2p, 4 * micro * tokens * width)
    slot = num_layers / stages * costs.compute(costs.layer, micro) + p2p
    return ((micro_batches + stages - 1) * slot + costs.compute(costs.stem_head, batch)
            + costs.adamw * parameters / stages)
