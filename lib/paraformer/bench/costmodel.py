"""A cost model of one training step on P devices (see docs/parallel.md), fed by the times `paraformer.bench.multi`
measures (multi_costs_1.csv, multi_costs_2.csv): compute times are interpolated between the measured batch sizes
(every power of two up to the full batch), communication times fitted as lines in bytes. `layer(b)` and
`cls_layer(b)`: one layer's forward and backward at batch b over every token, or the CLS token only.

Branch parallel (nb branches of depth d shared over P ranks, batch b, width w; every rank has ceil(nb / P)):
    T = stem_head(b) + ceil(nb / P) * ((d - 1) layer(b) + cls_layer(b))
        + allreduce_P(4 b w) + allreduce_P(4 stem parameters) + adamw (stem + head + ceil(nb / P) branch) parameters
Pipeline (GPipe schedule; L layers in P stages, M micro-batches of b / M; 1F1B runs as many slots in another order):
    T = (M + P - 1) * (((L - 1) layer(b / M) + cls_layer(b / M)) / P + p2p(b / M)) + stem_head(b)
        + adamw parameters / P
Data parallel (DDP; a model of nb branches of depth d, N parameters, the sequential ViT being nb = 1, d = L; every rank
holds the whole model and computes s = ceil(b / P) images of the global batch b):
    T = stem_head(s) + nb * ((d - 1) layer(s) + cls_layer(s)) + k allreduce_P(4 N / k) + adamw N
DDP all-reduces the gradients in k buckets, one latency each: k = 1 + ceil((4 N - 1 MiB) / 25 MiB) with its defaults.
The model assumes no overlap of those all-reduces with the rest of backward (an upper bound on the step; with one
bucket, at the ci profile's sizes, nothing overlaps anyway). Where P does not divide b, s is the slowest rank's share;
there is no prediction where P > b, which would leave ranks without an image.
Layer-parallel MGRIT (`paraformer.parallel.mgrit`; a ViT of L layers, two levels of coarsening c, P ranks of L / P
layers each, k forward and k' backward iterations, F-relaxation): a solve takes, on its critical path,
    S(step, k) = step * (L / c + k (relax + 2 L / (P c) + L / c) + relax) + p2p_1(b) * ((P - 1)(1 + k) + k [P > 1])
with relax = (L / P)(c - 1) / c (FCF: twice that plus L / (P c)): the coarse prediction and every iteration's coarse
solve are chains of L / c steps through the ranks in order, the relaxations and the coarse right-hand side run on every
rank at once, and p2p_1 is a one-way message of the activations, half the measured round trip. Then
    T = stem_head(b) + S(forward(b), k) + forward(b) + S(vjp(b), k') + (L / P) layer(b)
        + allreduce_P(4 N) + adamw N
with forward(b) a layer's forward alone and vjp(b) its recomputation with the input's vector-Jacobian product (both
measured), the final sweep taking the parameter gradients with a whole layer(b) each, and every rank updating the whole
replicated model after one all-reduce of the N-parameter gradient.
Two all-reduce models, which two processes cannot tell apart (both are 2 alpha + n beta at P = 2, where the latency
alpha and the inverse bandwidth beta are fitted):
- ring: 2 (P - 1) steps, each moving 1 / P of the message: allreduce_P(n) = 2 (P - 1) alpha + 2 (P - 1) / P n beta;
- tree: latency logarithmic in P, as in recursive halving then doubling (Rabenseifner's algorithm in MPI
  libraries; NCCL's trees also pay log2 P hops), with the ring's bytes per rank:
  allreduce_P(n) = 2 ceil(log2 P) alpha + 2 (P - 1) / P n beta.
The latency term decides the prediction at 24 devices, and alpha rests on erratic gloo timings; the two models
bracket what the communication library might do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..parallel.mgrit import MGRITConfig, check_layout
from .multi import MultiSettings
from .speed import BenchSettings

ALLREDUCE_MODELS = ("ring", "tree")  # see the module docstring
# DistributedDataParallel's default bucket sizes (bucket_cap_mb=25, and a small first bucket so that the first
# all-reduce starts early in backward): how many all-reduces, each paying the latency, its gradients take
DDP_FIRST_BUCKET_BYTES = 1 << 20
DDP_BUCKET_BYTES = 25 << 20


def _line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (slope 0 when there is a single distinct x)."""
    if len(set(x)) < 2:
        return float(np.mean(y)), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def _at(line: tuple[float, float], x: float) -> float:
    return max(line[0] + line[1] * x, 0.0)


