"""tools/lab_check.py's verdict on what it measured in the browser (the browser itself is not in `make test`:
a fresh machine has none). Each rule below turns one measurement into one problem a reader would trip over."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("lab_check", Path(__file__).resolve().parents[1] / "tools" / "lab_check.py")
lab_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lab_check)

CLEAN_NOTEBOOK = {"check": "notebook", "dirty": 0, "file_unchanged": True, "too_wide": [], "verdict_line_bottom": 620,
                  "screen": 960, "widget_errors": 0}


def test_a_notebook_whose_first_verdict_line_is_on_the_first_screen_has_no_problem():
    assert lab_check.problems(CLEAN_NOTEBOOK) == []


def test_a_first_verdict_line_that_ends_at_the_screen_s_edge_is_on_the_first_screen():
    assert lab_check.problems({**CLEAN_NOTEBOOK, "verdict_line_bottom": 960}) == []


@pytest.mark.parametrize("bottom", [961, 2400, None])
def test_a_first_verdict_line_cut_by_the_screen_s_edge_below_it_or_absent_is_a_problem(bottom):
    assert len(lab_check.problems({**CLEAN_NOTEBOOK, "verdict_line_bottom": bottom})) == 1


@pytest.mark.parametrize("change", [{"dirty": 1}, {"file_unchanged": False}, {"widget_errors": 4},
                                    {"too_wide": [{"first": "model acc", "width": 1300, "room": 1000}]}])
def test_a_modified_notebook_a_widget_error_or_a_table_too_wide_is_a_problem(change):
    assert len(lab_check.problems({**CLEAN_NOTEBOOK, **change})) == 1


def test_a_wrapped_ours_cell_is_a_problem_each_and_a_report_without_ours_cells_is_one_too():
    report = {"check": "report", "cells": 18, "wrapped": []}
    assert lab_check.problems(report) == []
    wrapped = [{"column": "cpu: ours", "text": "+3.45 points [-7.39, 14.29]", "lines": 2}] * 2
    assert len(lab_check.problems({**report, "wrapped": wrapped})) == 2
    assert len(lab_check.problems({**report, "cells": 0})) == 1


def test_a_run_all_that_raised_left_cells_unrun_or_changed_git_status_is_a_problem_each():
    run = {"check": "run-all", "errors": [], "unexecuted": 0, "widget_errors": 0,
           "git_status_before": ["?? scratch.txt"], "git_status_after": ["?? scratch.txt"]}
    assert lab_check.problems(run) == []
    assert len(lab_check.problems({**run, "errors": ["ValueError: bad"]})) == 1
    assert len(lab_check.problems({**run, "unexecuted": 3})) == 1
    assert len(lab_check.problems({**run, "timed_out": True, "run_s": 900.4})) == 1
    dirty = lab_check.problems({**run, "git_status_after": ["?? scratch.txt", " M notebooks/01_layer_sweep.ipynb"]})
    assert dirty == ["git status changed: [' M notebooks/01_layer_sweep.ipynb']"]
