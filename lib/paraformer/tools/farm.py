"""A profile's runs farmed out as jobs, by Slurm or by local processes (submitit), into the profile's results
folder; the notebooks afterwards find every run in the run cache and train nothing (docs/cluster.md).

    python -m paraformer.tools.farm plan --profile paper [--notebooks 01 03]
    python -m paraformer.tools.farm submit --profile paper --executor slurm --partition gpu --gpus-per-job 1 \
        --time 240 --max-parallel 16
    python -m paraformer.tools.farm status --profile paper
    python -m paraformer.tools.farm collect --profile paper      # = make reproduce PROFILE=paper TRAIN=never

Each job trains its runs through the notebooks' own `plan.execute`, so through the same `train()`: the run key, the
record and the checkpoint are the notebooks'. A run that starts from another's weights is trained in the job of its
last descendant, after them (a job's chain); two jobs that share a run hold its lock in turn
(`core.runlock`): one trains it, the other reads its record. A job stopped by Slurm (preemption, time limit) is
requeued by submitit's checkpoint hook and resumes from its checkpoint; a job killed outright shows as "stopped"
and the next `submit` sends it again, to resume the same way. A job that fails (an exception) is "failed", with
its log, and is sent again only with --retry-failed.

What the farm keeps, under <results>/farm/: jobs.jsonl (one line per submitted job: its id, executor, runs and
logs), status/<run>.json (written by the job: running, done or failed, with host and error) and logs/ (submitit's).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from ..core.config import ConfigError, OneLineArgumentParser
from ..core.files import atomic_write_json, previous_path
from ..core.paths import project_root, results_dir, results_root
from ..core.runcache import run_paths
from ..core.runlock import held_by, lock_path
from ..core.weights import PretrainedUnavailable
from ..experiments.estimate import rate, run_rows
from ..experiments.plan import PlannedRun, execute, key_of
from ..experiments.profiles import PROFILES, get_profile
from .estimate import NOTEBOOKS, notebook_name, profile_notebooks

STATES = ("done", "running", "queued", "failed", "stopped", "missing", "waiting")
# done: its record is in the run cache; running: a process holds its lock; queued: a job for it has not started;
# failed: its job raised (sent again only with --retry-failed); stopped: its job ended without a record or an error
# (killed, cancelled, a lost node; sent again, it resumes); missing: never sent; waiting: its key depends on a run
# not trained yet (its starting weights), and a job that trains that run first may train it
SUBMITTABLE = ("missing", "stopped")
EXECUTORS = ("slurm", "local")


def farm_dir(folder: Path) -> Path:
    return Path(folder) / "farm"


# --- what the profile trains ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FarmRun:
    """One run of a profile's plan, as the farm schedules it."""

    planned: PlannedRun
    key: str | None  # None until its starting weights exist (`plan.key_of`)
    minutes: float  # estimated (`experiments.estimate`)
    notebooks: tuple[str, ...]  # the notebooks whose plans hold it

    @property
    def name(self) -> str:
        return self.planned.name

    @property
    def label(self) -> str:
        return f"{self.name}-{self.key}" if self.key else f"{self.name} (key not known yet)"

    @property
    def processes(self) -> int:
        return self.planned.recipe.processes


def ancestors(run: PlannedRun) -> list[PlannedRun]:
    """The runs `run` needs trained before it (its parent, the run its starting weights come from, theirs), oldest
    first."""
    before = [run.parent] if run.parent is not None else []
    if run.init is not None and hasattr(run.init, "run"):
        before.append(run.init.run)
    out = []
    for earlier in before:
        for needed in [*ancestors(earlier), earlier]:
            if needed not in out:
                out.append(needed)
    return out


def profile_runs(profile: str, notebooks: list[str] | None = None, flops_per_second=None,
                 folder: Path | None = None) -> list[FarmRun]:
    """Every distinct run the profile's notebooks (or those named) plan, in plan order, with its estimated minutes
    (runs that several notebooks make are listed once, with all of them)."""
    folder = Path(folder) if folder is not None else results_dir(profile)
    chosen = [notebook_name(nb) for nb in notebooks] if notebooks else profile_notebooks(profile)
    planned: dict[tuple[str, str], tuple[PlannedRun, list[str]]] = {}  # (name, key or stand-in) -> run, notebooks
    for nb in chosen:
        for run in NOTEBOOKS[nb].plan(profile):
            for needed in [*ancestors(run), run]:
                _, owners = planned.setdefault((needed.name, key_of(needed, folder, stand_in=True)), (needed, []))
                if nb not in owners:
                    owners.append(nb)
    if not planned:
        return []
    runs = [run for run, _ in planned.values()]
    rows = run_rows(runs, folder, float(rate(flops_per_second, profile)))
    return [FarmRun(run, key_of(run, folder), float(minutes), tuple(owners))
            for (run, owners), minutes in zip(planned.values(), rows["minutes"])]