Curve = tuple[tuple[float, ...], tuple[float, ...]]  # measured (batch sizes, seconds), by increasing batch


def _on(curve: Curve, batch: float) -> float:
    """Seconds at `batch`: linear between measured sizes, the smallest size's time below them, and proportional
    to the batch beyond the largest (where the work is the whole device's already)."""
    sizes, seconds = curve
    if batch > sizes[-1]:
        return seconds[-1] * batch / sizes[-1]
    return float(np.interp(batch, sizes, seconds))


@dataclass(frozen=True)
class Costs:
    layer: Curve  # one layer's forward and backward over every token, against the batch
    cls_layer: Curve  # the same for a last layer that computes the CLS token only
    stem_head: Curve  # the patch embedding, norm and head
    adamw: float  # seconds per parameter of an AdamW step
    allreduce: tuple[float, float]  # latency alpha (seconds per step), beta (seconds per byte)
    p2p: tuple[float, float]  # seconds of a send/receive round trip = intercept + slope * bytes
    # MGRIT's steps (None in benchmarks from before it was timed): a layer's forward alone, and its recomputation
    # with the vector-Jacobian product for its input alone
    layer_forward: Curve | None = None
    layer_vjp: Curve | None = None

    @classmethod
    def from_measurements(cls, one: pd.DataFrame, two: pd.DataFrame) -> "Costs":
        """`one`: the costs CSV of the 1-process run (compute); `two`: of the 2-process run (communication)."""
        def fit(what, required=True) -> Curve | None:
            rows = one[(one["kind"] == "compute") & (one["what"] == what)].sort_values("batch")
            if rows.empty:
                if not required:
                    return None
                raise ValueError(f"the 1-process costs have no {what!r} rows; rerun the benchmark")
            return tuple(rows["batch"].astype(float)), tuple(rows["seconds"].astype(float))

        allreduce, p2p = two[two["kind"] == "allreduce"], two[two["kind"] == "p2p"]
        if allreduce.empty or p2p.empty:
            raise ValueError("the 2-process costs have no communication rows; rerun the 2-process benchmark")
        intercept, beta = _line(allreduce["bytes"].tolist(), allreduce["seconds"].tolist())
        adamw = one[one["what"] == "adamw_per_parameter"]["seconds"].iloc[0]
        return cls(layer=fit("layer"), cls_layer=fit("cls_layer"), stem_head=fit("stem_head"), adamw=float(adamw),
                   allreduce=(max(intercept, 0.0) / 2, max(beta, 0.0)),
                   p2p=_line(p2p["bytes"].tolist(), p2p["seconds"].tolist()),
                   layer_forward=fit("layer_forward", required=False), layer_vjp=fit("layer_vjp", required=False))

    def allreduce_seconds(self, nbytes: float, ranks: int, model: str = "ring") -> float:
        if model not in ALLREDUCE_MODELS:
            raise ValueError(f"all-reduce model {model!r} is unknown; choose one of {ALLREDUCE_MODELS}")
        if ranks < 1:
            raise ValueError(f"an all-reduce needs at least one rank, got {ranks}")
        if ranks == 1:
            return 0.0
        alpha, beta = self.allreduce
        steps = 2 * (ranks - 1) if model == "ring" else 2 * math.ceil(math.log2(ranks))
        return steps * alpha + 2 * (ranks - 1) / ranks * nbytes * beta

    def branch_parallel_step(self, ranks: int, num_branches: int, branch_depth: int, batch: int, width: int,
                             stem_parameters: int, head_parameters: int, branch_parameters: int,
                             allreduce: str = "ring") -> float:
        local = math.ceil(num_branches / ranks)
        compute = _on(self.stem_head, batch) + local * (
            (branch_depth - 1) * _on(self.layer, batch) + _on(self.cls_layer, batch))
        communication = (self.allreduce_seconds(4 * batch * width, ranks, allreduce)
                         + self.allreduce_seconds(4 * stem_parameters, ranks, allreduce))
        update = self.adamw * (stem_parameters + head_parameters + local * branch_parameters)
        return compute + communication + update

    def ddp_step(self, ranks: int, batch: int, num_branches: int, branch_depth: int, parameters: int,
                 allreduce: str = "ring") -> float:
        """Data parallelism of a model of `num_branches` branches of `branch_depth` layers (a ViT: one branch)
        with `parameters` parameters, the global `batch` shared over `ranks` (see the module docstring)."""
        if not 1 <= ranks <= batch:
            raise ValueError(f"data parallelism of a batch of {batch} over {ranks} ranks leaves ranks without an "
                             f"image; predict for 1 to {batch} ranks")
        share = math.ceil(batch / ranks)  # the slowest rank's images
        compute = _on(self.stem_head, share) + num_branches * (
            (branch_depth - 1) * _on(self.layer, share) + _on(self.cls_layer, share))
        nbytes = 4 * parameters
        buckets = ddp_buckets(nbytes)
        communication = buckets * self.allreduce_seconds(nbytes / buckets, ranks, allreduce)  # no overlap
        return compute + communication + self.adamw * parameters

    def mgrit_step(self, ranks: int, depth: int, batch: int, tokens: int, width: int, parameters: int,
                   coarsening: int, forward_iterations: int, backward_iterations: int, relaxation: str = "F",
                   allreduce: str = "ring") -> float:
        """Two-level MGRIT of a ViT of `depth` layers over `ranks` ranks (see the module docstring)."""
        if self.layer_forward is None or self.layer_vjp is None:
            raise ValueError("these costs have no layer_forward or layer_vjp rows, which MGRIT's prediction needs; "
                             "rerun the 1-process benchmark")
        check_layout(depth, ranks, MGRITConfig(coarsening=coarsening, fine_relaxation=relaxation))
        share, coarse = depth // ranks, depth // coarsening
        one_way = 0.0 if ranks == 1 else _at(self.p2p, 4 * batch * tokens * width) / 2  # the fit is a round trip
        fcf = relaxation == "FCF"
        f_relax = share * (coarsening - 1) / coarsening

        def solve(step: float, iterations: int) -> float:
            per_iteration = f_relax * (2 if fcf else 1) + (share / coarsening if fcf else 0) + 2 * share / coarsening
            steps = coarse + iterations * (per_iteration + coarse) + f_relax
            messages = (ranks - 1) * (1 + iterations) + iterations * (2 if fcf else 1) * (ranks > 1)
            return step * steps + one_way * messages

        forward = solve(_on(self.layer_forward, batch), forward_iterations) + _on(self.layer_forward, batch)
        backward = solve(_on(self.layer_vjp, batch), backward_iterations) + share * _on(self.layer, batch)
        update = self.allreduce_seconds(4 * parameters, ranks, allreduce) + self.adamw * parameters
        return _on(self.stem_head, batch) + forward + backward + update

    def pipeline_step(self, stages: int, micro_batches: int, num_layers: int, batch: int, tokens: int,
                      width: int, parameters: int) -> float:
        micro = batch / micro_batches
        p2p = 0.0 if stages == 1 else _at(self.p2p, 4 * micro * tokens * width)
        slot = ((num_layers - 1) * _on(self.layer, micro) + _on(self.cls_layer, micro)) / stages + p2p
        return (micro_batches + stages - 1) * slot + _on(self.stem_head, batch) + self.adamw * parameters / stages


