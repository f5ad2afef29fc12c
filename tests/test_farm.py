"""A profile's runs farmed out as jobs (paraformer.tools.farm): by local processes, and by a real one-node Slurm
cluster (Debian's slurm-wlm and munge, started by tools/cluster/one_node_slurm.sh in a temp folder)."""

import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.runcache import load_trained_model, read_record, run_paths
from paraformer.experiments import expansion, layer_sweep
from paraformer.experiments.plan import execute, key_of, planned
from paraformer.tools import farm

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tools" / "cluster" / "one_node_slurm.sh"
RATE = 1e10  # FLOPs per second for the estimate: a fixed figure, so that no test measures this machine


def plan_01():
    return layer_sweep.plan("ci")


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """Notebook 01's ci runs trained one after another in this process: what every farm must reproduce."""
    folder = tmp_path_factory.mktemp("serial")
    return folder, {t.planned.name: t.result for t in execute(plan_01(), folder, progress=False)}


def untimed(history: list[dict]) -> list[dict]:
    """A run's per-epoch history without its wall times, which no two trainings share."""
    return [{k: v for k, v in epoch.items() if "seconds" not in k} for epoch in history]


def assert_same_as_serial(folder: Path, serial) -> None:
    serial_folder, results = serial
    for run in plan_01():
        key = key_of(run, folder)
        record = read_record(run_paths(run.name, key, folder)[0], key)
        alone = results[run.name]
        assert record.key == alone.key and untimed(record.history) == untimed(alone.history)
        assert (record.correct() == alone.correct()).all()
        ours, theirs = load_trained_model(record, folder).state_dict(), load_trained_model(alone, serial_folder).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def states(folder: Path, runs=None) -> dict[str, str]:
    runs = runs if runs is not None else farm.profile_runs("ci", ["01"], RATE, folder)
    return {s.run.name: s.state for s in farm.run_states(runs, folder)}


