"""What decides whether a finished run is still this code's (paraformer.training.numerics): numerics.json describes
the code as it is, the canary computes the numbers it records, a changed number changes the canary, and the code
digest follows the code but not its comments or docstrings."""

import shutil
from types import SimpleNamespace

import pytest
import torch

from paraformer.core import progressive
from paraformer.core.provenance import device_name
from paraformer.training import canary, numerics


def test_numerics_json_records_this_code():
    recorded = numerics.recorded()
    assert recorded["code_digest"] == numerics.code_digest(), (
        "the training code changed since numerics.json was made: run `make numerics`, which says whether the "
        "change altered a number (then the committed runs are stale)")
    assert recorded["known"][recorded["code_digest"]] == recorded["canary"] == canary.overall(recorded["runs"])


@pytest.fixture(scope="module")
def digests() -> dict[str, str]:
    return canary.run_canary()


def test_the_canary_computes_the_recorded_numbers(digests):
    recorded = numerics.recorded()
    here = f"{device_name(torch.device('cpu')).split(',')[0]}, torch {torch.__version__}"
    there = recorded["measured_on"].split(",")[0] + "," + recorded["measured_on"].split(",")[-1]
    if here != there:
        pytest.skip(f"numerics.json was measured on {recorded['measured_on']}; float rounding differs between kinds "
                    f"of CPU and torch versions, and this is {here}")
    changed = {name: (recorded["runs"].get(name), digest) for name, digest in digests.items()
               if recorded["runs"].get(name) != digest}
    assert changed == {}, ("these runs compute other numbers than numerics.json records; if that is meant, "
                           "`make numerics` records them (and the committed runs become stale)")


def test_the_canary_covers_every_method_solver_and_execution_path(digests):
    assert sorted(digests) == sorted(["data", "joint", "authors", "prefix", "frozen", "vit-step", "mgrit-fixed",
                                      "mgrit-adaptive", "expand", "finetune", "processes-data", "processes-branch",
                                      "processes-layer"])
    assert len(set(digests.values())) == len(digests)  # every run computes something of its own


def test_a_changed_number_in_training_changes_the_canary(digests, tmp_path, monkeypatch):
    monkeypatch.setattr(progressive, "AUTHORS_PREFIX_CLIP", 0.5)  # the authors' method clips its prefix steps at 1.0
    with torch.random.fork_rng(), canary.one_thread():
        changed = canary.single_process_digests(tmp_path)
    assert [name for name in changed if changed[name] != digests[name]] == ["authors"]


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "paraformer"
    shutil.copytree(numerics.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    return copy


def test_the_code_digest_covers_what_training_runs_and_nothing_it_does_not_import(package_copy):
    names = {file.relative_to(package_copy).as_posix() for file in numerics.training_modules(package_copy)}
    # what train() runs, including modules reached only through others (the image decoders, via data)
    assert {"training/trainer.py", "core/model.py", "core/progressive.py", "core/execution.py", "core/data.py",
            "core/datasources.py", "core/config.py", "core/runcache.py", "parallel/mgrit.py",
            "parallel/processes.py", "__init__.py"} <= names
    assert not {name for name in names if name.split("/")[0] in ("bench", "experiments", "tools")}
    assert not names & {"core/flops.py", "core/weights.py", "training/canary.py"}


def test_comments_and_docstrings_leave_the_digest_but_code_changes_it(package_copy):
    before = numerics.package_digest(package_copy)
    model = package_copy / "core" / "model.py"
    text = model.read_text()
    model.write_text(text.replace('"""The ParaFormer model:', '"""The ParaFormer model, reworded:')
                     + "\n# a comment\n")
    analysis = package_copy / "experiments" / "stats.py"
    analysis.write_text(analysis.read_text() + "\nANSWER = 42\n")  # not training code
    assert numerics.package_digest(package_copy) == before
    model.write_text(text.replace("std=0.02", "std=0.021"))
    assert numerics.package_digest(package_copy) != before


def test_a_record_is_stale_only_where_its_numbers_are_not_known_to_be_the_running_codes(monkeypatch):
    monkeypatch.setattr(numerics, "_recorded", {"known": {"a": "N1", "b": "N1", "c": "N2"}})
    monkeypatch.setattr(numerics, "_code_digest", "b")
    assert numerics.numbers_of("a") == numerics.numbers_of("b") == "N1"  # a refactor that changed no number
    assert numerics.numbers_of("c") == "N2" and numerics.numbers_of("x") == "code:x"  # unrecorded code: its own
    assert numerics.numbers_of("x", "N1") == "N1"  # a record that carries its numbers says so itself


def test_a_record_of_the_running_code_stays_current_when_only_the_canary_changed(monkeypatch):
    monkeypatch.setattr(numerics, "_recorded", {"known": {"b": "N2"}})  # the canary gained a run since
    monkeypatch.setattr(numerics, "_code_digest", "b")
    assert not numerics.is_stale(SimpleNamespace(code_digest="b", numerics="N1"))
    assert numerics.is_stale(SimpleNamespace(code_digest="a", numerics="N1"))
