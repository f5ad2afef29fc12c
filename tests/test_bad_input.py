"""Bad input and small data (issue 30): each case is refused in one line naming the value and the fix, or handled
explicitly and said, never a silent wrong number."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import paraformer.core.paths as paths
import paraformer.tools.train as cli
from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.data import load_data
from paraformer.core.datasources import DataIntegrityError
from paraformer.core.runcache import RunCacheError, load_runs, run_paths
from paraformer.experiments.stats import wilson_interval
from paraformer.training import train
from paraformer.training.numerics import stale_records

from .test_data import png, write_folder
from .test_train import DATA, MODEL, RECIPE, toy_data


def mirrored_folder(root: Path, per_class=(40, 20), size=8, seed=0) -> Path:
    """Two classes that are mirror images of each other: a bright bar at the left or at the right edge of an 8-px
    greyscale image, over noise. Told apart by position alone, so a horizontal flip makes them one class."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in zip(("train", "test"), per_class):
        for k in range(n):
            pixels = rng.integers(0, 80, (size, size), dtype=np.uint8)
            left = pixels.copy()
            left[:, :2] = 220
            files[f"{split}/left/{k:03d}.png"] = png(left)
            files[f"{split}/right/{k:03d}.png"] = png(np.ascontiguousarray(left[:, ::-1]))
    return write_folder(root, files)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


SMALL = ModelConfig(image_size=8, patch_size=4, in_channels=1, num_classes=2, width=16, num_heads=2, mlp_ratio=2.0,
                    branch_depth=1, num_layers=1, dropout=0.0)


# --- data --------------------------------------------------------------------------------------------------

def test_a_hidden_folder_under_train_is_skipped_not_made_a_class_and_the_source_says_so(tmp_path, data_dir):
    root = mirrored_folder(tmp_path / "mirror", per_class=(4, 2))
    write_folder(root, {"train/.ipynb_checkpoints/left-checkpoint.png": png(np.zeros((8, 8), np.uint8)),
                        "train/left/.hidden.png": png(np.zeros((8, 8), np.uint8))})
    data = load_data(DataConfig(dataset=str(root)))
    assert data.classes == ["left", "right"] and len(data.train_labels) == 8
    assert "train/.ipynb_checkpoints/left-checkpoint.png" in data.source  # the first skipped, named


def test_a_one_class_image_folder_is_refused_rather_than_scored_100_percent(tmp_path, data_dir):
    root = write_folder(tmp_path / "one", {f"{split}/only/{k}.png": png(np.full((8, 8), k, np.uint8))
                                           for split in ("train", "test") for k in range(3)})
    with pytest.raises(DataIntegrityError) as caught:
        load_data(DataConfig(dataset=str(root)))
    assert (caught.value.problem, caught.value.details["found"]) == ("classes", 1)


def test_a_subset_that_leaves_a_class_without_a_training_image_is_refused(tmp_path, data_dir):
    root = mirrored_folder(tmp_path / "mirror", per_class=(4, 2))
    assert len(load_data(DataConfig(dataset=str(root), n_train=2)).train_labels.unique()) == 2  # one of each
    with pytest.raises(ConfigError, match=r"DataConfig.n_train=1 leaves 1 of 2 classes"):
        load_data(DataConfig(dataset=str(root), n_train=1))
    with pytest.raises(ConfigError, match=r"n_train=2 leaves"):  # the validation split takes one of the two
        load_data(DataConfig(dataset=str(root), n_train=2, val_fraction=0.5))


def test_the_accuracy_of_a_tiny_test_set_comes_with_an_honest_interval():
    low, high = wilson_interval(0, 3)
    assert low == 0.0 and 56.1 < high < 56.2  # 0 of 3 right: anything up to 56% is plausible
    low, high = wilson_interval(8860, 10000)
    assert 87.9 < low < 88.0 and 89.2 < high < 89.3
    assert wilson_interval(3, 3)[1] == 100.0
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_the_default_recipe_does_not_flip_so_mirror_image_classes_stay_apart(tmp_path, data_dir):
    root = mirrored_folder(tmp_path / "mirror")
    config, recipe = DataConfig(dataset=str(root)), Recipe(epochs=6, batch_size=16, lr=3e-3, warmup_epochs=0.5)
    assert recipe.augment == ()
    plain = train(SMALL, config, recipe, results_root=tmp_path / "results", progress=False)
    flipped = train(SMALL, config, Recipe(**{**recipe.__dict__, "augment": ("flip",)}),
                    results_root=tmp_path / "results", progress=False)
    assert plain.final_test_acc >= 95.0 and flipped.final_test_acc <= 75.0


# --- records ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("final_test_acc", "ninety"), ("final_test_acc", 190.0),
                                          ("num_params", 1.5), ("history", {"epoch": 1})])