# --- what happened to each run ----------------------------------------------------------------------------------

def status_path(folder: Path, run: PlannedRun, key: str | None) -> Path:
    return farm_dir(folder) / "status" / f"{run.name}-{key or 'pending'}.json"


def _job_id() -> str | None:
    """The job this process belongs to, as submitit names it ("12_3": task 3 of array 12), or None outside one."""
    try:
        import submitit
        return str(submitit.JobEnvironment().job_id)
    except (ImportError, RuntimeError):
        return None


def write_status(folder: Path, run: PlannedRun, key: str | None, state: str, **fields) -> None:
    """What a job says of a run: running, done or failed, with where and when."""
    atomic_write_json({"run": run.name, "key": key, "state": state, "host": socket.gethostname(), "pid": os.getpid(),
                       "job": _job_id(),
                       "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields},
                      status_path(folder, run, key))


def read_ledger(folder: Path) -> list[dict]:
    """Every job submitted into `folder`, oldest first (jobs.jsonl)."""
    path = farm_dir(folder) / "jobs.jsonl"
    if not path.is_file():
        return []
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            jobs.append(json.loads(line))
        except ValueError:
            raise ConfigError(f"{path}, line {number}, is not a job record; delete that line (or the file, which "
                              "forgets every submission but no run)") from None
    return jobs


def _append_ledger(folder: Path, jobs: list[dict]) -> None:
    path = farm_dir(folder) / "jobs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.writelines(json.dumps(job) + "\n" for job in jobs)


def job_alive(job: dict) -> bool:
    """Whether a submitted job is still queued or running, by asking its executor."""
    if job["executor"] == "local":
        try:
            os.kill(int(job["job_id"]), 0)  # the local job's controller process
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return not _is_zombie(int(job["job_id"]))
    squeue = shutil.which("squeue")
    if squeue is None:  # never guess "stopped": submit would send a queued job's runs twice
        raise ConfigError(f"job {job['job_id']} went to Slurm, and this machine has no squeue to ask about it; run "
                          "the farm where Slurm's commands are (the login node)")
    found = subprocess.run([squeue, "-h", "-j", str(job["job_id"]), "-o", "%T"], capture_output=True, text=True)
    return found.returncode == 0 and bool(found.stdout.strip())


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return False


@dataclass
class RunState:
    run: FarmRun
    state: str  # one of `STATES`
    job: dict | None = None  # its latest job in the ledger
    status: dict = field(default_factory=dict)  # what that job wrote of it


def run_states(runs: list[FarmRun], folder: Path) -> list[RunState]:
    """Each run's state (`STATES`): the run cache and the locks first, then what its latest job said."""
    latest: dict[str, dict] = {}
    for job in read_ledger(folder):
        for label in job["runs"]:
            latest[label] = job
    alive: dict[str, bool] = {}
    out = []
    for run in runs:
        job = latest.get(run.label) or latest.get(f"{run.name} (key not known yet)")  # sent while waiting
        status = {}
        path = status_path(folder, run.planned, run.key)
        if path.is_file():
            status = json.loads(path.read_text())
        if run.key is None:
            state = "waiting"
        elif run_paths(run.name, run.key, folder)[0].is_file():
            state = "done"
        elif held_by(lock_path(run_paths(run.name, run.key, folder)[0])) is not None:
            state = "running"
        elif job is None:
            state = "missing"
        elif status.get("state") == "failed" and status.get("job") == str(job["job_id"]):
            state = "failed"
        else:
            if job["job_id"] not in alive:
                alive[job["job_id"]] = job_alive(job)
            state = "queued" if alive[job["job_id"]] else "stopped"
        out.append(RunState(run, state, job, status))
    return out


def log_tail(job: dict | None, lines: int = 5) -> str:
    """The last `lines` lines of a job's logs (stderr, else stdout)."""
    if not job:
        return ""
    for name in ("stderr", "stdout"):
        path = Path(job.get(name, ""))
        if path.is_file():
            text = path.read_text(errors="replace").strip().splitlines()
            if text:
                return "\n".join(text[-lines:])
    return ""


def state_table(states: list[RunState]) -> pd.DataFrame:
    return pd.DataFrame([{"run": s.run.name, "key": s.run.key or "", "state": s.state,
                          "notebooks": " ".join(nb.split("_")[0] for nb in s.run.notebooks),
                          "minutes": round(s.run.minutes, 1), "job": (s.job or {}).get("job_id", ""),
                          "host": s.status.get("host", "")} for s in states])


# --- the jobs -----------------------------------------------------------------------------------------------------

def checkpoint_epochs(folder: Path, run: PlannedRun) -> int:
    """The epochs the run's checkpoint holds (0: none): where a resubmitted job resumes it."""
    key = key_of(run, folder)
    if key is None:
        return 0
    path = run_paths(run.name, key, folder)[1]
    for candidate in (path, previous_path(path)):  # the order `load_checkpoint` tries them in
        try:
            return len(torch.load(candidate, map_location="cpu", weights_only=True)["history"])
        except Exception:  # missing or damaged: train() sets a damaged one aside and says so
            continue
    return 0


class TrainJob:
    """What a job runs: chains of planned runs, each in order through `plan.execute` (so `train()`), into the
    results folder. Submitit calls `checkpoint` when Slurm preempts the job or its time runs out: the same job is
    requeued and `train()` resumes each run from its checkpoint."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def __call__(self, chains: list[list[PlannedRun]]) -> list[str]:
        if int(os.environ.get("SLURM_NTASKS", os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))) > 1:
            import submitit  # a multi-process run: torch.distributed's variables from the job's, as torchrun sets them
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        writes = int(os.environ.get("RANK", "0")) == 0
        trained, failed = [], []
        for chain in chains:
            last = chain[-1]
            key = key_of(last, self.folder)
            resumed = checkpoint_epochs(self.folder, last)  # where an earlier job of this run stopped
            if writes:
                write_status(self.folder, last, key, "running", resumed_from_epoch=resumed)
            try:
                done = execute(chain, self.folder, progress=False)
            except Exception as error:  # not a requeue's exit nor a kill: those leave the run "stopped", to resume
                if writes:
                    write_status(self.folder, last, key_of(last, self.folder), "failed",
                                 error=f"{type(error).__name__}: {error}",
                                 traceback=traceback.format_exc()[-4000:])
                traceback.print_exc()
                failed.append(last.name)
                continue  # a worker's other chains do not depend on this one
            if writes:
                for run in done:
                    write_status(self.folder, run.planned, run.result.key, "done", seconds=run.result.wall_seconds,
                                 **({"resumed_from_epoch": resumed} if run.planned == last else {}))
            trained.append(done[-1].result.key)
        if failed:  # the job fails, so that Slurm and submitit say so too
            raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)} (farm status shows why)")
        return trained

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(TrainJob(self.folder), *args, **kwargs)


def chains_to_send(states: list[RunState], retry_failed: bool = False) -> list[list[PlannedRun]]:
    """The chains the jobs train: one per run to send that no other run to send needs before it, each ending in
    that run and starting with the runs it needs (which the run cache answers where they are done)."""
    sendable = {"failed", *SUBMITTABLE} if retry_failed else set(SUBMITTABLE)
    send = [s.run.planned for s in states if s.state in sendable]
    waiting = [s.run.planned for s in states if s.state == "waiting"]
    # a waiting run goes with the job that trains what it waits for
    send += [run for run in waiting if any(needed in send for needed in ancestors(run))]
    needed_by_others = {needed for run in send for needed in ancestors(run)}
    return [[*ancestors(run), run] for run in send if run not in needed_by_others]


@dataclass(frozen=True)
class SlurmOptions:
    """The job's resources: flags of `submit`, or a JSON file of the same names (--config)."""

    partition: str | None = None  # Slurm partition (default: the cluster's)
    gpus_per_job: int = 0  # GPUs of a one-process run's job (a multi-process run gets one per process)
    cpus_per_task: int = 4  # CPU cores per process (data loading and augmentation)
    mem_gb: int = 32  # memory per job
    time: int = 240  # minutes per job before Slurm stops it (submitit requeues it, and it resumes)
    max_parallel: int = 8  # jobs running at once (Slurm: the array's parallelism; local: the worker processes)
    account: str | None = None  # Slurm account, where the cluster needs one
    qos: str | None = None  # Slurm quality of service
    extra: dict = field(default_factory=dict)  # other sbatch options, as submitit's slurm_additional_parameters

    def __post_init__(self):
        for name in ("gpus_per_job", "cpus_per_task", "mem_gb", "time", "max_parallel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "gpus_per_job" else 1):
                raise ConfigError(f"{name}={value!r} must be a whole number of at least "
                                  f"{0 if name == 'gpus_per_job' else 1}")

    @classmethod
    def from_file(cls, path: Path, **overrides) -> "SlurmOptions":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"--config {path}: {error}; give a JSON object of {sorted(cls.__dataclass_fields__)}")
        unknown = set(values) - set(cls.__dataclass_fields__)
        if not isinstance(values, dict) or unknown:
            raise ConfigError(f"--config {path}: unknown option(s) {sorted(unknown)}; use "
                              f"{sorted(cls.__dataclass_fields__)}")
        return cls(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


def _executor(kind: str, folder: Path, options: SlurmOptions, processes: int):
    try:
        import submitit
    except ImportError:
        raise ConfigError("the farm needs submitit: pip install -e '.[cluster]' (pinned in constraints.txt)") from None
    logs = farm_dir(folder) / "logs"
    gpus = options.gpus_per_job * processes if options.gpus_per_job else 0
    if kind == "local":
        executor = submitit.LocalExecutor(folder=logs)
        executor.update_parameters(timeout_min=options.time, tasks_per_node=processes, gpus_per_node=gpus)
        return executor
    if shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: no sbatch on this machine; run on a Slurm login node, or use "
                          "--executor local")
    executor = submitit.SlurmExecutor(folder=logs)
    executor.update_parameters(time=options.time, ntasks_per_node=processes, cpus_per_task=options.cpus_per_task,
                               mem=f"{options.mem_gb}G", array_parallelism=options.max_parallel,
                               **({"gpus_per_node": gpus} if gpus else {}),
                               **({"partition": options.partition} if options.partition else {}),
                               **({"account": options.account} if options.account else {}),
                               **({"qos": options.qos} if options.qos else {}),
                               **({"additional_parameters": options.extra} if options.extra else {}))
    return executor


def deal(chains: list[list[PlannedRun]], minutes: dict[PlannedRun, float], workers: int) -> list[list[list]]:
    """Chains dealt to at most `workers` local jobs, longest first to the least loaded."""
    loads = [[0.0, []] for _ in range(min(workers, len(chains)))]
    for chain in sorted(chains, key=lambda c: -sum(minutes.get(run, 0.0) for run in c)):
        least = min(loads, key=lambda load: load[0])
        least[0] += sum(minutes.get(run, 0.0) for run in chain)
        least[1].append(chain)
    return [load[1] for load in loads]


def submit(profile: str, executor: str, options: SlurmOptions, notebooks: list[str] | None = None,
           retry_failed: bool = False, flops_per_second=None, folder: Path | None = None,
           runs: list[FarmRun] | None = None) -> list[dict]:
    """Sends a job for every run that is missing or stopped (and failed with `retry_failed`) of the profile's plan
    (or of `runs`); returns the jobs as recorded in jobs.jsonl. Runs of different process counts go in different
    job arrays."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}; use one of {list(EXECUTORS)}")
    folder = Path(folder) if folder is not None else results_dir(profile)
    runs = runs if runs is not None else profile_runs(profile, notebooks, flops_per_second, folder)
    states = run_states(runs, folder)
    chains = chains_to_send(states, retry_failed)
    minutes = {s.run.planned: s.run.minutes for s in states}
    labels = {s.run.planned: s.run.label for s in states}
    recorded = []
    for processes in sorted({chain[-1].recipe.processes for chain in chains}):
        mine = [chain for chain in chains if chain[-1].recipe.processes == processes]
        work = deal(mine, minutes, options.max_parallel) if executor == "local" else [[chain] for chain in mine]
        job_executor = _executor(executor, folder, options, processes)
        jobs = job_executor.map_array(TrainJob(folder), work)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for job, job_chains in zip(jobs, work):
            recorded.append({"job_id": str(job.job_id), "executor": executor, "profile": profile, "submitted": now,
                             "processes": processes,
                             "runs": [labels.get(run, run.name) for chain in job_chains for run in chain],
                             "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)})
    _append_ledger(folder, recorded)
    return recorded


def wait(profile: str, notebooks: list[str] | None = None, timeout: float = 3600, poll: float = 2.0,
         folder: Path | None = None, flops_per_second=None) -> list[RunState]:
    """Polls until no run is queued or running (or `timeout` seconds pass); returns the states."""
    folder = Path(folder) if folder is not None else results_dir(profile)
    deadline = time.monotonic() + timeout
    while True:
        states = run_states(profile_runs(profile, notebooks, flops_per_second, folder), folder)
        if not any(s.state in ("queued", "running") for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(poll)


# --- the command line ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m paraformer.tools.farm",
                                   description="Farm a profile's runs out as Slurm or local jobs (submitit) into its "
                                               "results folder; the notebooks then train nothing (docs/cluster.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, words in (("plan", "list the profile's runs with their key, estimated minutes and state"),
                        ("submit", "send a job for every run that is missing or stopped"),
                        ("status", "counts by state, and the failed runs with the end of their logs"),
                        ("collect", "run the notebooks with every run from the run cache (training refused)")):
        command = commands.add_parser(name, help=words, description=words)
        command.add_argument("--profile", required=True, choices=sorted(PROFILES))
        command.add_argument("--notebooks", nargs="+", metavar="NB", help="notebooks by number or name (default: "
                                                                          "those the profile runs)")
        command.add_argument("--flops-per-second", type=float, metavar="RATE",
                             help="for the estimate: the model FLOP rate of the cluster's GPUs (default: measure "
                                  "this machine's)")
        if name == "submit":
            command.add_argument("--executor", required=True, choices=EXECUTORS)
            command.add_argument("--config", type=Path, help="JSON file of the options below (flags win)")
            command.add_argument("--partition")
            command.add_argument("--gpus-per-job", type=int, help="GPUs per process of a run (default 0)")
            command.add_argument("--cpus-per-task", type=int)
            command.add_argument("--mem-gb", type=int)
            command.add_argument("--time", type=int, help="minutes per job (default 240)")
            command.add_argument("--max-parallel", type=int, help="jobs at once (default 8)")
            command.add_argument("--account")
            command.add_argument("--qos")
            command.add_argument("--retry-failed", action="store_true", help="send failed runs again too")
        if name == "status":
            command.add_argument("--wait", type=float, metavar="SECONDS",
                                 help="first wait up to this long for queued and running jobs to end")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, PretrainedUnavailable) as error:  # the latter: notebook 07's plan at paper needs the weights
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2


def _run(args) -> int:
    folder = results_dir(args.profile)
    get_profile(args.profile)
    if args.command == "collect":
        # ROOT: the results root the jobs wrote into (PARAFORMER_RESULTS), which make would otherwise set to results/
        return subprocess.call(["make", "-C", str(project_root()), "reproduce", f"PROFILE={args.profile}",
                                "TRAIN=never", f"ROOT={results_root()}"])
    if args.command == "submit":
        flags = {name: getattr(args, name) for name in ("partition", "gpus_per_job", "cpus_per_task", "mem_gb", "time",
                                                        "max_parallel", "account", "qos")}
        options = (SlurmOptions.from_file(args.config, **flags) if args.config else
                   SlurmOptions(**{k: v for k, v in flags.items() if v is not None}))
        jobs = submit(args.profile, args.executor, options, args.notebooks, args.retry_failed, args.flops_per_second,
                      folder)
        sent = sum(len(job["runs"]) for job in jobs)
        print(f"submitted {len(jobs)} job(s) ({args.executor}) for {sent} run(s), their needed runs included; "
              f"logs under {farm_dir(folder) / 'logs'}; `status` follows them")
        return 0
    if args.command == "status" and args.wait:
        states = wait(args.profile, args.notebooks, args.wait, folder=folder, flops_per_second=args.flops_per_second)
    else:
        states = run_states(profile_runs(args.profile, args.notebooks, args.flops_per_second, folder), folder)
    table = state_table(states)
    counts = table["state"].value_counts() if len(table) else pd.Series(dtype=int)
    print(f"profile {args.profile}, results in {folder}: {len(table)} run(s); "
          + ", ".join(f"{state} {int(counts.get(state, 0))}" for state in STATES if counts.get(state, 0)))
    if args.command == "plan":
        print(table.drop(columns=["job", "host"]).to_string(index=False) if len(table) else "(no runs)")
        print(f"estimated minutes in all: {table['minutes'].sum():.0f} (at this machine's rate unless "
              "--flops-per-second is given)" if len(table) else "")
        return 0
    print(table[table["state"] != "done"].to_string(index=False) if (table["state"] != "done").any() else
          "every run is done: `collect` renders the tables without training")
    for s in states:
        if s.state == "failed":
            print(f"\nFAILED {s.run.label} (job {s.job['job_id']}): {s.status.get('error', '')}\n"
                  f"log {s.job.get('stderr')}:\n{log_tail(s.job)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
