"""train() across processes (Recipe.parallel, torchrun): every scheme trains what one process trains, rank 0 alone
writes, the replicas stay equal, a resumed run continues exactly, and a failed or hung rank ends the run with a
RankFailure within the timeout instead of a hang. Each test runs 2 gloo processes."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import paraformer.training.trainer as training
from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.model import ParaFormer
from paraformer.parallel.processes import BranchTraining, check_layout, join
from tests.test_parallel import free_port
from tests.test_train import toy_data

WORLD = 2
DATA = DataConfig(dataset="toy")
BASE = dict(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, num_classes=4)
# a clip that binds: the norm it clips must be the whole gradient's, on every rank
RECIPE = Recipe(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=("flip", "crop"), seed=1, grad_clip=0.5)
SCHEMES = {  # scheme -> (model, recipe) of the run on 2 processes
    "data": (ModelConfig(branch_depth=2, num_layers=2, **BASE), replace(RECIPE, parallel="data", processes=WORLD)),
    "branch": (ModelConfig(branch_depth=1, num_layers=4, **BASE), replace(RECIPE, parallel="branch", processes=WORLD)),
    "layer": (ModelConfig(branch_depth=8, num_layers=8, step=1 / 8, **BASE),
              replace(RECIPE, parallel="layer", processes=WORLD, solver="mgrit", mgrit_coarsening=2,
                      mgrit_iterations=(0, 0), mgrit_check_every=3, mgrit_tolerance=0.02)),
}


def one_process(recipe: Recipe) -> Recipe:
    return replace(recipe, parallel="none", processes=1)


def _environment(rank: int, port: int, timeout: float = 60) -> None:
    """What torchrun sets, so that train() joins the group itself (with PARAFORMER_DIST_TIMEOUT)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), PARAFORMER_DIST_TIMEOUT=str(timeout))
    torch.set_num_threads(1)


def _keep_final_weights(folder: Path, rank: int) -> None:
    """Save every rank's final model beside the run (train() writes rank 0's alone)."""
    finish = training.finish_run

    def finish_and_keep(run, parent, init):
        torch.save(run.model.state_dict(), folder / f"rank{rank}.pt")
        return finish(run, parent, init)

    training.finish_run = finish_and_keep


def _refuse_writes() -> None:
    """Make any file the run writes an error (on the ranks that must not write)."""
    def no_write(*args, **kwargs):
        raise AssertionError("only rank 0 writes the run's files")

    for name in ("atomic_save", "atomic_write_json", "StepLog"):
        setattr(training, name, no_write)