def test_a_hand_edited_record_is_refused_by_load_runs_naming_its_file(tmp_path, field, value):
    result = train(MODEL, DATA, Recipe(**{**RECIPE.__dict__, "epochs": 1}), data=toy_data(), results_root=tmp_path,
                   progress=False)
    record = run_paths(result.name, result.key, tmp_path)[0]
    values = json.loads(record.read_text())
    assert len(load_runs(tmp_path)) == 1
    record.write_text(json.dumps({**values, field: value}))
    with pytest.raises(RunCacheError) as caught:
        load_runs(tmp_path)
    assert caught.value.path == record
    stale, damaged, total = stale_records(tmp_path)  # what make reproduce reports last: damaged, not stale
    assert (stale, [error.path for error in damaged], total) == ([], [record], 1)


# --- recipes --------------------------------------------------------------------------------------------

def test_a_warmup_longer_than_the_run_and_a_seed_torch_cannot_take_are_refused():
    assert Recipe(epochs=2, warmup_epochs=2).warmup_epochs == 2
    with pytest.raises(ConfigError, match=r"warmup_epochs=10 exceeds epochs=2"):
        Recipe(epochs=2, warmup_epochs=10)
    assert Recipe(seed=2 ** 63 - 1).seed == 2 ** 63 - 1
    for seed in (2 ** 63, -1):
        with pytest.raises(ConfigError, match=rf"Recipe.seed={seed} is out of range"):
            Recipe(seed=seed)


# --- the command line ------------------------------------------------------------------------------------

def run_cli(args, capsys):
    try:
        code = cli.main(args)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


CI_RUN = ["--profile", "ci", "--model", "1-2", "--dataset", "fashion_mnist", "--epochs", "1"]


@pytest.mark.parametrize("extra, value", [(["--log-every", "0"], "--log-every 0"),
                                          (["--seed", "99999999999999999999999"], "99999999999999999999999"),
                                          (["--n-train", "none"], "'none'"), (["--n-test", "0"], "0 images")])
def test_bad_numbers_are_one_line_with_exit_code_2_before_any_data_is_read(extra, value, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    monkeypatch.setattr(cli, "load_data", lambda config: pytest.fail("data read before the arguments were checked"))
    code, _, err = run_cli(CI_RUN + extra, capsys)
    assert code == 2 and len(err) == 1 and value in err[0]


def test_an_unwritable_results_folder_and_ctrl_c_end_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path / "file"))
    code, _, err = run_cli(CI_RUN + ["--n-train", "64", "--n-test", "40"], capsys)
    assert code == 2 and len(err) == 1 and str(tmp_path / "file") in err[0]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(cli, "train", interrupted)
    code, _, err = run_cli(CI_RUN + ["--n-train", "64", "--n-test", "40"], capsys)
    assert code == 130 and len(err) == 1


def test_small_images_of_your_own_train_from_the_command_line_into_a_folder_of_their_own(
        tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.delenv("PARAFORMER_RESULTS", raising=False)
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path / "checkout")
    root = mirrored_folder(tmp_path / "mirror", per_class=(8, 4))
    args = ["--profile", "ci", "--model", "1-2", "--dataset", str(root), "--epochs", "1", "--n-train", "all",
            "--n-test", "all"]
    code, _, err = run_cli(args, capsys)  # ci's patch sizes are for 28 and 32 px
    assert code == 2 and len(err) == 1 and "--patch-size" in err[0]
    code, out, _ = run_cli(args + ["--patch-size", "2", "--width", "16", "--heads", "2"], capsys)
    assert code == 0
    (record,) = (tmp_path / "checkout" / "own-results" / "ci" / "runs").glob("*.json")
    config = json.loads(record.read_text())["config"]
    assert (config["model"]["patch_size"], config["model"]["width"], config["model"]["num_heads"]) == (2, 16, 2)
    assert (config["data"]["n_train"], config["data"]["n_test"]) == (None, None)
    assert not (tmp_path / "checkout" / "results").exists()  # the committed results hold the notebooks' runs only


def test_a_registry_name_shadowing_a_local_folder_is_named_in_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path / "results"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fashion_mnist").mkdir()
    code, _, err = run_cli(CI_RUN + ["--n-train", "99999999"], capsys)  # stops at the data, after the note
    assert code == 2 and len(err) == 2
    assert err[0].startswith("note:") and os.path.join(".", "fashion_mnist") in err[0]


def test_a_benchmark_of_zero_processes_is_one_line_before_anything_is_measured(capsys, monkeypatch):
    from paraformer.bench import speed
    from paraformer.tools import bench

    monkeypatch.setattr(speed, "run", lambda *args, **kwargs: pytest.fail("measured before the arguments were checked"))
    with pytest.raises(SystemExit) as caught:
        bench.main(["--profile", "ci", "--processes", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert caught.value.code == 2 and len(err) == 1 and "'0'" in err[0]