def wait_until(condition, timeout: float = 600, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


# --- what the farm sends ----------------------------------------------------------------------------------------

def test_a_run_that_needs_others_is_sent_with_them_in_one_chain_and_each_needed_run_only_once(tmp_path):
    runs = farm.profile_runs("ci", ["05"], RATE, tmp_path)
    chains = farm.chains_to_send(farm.run_states(runs, tmp_path))
    lasts = [chain[-1] for chain in chains]
    assert {run for chain in chains for run in chain} == {r.planned for r in runs}  # every run is in some chain
    assert not any(last in chain[:-1] for last in lasts for chain in chains)  # no chain ends in another's step
    for chain in chains:
        assert chain == [*farm.ancestors(chain[-1]), chain[-1]]  # each run after the runs it needs
    assert len(lasts) < len(runs)  # task1 and the grown models' roots ride with their descendants


def test_done_failed_and_running_runs_are_not_sent_again(tmp_path, monkeypatch):
    runs = farm.profile_runs("ci", ["01"], RATE, tmp_path)
    fake = [farm.RunState(r, state) for r, state in zip(runs, ["done", "failed", "running", "stopped"])]
    assert [c[-1] for c in farm.chains_to_send(fake)] == [runs[3].planned]
    assert [c[-1] for c in farm.chains_to_send(fake, retry_failed=True)] == [runs[1].planned, runs[3].planned]


def test_local_work_is_dealt_longest_first_to_the_least_loaded_worker():
    a, b, c, d = (planned("x", ModelConfig(num_branches=1), DataConfig(dataset="mnist"), Recipe(seed=s)) for s in
                  range(4))
    minutes = {a: 5.0, b: 3.0, c: 2.0, d: 1.0}
    work = farm.deal([[a], [b], [c], [d]], minutes, 2)
    assert [[chain[-1] for chain in job] for job in work] == [[a, d], [b, c]]  # 6 and 5 minutes


def test_slurm_options_come_from_flags_or_a_file_and_unknown_ones_fail(tmp_path):
    config = tmp_path / "slurm.json"
    config.write_text(json.dumps({"partition": "gpu", "time": 120, "extra": {"constraint": "h100"}}))
    options = farm.SlurmOptions.from_file(config, time=60, partition=None)
    assert (options.partition, options.time, options.extra) == ("gpu", 60, {"constraint": "h100"})
    config.write_text(json.dumps({"partitoin": "gpu"}))
    with pytest.raises(ConfigError, match="partitoin"):
        farm.SlurmOptions.from_file(config)
    with pytest.raises(ConfigError, match="max_parallel=0"):
        farm.SlurmOptions(max_parallel=0)


def test_a_damaged_job_record_is_refused_naming_its_line(tmp_path):
    ledger = farm.farm_dir(tmp_path) / "jobs.jsonl"
    ledger.parent.mkdir(parents=True)
    ledger.write_text('{"job_id": "1", "executor": "local", "runs": []}\nnot json\n')
    with pytest.raises(ConfigError, match="line 2"):
        farm.read_ledger(tmp_path)



def test_a_resubmitted_job_reads_the_epochs_of_the_checkpoint_train_resumes_from(tmp_path):
    run = plan_01()[0]
    checkpoint = run_paths(run.name, key_of(run, tmp_path), tmp_path)[1]
    assert farm.checkpoint_epochs(tmp_path, run) == 0  # none yet
    checkpoint.parent.mkdir(parents=True)
    previous = checkpoint.with_name(checkpoint.name + ".prev")
    torch.save({"history": [{"epoch": 1}]}, previous)  # the version before the last, as `load_checkpoint` tries next
    assert farm.checkpoint_epochs(tmp_path, run) == 1
    torch.save({"history": [{"epoch": 1}, {"epoch": 2}]}, checkpoint)
    assert farm.checkpoint_epochs(tmp_path, run) == 2

# --- local processes --------------------------------------------------------------------------------------------

def test_local_jobs_train_every_run_as_serial_training_does_and_a_second_submit_sends_nothing(tmp_path, serial,
                                                                                               monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    folder = tmp_path / "ci"
    options = farm.SlurmOptions(max_parallel=2, time=20)
    jobs = farm.submit("ci", "local", options, ["01"], flops_per_second=RATE, folder=folder)
    assert len(jobs) == 2 and sum(len(j["runs"]) for j in jobs) == 4  # two workers share the four runs
    assert farm.submit("ci", "local", options, ["01"], flops_per_second=RATE, folder=folder) == []  # queued/running
    wait_until(lambda: set(states(folder).values()) == {"done"})
    assert_same_as_serial(folder, serial)
    assert farm.submit("ci", "local", options, ["01"], flops_per_second=RATE, folder=folder) == []
    monkeypatch.setenv("PARAFORMER_TRAIN", "never")  # what `collect` sets: every run must come from the cache
    assert all(t.result.cached for t in execute(plan_01(), folder, progress=False))


def test_a_failing_job_is_reported_with_its_error_and_not_sent_again(tmp_path):
    bad = replace(plan_01()[0], data=DataConfig(dataset="fashion_mnist", n_train=200, n_test=200, image_size=3))
    runs = [farm.FarmRun(bad, key_of(bad, tmp_path), 0.1, ("01",))]
    farm.submit("ci", "local", farm.SlurmOptions(time=5), runs=runs, folder=tmp_path)
    wait_until(lambda: farm.run_states(runs, tmp_path)[0].state == "failed", timeout=120)
    failed = farm.run_states(runs, tmp_path)[0]
    assert failed.status["error"].startswith("ConfigError") and farm.log_tail(failed.job)
    assert farm.submit("ci", "local", farm.SlurmOptions(time=5), runs=runs, folder=tmp_path) == []


# --- a real one-node Slurm cluster ------------------------------------------------------------------------------

def _slurm_missing() -> str | None:
    missing = [tool for tool in ("slurmctld", "slurmd", "munged", "sbatch") if shutil.which(tool) is None]
    return f"no {', '.join(missing)} (make cluster-test-env installs Debian's slurm-wlm and munge)" if missing else None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = _slurm_missing()
    if why:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("slurm")
    started = time.monotonic()
    up = subprocess.run([str(CLUSTER), "start", str(folder)], capture_output=True, text=True)
    if up.returncode:
        subprocess.run([str(CLUSTER), "stop", str(folder)])
        pytest.fail(f"one-node Slurm did not start: {up.stderr.strip()}")
    print(f"one-node Slurm started in {time.monotonic() - started:.1f} s")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    os.environ.pop("SLURM_CONF", None)
    subprocess.run([str(CLUSTER), "stop", str(folder)], check=True)


SLURM = farm.SlurmOptions(max_parallel=2, time=20, cpus_per_task=1, mem_gb=1)


def test_slurm_jobs_train_every_run_as_serial_training_does_and_the_notebook_then_trains_nothing(
        slurm, tmp_path, serial, monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    folder = tmp_path / "ci"
    started = time.monotonic()
    jobs = farm.submit("ci", "slurm", SLURM, ["01"], flops_per_second=RATE, folder=folder)
    assert len(jobs) == 4 and len({j["job_id"].split("_")[0] for j in jobs}) == 1  # one array, a job per run
    assert farm.submit("ci", "slurm", SLURM, ["01"], flops_per_second=RATE, folder=folder) == []  # nothing twice
    wait_until(lambda: set(states(folder).values()) == {"done"})
    print(f"4 runs farmed through Slurm in {time.monotonic() - started:.1f} s")
    assert_same_as_serial(folder, serial)
    trained_by = {json.loads(p.read_text())["job"] for p in (folder / "farm" / "status").glob("*.json")}
    assert trained_by == {j["job_id"] for j in jobs}  # each run by its own job, none by a second
    notebook = subprocess.run(
        [str(Path(os.sys.executable).parent / "papermill"), str(ROOT / "notebooks" / "01_layer_sweep.ipynb"),
         str(tmp_path / "01.ipynb"), "-p", "profile", "ci", "--cwd", str(ROOT / "notebooks"), "--no-progress-bar"],
        capture_output=True, text=True, env={**os.environ, "PARAFORMER_TRAIN": "never"})
    assert notebook.returncode == 0, notebook.stderr[-2000:]  # it would have raised on a run it had to train


def test_a_job_cancelled_mid_run_resumes_from_its_checkpoint_when_sent_again(slurm, tmp_path):
    run = planned("x", ModelConfig(num_branches=4, branch_depth=1, width=32, num_heads=2, image_size=28, in_channels=1,
                                   patch_size=7),
                  DataConfig(dataset="fashion_mnist", n_train=4000, n_test=200),
                  Recipe(epochs=8, batch_size=32, warmup_epochs=0))
    runs = [farm.FarmRun(run, key_of(run, tmp_path), 1.0, ("x",))]
    (job,) = farm.submit("ci", "slurm", SLURM, runs=runs, folder=tmp_path)
    checkpoint = run_paths(run.name, runs[0].key, tmp_path)[1]
    wait_until(lambda: checkpoint.is_file() or farm.run_states(runs, tmp_path)[0].state in ("failed", "stopped"),
               poll=0.2)
    assert checkpoint.is_file(), farm.log_tail(job, 20)
    subprocess.run(["scancel", job["job_id"]], check=True)
    wait_until(lambda: farm.run_states(runs, tmp_path)[0].state == "stopped")
    assert not run_paths(run.name, runs[0].key, tmp_path)[0].is_file()  # stopped before its end
    (again,) = farm.submit("ci", "slurm", SLURM, runs=runs, folder=tmp_path)
    wait_until(lambda: farm.run_states(runs, tmp_path)[0].state == "done")
    status = farm.run_states(runs, tmp_path)[0].status
    assert status["job"] == again["job_id"] != job["job_id"]
    assert status["resumed_from_epoch"] >= 1, (sorted(p.name for p in checkpoint.parent.iterdir()),
                                               farm.log_tail(job, 20), farm.log_tail(again, 20))
    alone = tmp_path / "alone"
    serial_result = execute([run], alone, progress=False)[0].result
    farmed = read_record(run_paths(run.name, runs[0].key, tmp_path)[0], runs[0].key)
    assert untimed(farmed.history) == untimed(serial_result.history)
    ours = load_trained_model(farmed, tmp_path).state_dict()
    theirs = load_trained_model(serial_result, alone).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_two_process_run_is_one_slurm_job_of_two_tasks_that_trains_what_one_process_trains(slurm, tmp_path):
    # Recipe.processes = 2: one job, two Slurm tasks, torch.distributed's variables from submitit's environment
    # (as torchrun would set them), gloo on the CPU; against the same run on one process, up to float sums' order.
    model = ModelConfig(branch_depth=1, num_layers=2, width=32, num_heads=2, image_size=28, in_channels=1, patch_size=7)
    data = DataConfig(dataset="fashion_mnist", n_train=256, n_test=100)
    recipe = Recipe(epochs=2, batch_size=32, warmup_epochs=0, parallel="data", processes=2)
    run = planned("two-processes", model, data, recipe)
    runs = [farm.FarmRun(run, key_of(run, tmp_path), 1.0, ("two-processes",))]
    (job,) = farm.submit("ci", "slurm", SLURM, runs=runs, folder=tmp_path)
    assert job["processes"] == 2
    wait_until(lambda: farm.run_states(runs, tmp_path)[0].state in ("done", "failed"))
    (state,) = farm.run_states(runs, tmp_path)
    assert state.state == "done", farm.log_tail(job, 30)
    farmed = read_record(run_paths(run.name, runs[0].key, tmp_path)[0], runs[0].key)
    assert (farmed.config["recipe"]["processes"], farmed.config["recipe"]["parallel"]) == (2, "data")
    assert state.status["job"] == job["job_id"]
    one = planned("two-processes", model, data, replace(recipe, parallel="none", processes=1))
    single = execute([one], tmp_path / "one", progress=False)[0].result
    assert [e["train_loss"] for e in farmed.history] == pytest.approx([e["train_loss"] for e in single.history],
                                                                       rel=1e-4)
    ours = load_trained_model(farmed, tmp_path).state_dict()
    theirs = load_trained_model(single, tmp_path / "one").state_dict()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-3, atol=1e-4)