def ddp_buckets(nbytes: float) -> int:
    """How many buckets, each all-reduced on its own, DDP cuts `nbytes` of gradients into (its defaults; DDP
    never splits a parameter, so its real buckets run a little over these sizes)."""
    return 1 + max(0, math.ceil((nbytes - DDP_FIRST_BUCKET_BYTES) / DDP_BUCKET_BYTES))


def multi_steps(bench: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every multi_steps_<P> table of `paraformer.bench.speed.load` in one (empty if there is none)."""
    tables = [df for name, df in sorted(bench.items()) if name.startswith("multi_steps_")]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _sizes(model) -> dict[str, int]:
    def count(modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    stem = sum(p.numel() for p in (model.patch_embed.weight, model.patch_embed.bias, model.cls_token,
                                   model.pos_embed))
    return {"stem": stem, "head": count([model.norm, model.head]), "branch": count([model.branches[0]]),
            "total": count([model])}


def mgrit_coarsening(depth: int, ranks: int, preferred: int) -> int | None:
    """The coarsening the prediction uses at `ranks`: the setting's where every rank's share of the layers is a
    multiple of it, else the largest of 4, 3 and 2 that is, else None (no whole coarse interval per rank)."""
    if depth % ranks:
        return None
    share = depth // ranks
    for coarsening in (preferred, 4, 3, 2):
        if share % coarsening == 0:
            return coarsening
    return None


def predictions(bench: dict[str, pd.DataFrame], profile: BenchSettings, setting: MultiSettings,
                ranks: tuple[int, ...] = (1, 2, 4, 8, 24, 64),
                micro_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
                depths: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Predicted step milliseconds from the CSVs `bench` (`paraformer.bench.speed.load`) at each number of devices and
    depth (at the benchmark's width and batch): branch parallelism (the ParaFormer, branches of the setting's depth),
    the GPipe pipeline (the ViT; the best micro-batch count at each P), "ddp" (both models; none where P exceeds the
    batch), "mgrit-<k>it" (the ViT; none where the layers cannot be shared out in whole coarse intervals,
    `coarsening` saying which was used). Each under each all-reduce model (`predicted_ring_ms`, `predicted_tree_ms`;
    a pipeline's two are equal), beside the measured step where there is one (the benchmark's depth, 1 and 2 P)."""
    missing = {"multi_costs_1", "multi_costs_2"} - set(bench)
    if missing:
        raise ValueError(f"cost model inputs {sorted(missing)} are missing; run the 1- and 2-process benchmarks")
    costs = Costs.from_measurements(bench["multi_costs_1"], bench["multi_costs_2"])
    base_depth = profile.model(setting.vit).config.num_layers
    branch_depth = int(setting.paraformer.split("-")[0])
    depths = depths if depths is not None else tuple(sorted({base_depth, 24, 48, 96, 192}))
    tokens = (profile.image_size // profile.patch_size) ** 2 + 1
    measured = multi_steps(bench)
    rows = []
    for depth in depths:
        para, vit = profile.model(f"{branch_depth}-{depth}"), profile.model(f"{depth}-{depth}")
        para_name, vit_label = f"Para-F-{branch_depth}-{depth}", f"ViT-{depth}"
        p_sizes, v_sizes = _sizes(para), _sizes(vit)

        def row(method: str, model: str, p: int, predicted: dict, measured_method: str, **extra) -> dict:
            seen = (best_step(measured, measured_method, model if method == "ddp" else None, p)
                    if depth == base_depth else float("nan"))
            return {"depth": depth, "method": method, "model": model, "devices": p, "micro_batches": 1, **extra,
                    **{f"predicted_{m}_ms": 1e3 * t for m, t in predicted.items()}, "measured_ms": 1e3 * seen}

        for p in ranks:
            branch = {m: costs.branch_parallel_step(p, para.num_branches, branch_depth, setting.batch, profile.width,
                                                    p_sizes["stem"], p_sizes["head"], p_sizes["branch"], allreduce=m)
                      for m in ALLREDUCE_MODELS}
            rows.append(row("branch", para_name, p, branch, "branch"))
            if p <= depth:
                pipeline, best = min((costs.pipeline_step(p, m, depth, setting.batch, tokens, profile.width,
                                                          v_sizes["total"]), m)
                                     for m in micro_batches if setting.batch % m == 0)  # the fastest micro-batches
                rows.append(row("pipeline (GPipe)", vit_label, p, dict.fromkeys(ALLREDUCE_MODELS, pipeline),
                                "torch-gpipe", micro_batches=best))
            if p <= setting.batch:
                for model, name in ((vit, vit_label), (para, para_name)):
                    ddp = {m: costs.ddp_step(p, setting.batch, model.num_branches, model.config.branch_depth,
                                             model.num_parameters(), allreduce=m) for m in ALLREDUCE_MODELS}
                    rows.append(row("ddp", name, p, ddp, "ddp"))
            coarsening = mgrit_coarsening(depth, p, setting.mgrit_coarsening)
            if coarsening is not None and costs.layer_forward is not None:
                for k in setting.mgrit_iterations:
                    mgrit = {m: costs.mgrit_step(p, depth, setting.batch, tokens, profile.width, v_sizes["total"],
                                                 coarsening, k, 1, allreduce=m) for m in ALLREDUCE_MODELS}
                    rows.append(row(f"mgrit-{k}it", vit_label, p, mgrit, f"mgrit-{k}it", coarsening=coarsening))
    table = pd.DataFrame(rows)
    for model in ALLREDUCE_MODELS:
        table[f"{model}_over_measured"] = table[f"predicted_{model}_ms"] / table["measured_ms"]
    return table


def best_step(steps: pd.DataFrame, method: str | None, model: str | None, processes: int) -> float:
    """The best measured step (`multi_steps`) of `method` at `processes` (over micro-batch counts), or NaN if not
    measured; of `model` only, where given (ddp times two models under one method)."""
    if steps.empty:
        return float("nan")
    rows = steps[(steps["method"] == method) & (steps["processes"] == processes)]
    if model is not None:
        rows = rows[rows["model"] == model]
    return float(rows["seconds"].min()) if len(rows) else float("nan")
