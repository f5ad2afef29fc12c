"""What decides whether a finished run is still this code's (paraformer.training.numerics): numerics.json describes
the code as it is, the canary computes the numbers it records, a changed number changes the canary, and the code
digest follows the code but not its comments or docstrings."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from paraformer.core import progressive
from paraformer.training import canary, numerics


def test_numerics_json_records_this_code():
    recorded = numerics.recorded()
    assert recorded["code_digest"] == numerics.code_digest(), (
        "the training code changed since numerics.json was made: run `make numerics`, which says whether the "
        "change altered a number (then the committed runs are stale)")
    assert numerics.current_numerics() != ""
    last = [entry for entry in recorded["kinds"].values() if entry["last"] == recorded["code_digest"]]
    assert last and all(entry["canaries"][entry["last"]] == canary.overall(entry["runs"]) for entry in last)


@pytest.fixture(scope="module")
def digests() -> dict[str, str]:
    return canary.run_canary()


def test_the_canary_computes_the_recorded_numbers(digests):
    kind = numerics.machine_kind()
    expected = numerics.expected_canary(kind)
    if expected is None:
        pytest.skip(f"numerics.json has no canary of these numbers measured on {kind} (float rounding differs between "
                    "kinds of CPU and torch versions): `make numerics` on such a machine records one")
    changed = {name: (expected[1].get(name), digest) for name, digest in digests.items()
               if expected[1] and expected[1].get(name) != digest}
    assert (canary.overall(digests), changed) == (expected[0], {}), (
        "these runs compute other numbers than numerics.json records; if that is meant, `make numerics` records "
        "them (and the committed runs become stale)")


def test_the_canary_covers_every_method_solver_and_execution_path(digests):
    assert sorted(digests) == sorted(["data", "joint", "authors", "authors-exact", "prefix", "frozen", "vit-step", "mgrit-fixed",
                                      "mgrit-adaptive", "expand", "finetune", "processes-data", "processes-branch",
                                      "processes-layer"])
    assert len(set(digests.values())) == len(digests)  # every run computes something of its own


def test_a_changed_number_in_training_changes_the_canary(digests, tmp_path, monkeypatch):
    monkeypatch.setattr(progressive, "AUTHORS_PREFIX_CLIP", 0.5)  # the authors' method clips its prefix steps at 1.0
    with torch.random.fork_rng(), canary.one_thread():
        changed = canary.single_process_digests(tmp_path)
    assert [name for name in changed if changed[name] != digests[name]] == ["authors", "authors-exact"]


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


@pytest.fixture
def empty_record(tmp_path, monkeypatch):
    """numerics.json in a temporary folder, empty, and a way to pretend the running code is `code`."""
    monkeypatch.setattr(numerics, "NUMERICS_FILE", tmp_path / "numerics.json")
    monkeypatch.setattr(numerics, "_recorded", None)

    def running(code: str) -> None:
        monkeypatch.setattr(numerics, "_code_digest", code)
    return running


def test_code_measured_like_earlier_code_on_the_same_kind_computes_its_numbers(empty_record):
    empty_record("a")
    numerics.record({}, "amd-1", "AMD")
    empty_record("b")  # a refactor: same canary on the same kind
    numerics.record({}, "amd-1", "AMD")
    empty_record("c")  # a changed number
    known = numerics.record({}, "amd-2", "AMD")["known"]
    assert known == {"a": "amd-1", "b": "amd-1", "c": "amd-2"}


def test_canaries_of_different_kinds_are_never_compared_with_each_other(empty_record):
    empty_record("a")
    numerics.record({}, "amd-1", "AMD")
    known = numerics.record({}, "intel-1", "Intel")["known"]  # the same code, first measured on another kind
    assert known == {"a": "amd-1"}
    empty_record("b")  # new code first measured on Intel, where it computes what a computed there
    assert numerics.record({}, "intel-1", "Intel")["known"]["b"] == "amd-1"


def test_a_claim_made_on_one_kind_is_checked_on_another_and_a_change_there_wins(empty_record):
    empty_record("a")
    numerics.record({"run": "x"}, "amd-1", "AMD")
    numerics.record({"run": "y"}, "intel-1", "Intel")
    empty_record("b")
    numerics.record({"run": "x"}, "amd-1", "AMD")  # measured on AMD only: same numbers as a
    assert numerics.expected_canary("Intel") == ("intel-1", {"run": "y"})  # what b must compute there
    assert numerics.expected_canary("ARM") is None
    known = numerics.record({"run": "z"}, "intel-2", "Intel")["known"]  # Intel disagrees
    assert known["b"] == "intel-2" != known["a"]
    stored = json.loads(numerics.NUMERICS_FILE.read_text())
    assert stored["kinds"]["Intel"]["canaries"] == {"a": "intel-1", "b": "intel-2"}


def test_an_unrecorded_edit_is_compared_with_the_last_code_recorded_on_this_kind(empty_record):
    empty_record("a")
    numerics.record({"run": "x"}, "amd-1", "AMD")
    empty_record("edited")
    assert numerics.current_numerics() == ""
    assert numerics.expected_canary("AMD") == ("amd-1", {"run": "x"})


def test_a_canary_that_only_gains_runs_keeps_the_numbers_of_the_code_before(empty_record):
    """A new recipe gets its own canary run: the runs it adds change the canary digest, but every run the old code
    computed is computed alike, so the finished runs stay current; a changed old run still makes new numbers."""
    empty_record("a")
    numerics.record({"joint": "j1", "authors": "a1"}, "canary-1", "Intel")
    empty_record("b")
    known = numerics.record({"joint": "j1", "authors": "a1", "authors-exact": "e1"}, "canary-2", "Intel")["known"]
    assert known["b"] == known["a"] == "canary-1"
    again = numerics.record({"joint": "j1", "authors": "a1", "authors-exact": "e1"}, "canary-2", "Intel")["known"]
    assert again["b"] == "canary-1"  # recorded twice: a's other canary is of other runs, no contradiction
    empty_record("c")
    known = numerics.record({"joint": "j2", "authors": "a1", "authors-exact": "e1", "new": "n"}, "canary-3",
                            "Intel")["known"]
    assert known["c"] == "canary-3"