def _train_worker(rank: int, port: int, scheme: str, folder: Path, stop_after: int | None, dropout: float) -> None:
    _environment(rank, port)
    _keep_final_weights(folder, rank)
    if rank:
        _refuse_writes()
    model, recipe = SCHEMES[scheme]
    model = replace(model, dropout=dropout)

    def stop(entry):
        if entry["epoch"] == stop_after:
            raise KeyboardInterrupt

    try:
        result = training.train(model, DATA, recipe, data=toy_data(), results_root=folder / "runs", progress=False,
                                on_epoch_end=stop)
        (folder / f"result{rank}.json").write_text(json.dumps(result.to_json()))
    except KeyboardInterrupt:
        pass
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_two(scheme: str, folder: Path, stop_after: int | None = None, dropout: float = 0.0) -> None:
    """Train SCHEMES[scheme] on 2 processes into `folder`, stopping (as Ctrl-C would) after epoch `stop_after`."""
    folder.mkdir(parents=True, exist_ok=True)
    mp.spawn(_train_worker, args=(free_port(), scheme, folder, stop_after, dropout), nprocs=WORLD, join=True)


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_each_scheme_trains_on_two_processes_what_one_process_trains_with_rank_0_writing(scheme, tmp_path):
    run_two(scheme, tmp_path / "two")
    model, recipe = SCHEMES[scheme]
    single = training.train(model, DATA, one_process(recipe), data=toy_data(), results_root=tmp_path / "one",
                            progress=False)
    first, second = (json.loads((tmp_path / "two" / f"result{r}.json").read_text()) for r in range(WORLD))
    assert without_time(first["history"]) == without_time(second["history"])  # every rank knows the run
    assert first["config"]["recipe"]["processes"] == WORLD and first["config"]["recipe"]["parallel"] == scheme
    records = sorted((tmp_path / "two" / "runs").rglob("*.json"))
    assert [p.name for p in records] == [f"{first['name']}-{first['key']}.json"]  # one record, rank 0's
    weights = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in range(WORLD)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the replicas stayed equal
    # the same training as on one process, up to the order of float sums
    for a, b in zip(first["history"], single.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    one = torch.load(training.run_paths(single.name, single.key, tmp_path / "one")[2])
    for k in one:
        torch.testing.assert_close(weights[0][k], one[k], rtol=1e-3, atol=1e-4)
    for weights_file in (tmp_path / "two").glob("rank*.pt"):
        weights_file.unlink()
    run_two(scheme, tmp_path / "two")  # again: every rank returns the finished run without training
    again = [json.loads((tmp_path / "two" / f"result{r}.json").read_text()) for r in range(WORLD)]
    assert all(without_time(a["history"]) == without_time(first["history"]) for a in again)
    assert not any((tmp_path / "two").glob("rank*.pt"))  # finish_run never ran
    if scheme == "layer":
        checks = [c for h in first["history"] for c in h["mgrit_checks"]]
        expected = [c for h in single.history for c in h["mgrit_checks"]]
        assert [c[0] for c in checks] == [c[0] for c in expected] and [c[3] for c in checks] == [c[3] for c in expected]
        assert [c[2] for c in checks] == pytest.approx([c[2] for c in expected], rel=1e-3)


def test_a_branch_parallel_run_with_dropout_resumes_exactly_on_two_processes(tmp_path):
    run_two("branch", tmp_path / "straight", dropout=0.1)
    run_two("branch", tmp_path / "resumed", stop_after=1, dropout=0.1)
    assert not (tmp_path / "resumed" / "result0.json").exists()  # stopped after epoch 1's checkpoint
    run_two("branch", tmp_path / "resumed", dropout=0.1)
    straight, resumed = (json.loads((tmp_path / name / "result0.json").read_text()) for name in ("straight", "resumed"))
    assert without_time(resumed["history"]) == without_time(straight["history"])
    a, b = (torch.load(tmp_path / name / "rank0.pt") for name in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _stem_worker(rank: int, port: int) -> None:
    _environment(rank, port)
    dist.init_process_group("gloo")
    try:
        torch.manual_seed(0)
        model = ParaFormer(ModelConfig(branch_depth=1, num_layers=3, dropout=0.5, **BASE))
        torch.manual_seed(100 + rank)  # each rank's own random stream differs, as in a real run
        forward = BranchTraining(model, seed=1)
        stems = []
        model.embed_dropout.register_forward_hook(lambda module, args, out: stems.append(out.detach()))
        for _ in range(2):
            forward(torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(7))).sum().backward()
        for stem in stems:  # the replicated stem drew the same masks on both ranks, at every step
            gathered = [torch.empty_like(stem) for _ in range(WORLD)]
            dist.all_gather(gathered, stem)
            assert torch.equal(gathered[0], gathered[1])
        assert not torch.equal(stems[0], stems[1])  # and new ones at each step
    finally:
        dist.destroy_process_group()


def test_branch_training_draws_the_same_stem_dropout_masks_on_every_rank():
    mp.spawn(_stem_worker, args=(free_port(),), nprocs=WORLD, join=True)


def _failing_worker(rank: int, port: int, how: str, folder: Path) -> None:
    _environment(rank, port, timeout=4)
    model, recipe = SCHEMES["data"]

    def misbehave(entry):
        if rank == 1 and how == "hang":
            time.sleep(120)
        if rank == 1 and how == "fail":
            raise ValueError("rank 1 broke")

    started = time.monotonic()
    try:
        training.train(model, DATA, replace(recipe, epochs=3), data=toy_data(), results_root=folder, progress=False,
                       on_epoch_end=misbehave)
    except Exception as error:  # noqa: BLE001 (the kind of error is what the test reads)
        if rank == 0:
            (folder / "rank0.json").write_text(json.dumps({"error": type(error).__name__,
                                                           "seconds": time.monotonic() - started}))
        os._exit(0)  # without waiting on the group, which the other rank may never leave


@pytest.mark.parametrize("how", ["fail", "hang"])
def test_a_failed_or_hung_rank_ends_the_run_with_a_rank_failure_within_the_timeout(how, tmp_path):
    context = mp.get_context("spawn")
    port = free_port()
    workers = [context.Process(target=_failing_worker, args=(rank, port, how, tmp_path)) for rank in range(WORLD)]
    for worker in workers:
        worker.start()
    workers[0].join(timeout=90)
    for worker in workers:  # the hung rank is what torchrun would stop
        worker.kill()
    outcome = json.loads((tmp_path / "rank0.json").read_text())
    assert outcome["error"] == "RankFailure"
    assert outcome["seconds"] < 40  # a few epochs of a toy run and the 4 s timeout, never the 120 s hang


def _device_only_worker(rank: int, port: int, folder: Path) -> None:
    """One rank of a group whose only backend serves "cuda", as NCCL's does: a CPU tensor in one of its
    collectives raises. The host values the run exchanges must go elsewhere."""
    _environment(rank, port)
    dist.init_process_group("cuda:gloo")
    try:
        model, recipe = SCHEMES["layer"]
        # a record rank 0 finds in the run cache stands in for a finished run; the others read it
        training._cached_run = lambda *args: {"found by": 0} if rank == 0 else None
        training._read_cached = lambda *args: {"read by": rank}
        returned = training.train(model, DATA, recipe, data=toy_data(), results_root=folder, progress=False)
        processes = join(recipe)
        torch.manual_seed(0)
        net = ParaFormer(model)
        forward = processes.training_module(net, recipe)
        tokens = net.embed(torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))).detach()
        cotangent = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(4))
        size = tokens.numel() + sum(p.numel() for p in forward.chain_parameters())
        forward.start_epoch(1, [])
        # the check as the chain's backward makes it, with figures of each rank's own: rank 0's MGRIT gradient is
        # zero (relative error exactly 1), rank 1's is not
        forward.compare_with_exact(tokens, tokens * (1 + rank), cotangent, [torch.full((size,), float(rank))])
        (folder / f"rank{rank}.json").write_text(json.dumps({
            "returned": returned, "agreed": [processes.agree(rank == 0), processes.agree(rank == 1)],
            "checks": forward.checks, "iterations": list(forward.iterations)}))
    finally:
        dist.destroy_process_group()


