"""The linear baseline: a logistic regression on the raw pixels of exactly the images a profile's runs train and
test on, cached like a run.

A Transformer that a linear model matches has not learned what the papers' models did: every accuracy table shows
this baseline beside the models, and `regime.under_trained` judges a claim's arms against it. It is a multinomial
logistic regression on the flattened pixels (each standardized by the training images' mean and spread), fitted by
full-batch L-BFGS in float64 on one thread, so that it is deterministic and needs no new dependency. Its L2
strength is chosen on the runs' validation split where they hold one out, else on a class-stratified fifth of the
training images held out for the choice and then refitted on all of them; never on the test images. A fixed L2
would favour one data size: at 2,500 CIFAR-10 images a weak one overfits by several points.

The record goes to `<results>/baselines/<dataset>-linear-<key>.json`: the key hashes the data config, the data's
fingerprint and the fit's settings, so that a second call reads it back and a change of any of them fits anew.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core.config import DataConfig
from ..core.data import ImageData, data_fingerprint, load_data
from ..core.files import atomic_write_json

VERSION = 2  # of the fit below: a change of what it computes changes every key
L2_GRID = (10.0, 1.0, 0.1, 1e-2, 1e-3, 1e-4)  # candidates, strongest first (ties go to the stronger)
HOLDOUT_FRACTION = 0.2  # of each class's training images, to choose L2 where the runs hold out no validation split
ITERATIONS = 200  # L-BFGS iterations (each one loss and gradient over all training images)


@dataclass(frozen=True)
class LinearBaseline:
    """A fitted baseline: its accuracy on every test image, and how it was made."""

    dataset: str
    accuracy: float  # on every test image (points)
    correct: np.ndarray  # per test image, in the data's order (bool)
    val_accuracy: float | None  # on the validation split, where there is one (points)
    l2: float  # the L2 strength used
    train_images: int
    test_images: int
    seconds: float  # of the fit that made the record
    key: str
    torch_version: str

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson's 95% interval of the accuracy over the test images (the fit itself is deterministic)."""
        n, p = self.test_images, self.accuracy / 100
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return 100 * (centre - half) / (1 + z * z / n), 100 * (centre + half) / (1 + z * z / n)


def _features(images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
    x = images.reshape(len(images), -1).to(torch.float64) / 255.0
    if mean is None:
        mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-3)  # constant pixels (borders) stay at zero
    return (x - mean) / std, mean, std


