"""torch.compile on the CPU (`Recipe.compile`): in a sequence of runs in one process, every run compiles, with a
bounded set of graphs that does not grow with the runs before it, says so in its record, and never goes on
eagerly past Dynamo's recompile limit (docs/models-and-training.md#torchcompile). Needs a C compiler, as torch's
CPU compiler does; each graph takes seconds to compile the first time, then comes from torch's on-disk cache."""

import json
from dataclasses import replace

import pytest
import torch
from torch._dynamo.utils import counters

from paraformer.core import progressive
from paraformer.core.model import ParaFormer
from paraformer.core.runcache import load_trained_model, read_record, run_paths
from paraformer.parallel.processes import Processes
from paraformer.training import train

from .test_train import DATA, MODEL, RECIPE, toy_data

# 40 training images in batches of 16: a partial last batch, as in every real run
COMPILED = replace(RECIPE, epochs=1, compile=True)
FOUR = replace(MODEL, num_layers=4, num_branches=None)  # Para-F-1-4
SEQUENCE = [  # the kinds of run notebook 03 makes, then another model shape, then the first run again
    (FOUR, "joint"), (FOUR, "authors"), (FOUR, "prefix"), (FOUR, "frozen"),
    (replace(FOUR, branch_depth=2, num_branches=None), "joint"), (FOUR, "joint"),
]


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_a_sequence_of_compiled_runs_compiles_every_run_with_a_bounded_set_of_graphs(tmp_path):
    data = toy_data(n_train=40, n_test=24)
    counted, results = [], []
    # Dynamo's silent eager fallback past its recompile limit, made an error: a run that needs it fails here
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        for index, (model, method) in enumerate(SEQUENCE):
            before = graphs()
            results.append(train(model, DATA, replace(COMPILED, method=method, seed=index), data=data,
                                 results_root=tmp_path, progress=False))
            counted.append(graphs() - before)
    assert all(n > 0 for n in counted), counted  # every run compiled (its training: the next test, for `prefix`)
    records = [r.compiled for r in results]
    assert [r["graphs"] for r in records] == counted
    assert all(r["eager_fallbacks"] == 0 and r["graph_breaks"] == 0 and r["frames"] == r["graphs"] for r in records)
    # a known set per run (docs): 3 graphs (first batch shape, dynamic batch, evaluation); `frozen` a training and
    # an evaluation graph more for each of its two other patterns of frozen parameters (with its stem frozen, a
    # trained branch's input needs no gradient); the last run, the first one again, needs what the first needed
    assert max(counted[:3] + counted[4:]) <= 3 and counted[3] <= 6
    assert counted[-1] == counted[0]
    # the compiled branches leave the weights' names as they are: the saved run loads into a plain model
    assert isinstance(load_trained_model(results[-1], tmp_path), ParaFormer)


def test_the_prefix_method_computes_its_prefixes_compiled():
    model = ParaFormer(MODEL)
    recipe = replace(COMPILED, method="prefix")
    forward = Processes().training_module(model, recipe)
    (stage,) = progressive.plan(model, recipe)
    data = toy_data(n_train=16)
    torch._dynamo.reset()
    before = graphs()  # a training step alone: evaluation, compiled too, would compile graphs of its own
    progressive.prefix_update(forward, data.train_images.float() / 255, data.train_labels, stage, recipe,
                              lambda loss, clip, loss_on: loss.backward())
    assert graphs() - before > 0


def test_a_run_that_would_go_on_uncompiled_past_the_recompile_limit_stops(tmp_path):
    from paraformer.core.compilation import CompileLimitError

    # a limit of one graph: the partial last batch needs a second
    # (Dynamo's own patch: a monkeypatched config entry is left hidden afterwards, and later compiles fail on it)
    with torch._dynamo.config.patch(recompile_limit=1), pytest.raises(CompileLimitError) as raised:
        train(MODEL, DATA, COMPILED, data=toy_data(n_train=40, n_test=24), results_root=tmp_path, progress=False)
    assert raised.value.limit == 1 and isinstance(raised.value.__cause__, torch._dynamo.exc.FailOnRecompileLimitHit)


def test_an_uncompiled_run_records_nothing_compiled_and_records_from_before_the_field_still_load(tmp_path):
    result = train(MODEL, DATA, replace(RECIPE, epochs=1), data=toy_data(n_train=40, n_test=24),
                   results_root=tmp_path, progress=False)
    assert result.compiled is None
    path = run_paths(result.name, result.key, tmp_path)[0]
    values = json.loads(path.read_text())
    del values["compiled"]
    path.write_text(json.dumps(values))
    assert read_record(path, result.key) == result