def test_the_ranks_host_values_never_meet_a_group_that_serves_only_the_device(tmp_path):
    """Rank 0's cache decision (`Processes.agree`, in train()) and the MGRIT check's figures
    (`MGRITTraining.compare_with_exact`, from the chain's backward) cross a group like NCCL's. The chain's own
    messages (activations, gradients) live on the run's device, which this CPU-only group cannot hold."""
    mp.spawn(_device_only_worker, args=(free_port(), tmp_path), nprocs=WORLD, join=True)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert first["returned"] == {"found by": 0} and second["returned"] == {"read by": 1}
    assert first["agreed"] == second["agreed"] == [True, False]
    assert second["checks"] == first["checks"] and first["checks"][0][2] == 1.0  # rank 0's figures on every rank
    assert first["iterations"] == second["iterations"] == [1, 1]  # one more cycle each, past the tolerance


def test_a_launch_that_does_not_match_the_recipe_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="processes=2"):
        join(replace(RECIPE, parallel="data", processes=2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="processes=1"):
        join(RECIPE)


@pytest.mark.parametrize("fields, message", [
    (dict(parallel="data"), "processes=1"),
    (dict(processes=2), "parallel='none'"),
    (dict(parallel="layer", processes=2), "solver='mgrit'"),
    (dict(parallel="data", processes=2, solver="mgrit"), "solver='mgrit'"),
    (dict(parallel="branch", processes=2, method="prefix"), "method='joint'"),
    (dict(parallel="pipeline", processes=2), "parallel='pipeline'"),
])
def test_a_multi_process_recipe_that_cannot_work_is_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        Recipe(**fields)


def test_a_minibatch_the_ranks_cannot_share_equally_is_refused():
    model, recipe = SCHEMES["data"]
    with pytest.raises(ConfigError, match="batch_size=15"):
        check_layout(ParaFormer(model), replace(recipe, batch_size=15), 96)
    with pytest.raises(ConfigError, match="last minibatch of 15"):  # 95 images: 5 batches of 16 and one of 15
        check_layout(ParaFormer(model), recipe, 95)
    check_layout(ParaFormer(model), recipe, 94)  # 14 images in the last: 7 each
    with pytest.raises(ConfigError, match="at most 1"):  # branch parallelism needs a branch per rank
        check_layout(ParaFormer(model), replace(recipe, parallel="branch"), 96)


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "datasets").exists(),
                    reason="needs the offline datasets in ../shared/datasets")
def test_torchrun_trains_one_run_from_the_command_line(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "paraformer.tools.train", "--model", "1-4", "--dataset", "fashion_mnist", "--profile",
               "ci", "--parallel", "branch", "--epochs", "1", "--n-train", "64", "--n-test", "32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PARAFORMER_RESULTS": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    records = list(tmp_path.rglob("runs/*.json"))
    assert len(records) == 1
    recipe = json.loads(records[0].read_text())["config"]["recipe"]
    assert (recipe["parallel"], recipe["processes"], recipe["epochs"]) == ("branch", 2, 1)