def fit_linear(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, l2: float,
               iterations: int = ITERATIONS) -> torch.nn.Linear:
    """Multinomial logistic regression on features `train_x` (N, D): mean cross-entropy plus `l2` x squared weights,
    minimized by full-batch L-BFGS from zero weights (deterministic)."""
    model = torch.nn.Linear(train_x.shape[1], num_classes, dtype=torch.float64)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(train_x), train_y) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def _predict(model: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def baseline_key(data: DataConfig, fingerprint: str) -> str:
    settings = {"data": asdict(data), "fingerprint": fingerprint, "version": VERSION, "l2_grid": L2_GRID,
                "holdout_fraction": HOLDOUT_FRACTION, "iterations": ITERATIONS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_path(folder: Path, data: DataConfig, key: str) -> Path:
    return Path(folder) / "baselines" / f"{data.dataset}-linear-{key}.json"


def stratified_holdout(labels: torch.Tensor, fraction: float = HOLDOUT_FRACTION) -> torch.Tensor:
    """A boolean mask holding out the first `fraction` (rounded, at least one) of each class's images in their
    order; deterministic, and a class with a single image keeps it for fitting."""
    held = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        where = (labels == label).nonzero().flatten()
        if len(where) > 1:
            held[where[:max(1, round(fraction * len(where)))]] = True
    return held


def choose_l2(fit_x, fit_y, choose_x, choose_y, num_classes: int) -> tuple[float, float]:
    """The L2 of `L2_GRID` with the best accuracy on the choice images, and that accuracy (points)."""
    scores = {}
    for candidate in L2_GRID:
        model = fit_linear(fit_x, fit_y, num_classes, candidate)
        scores[candidate] = float((_predict(model, choose_x) == choose_y).double().mean()) * 100
    l2 = max(L2_GRID, key=lambda c: (scores[c], c))  # ties: the stronger regularization
    return l2, scores[l2]


def fit_baseline(images: ImageData, key: str) -> LinearBaseline:
    """Fit on `images`' training split (L2 chosen on its validation split, or on a held-out fifth of the training
    images) and score every test image."""
    start = time.perf_counter()
    train_x, mean, std = _features(images.train_images)
    test_x = _features(images.test_images, mean, std)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a sum's order depends on the thread count: one thread gives one answer everywhere
    try:
        if len(images.val_labels):
            val_x = _features(images.val_images, mean, std)[0]
            l2, val_accuracy = choose_l2(train_x, images.train_labels, val_x, images.val_labels, images.num_classes)
        else:
            held = stratified_holdout(images.train_labels)
            l2, _ = choose_l2(train_x[~held], images.train_labels[~held], train_x[held], images.train_labels[held],
                              images.num_classes)
            val_accuracy = None
        model = fit_linear(train_x, images.train_labels, images.num_classes, l2)
        correct = (_predict(model, test_x) == images.test_labels).numpy()
    finally:
        torch.set_num_threads(threads)
    return LinearBaseline(images.name, 100.0 * float(correct.mean()), correct, val_accuracy, l2,
                          len(images.train_labels), len(images.test_labels), time.perf_counter() - start, key,
                          torch.__version__)


def _to_record(baseline: LinearBaseline) -> dict:
    record = asdict(baseline)
    record["correct"] = "".join("1" if c else "0" for c in baseline.correct)
    return record


def read_baseline(path: Path) -> LinearBaseline:
    """A cached baseline; a damaged record is refused in one line naming the file."""
    try:
        record = json.loads(Path(path).read_text())
        correct = np.array([c == "1" for c in record["correct"]], dtype=bool)
        if set(record["correct"]) - {"0", "1"} or len(correct) != record["test_images"]:
            raise ValueError("per-image correctness does not match test_images")
        baseline = LinearBaseline(**{**record, "correct": correct})
        if not all(isinstance(getattr(baseline, f), (int, float)) for f in ("accuracy", "l2", "seconds")):
            raise ValueError("accuracy, l2 and seconds must be numbers")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a usable linear-baseline record ({error}); delete it to fit again") from None
    return baseline


def linear_baseline(data: DataConfig, folder: Path) -> LinearBaseline:
    """The baseline for the runs on `data` (their exact images and split), from the cache under `folder` or fitted
    and cached there."""
    fingerprint = data_fingerprint(data)
    key = baseline_key(data, fingerprint)
    path = record_path(folder, data, key)
    if path.is_file():
        return read_baseline(path)
    baseline = fit_baseline(load_data(data), key)
    atomic_write_json(_to_record(baseline), path)
    return baseline


def linear_rows(datas: list[DataConfig], folder: Path) -> pd.DataFrame:
    """One row per data config: the baseline's accuracy with its 95% (Wilson) interval over the test images."""
    rows = []
    for data in dict.fromkeys(datas):
        baseline = linear_baseline(data, folder)
        low, high = baseline.interval()
        rows.append({"dataset": data.dataset, "linear_acc": baseline.accuracy, "linear_acc_low": low,
                     "linear_acc_high": high, "l2": baseline.l2, "train_images": baseline.train_images,
                     "test_images": baseline.test_images})
    return pd.DataFrame(rows)


def with_linear(table: pd.DataFrame, linear: dict[str, float]) -> pd.DataFrame:
    """An accuracy table with the linear baseline of its row's dataset beside ours (`linear_acc`, points)."""
    return table.assign(linear_acc=table["dataset"].map(linear))


def linear_accuracies(datas: list[DataConfig], folder: Path) -> dict[str, float]:
    """dataset -> the baseline's accuracy (points), as `accuracy.judge_claims` takes it."""
    return {data.dataset: linear_baseline(data, folder).accuracy for data in dict.fromkeys(datas)}
