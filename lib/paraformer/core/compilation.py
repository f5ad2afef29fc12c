"""torch.compile for training (`Recipe.compile`): each branch compiled on its own, and what Dynamo compiled in a run,
for its record (`RunResult.compiled`).

Compiled whole, the forward needed a graph per prefix length, set of trainable parameters and batch size, and past
Dynamo's `recompile_limit` (8 graphs per function) it silently ran eagerly. All branches of a model share one graph
whatever the prefix, each run starts from a reset Dynamo, and `fullgraph=True` turns a graph break or a graph past
the limit into an error. The set of graphs a run compiles: docs/models-and-training.md#torchcompile.
"""

from __future__ import annotations

import torch
from torch._dynamo.exc import FailOnRecompileLimitHit  # what a fullgraph compile past its limit raises
from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

from .model import ParaFormer


class CompileLimitError(RuntimeError):
    """A compiled run needed more graphs of one function than Dynamo keeps: it would have gone on eagerly."""

    def __init__(self, run: str):
        self.run, self.limit = run, torch._dynamo.config.recompile_limit
        super().__init__(f"{run}: torch.compile needed more than recompile_limit={self.limit} graphs of a branch, and "
                         "would have gone on uncompiled; train it with Recipe.compile=False (TORCH_LOGS=recompiles "
                         "shows what made the graphs)")


def compile_branches(model: ParaFormer) -> None:
    """Compile every branch's forward in place: the module tree, the state dict and every caller stay as they are."""
    for branch in model.branches:
        branch.compile(fullgraph=True)


class CompileCount:
    """Resets Dynamo when made (at the start of a run), then `summary()` says what it compiled since."""

    def __init__(self):
        torch._dynamo.reset()  # the graphs of earlier runs in this process must not count toward this run's limit
        clear_compilation_metrics()  # (a log of the last 64 compilations: a run's few fit)
        self._graphs = counters["stats"]["unique_graphs"]
        self._breaks = sum(counters["graph_break"].values())

    def summary(self) -> dict[str, int]:
        """frames: function compilations (each a graph under fullgraph), recompiles: those of a function already
        compiled (another variant), graphs: Dynamo graphs, graph_breaks, eager_fallbacks: frames Dynamo gave up on
        and ran eagerly. Counted in this process: a resumed run's count is its last session's."""
        metrics = get_compilation_metrics()
        compiled = {m.compile_id for m in metrics if m.compile_id and m.fail_type is None}
        failed = {m.compile_id for m in metrics if m.compile_id and m.fail_type is not None}
        recompiled = {m.compile_id for m in metrics if m.compile_id in compiled and m.recompile_reason}
        return {"frames": len(compiled), "recompiles": len(recompiled),
                "graphs": counters["stats"]["unique_graphs"] - self._graphs,
                "graph_breaks": sum(counters["graph_break"].values()) - self._breaks,
                "eager_fallbacks": len(failed - compiled)}
