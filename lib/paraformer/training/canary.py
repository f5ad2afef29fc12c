"""The numerics canary: tiny fixed runs of every training method, solver and execution path, hashed
(docs/run-cache.md#stale-runs-and-make-numerics; `paraformer.training.numerics` says what the digests decide).

Each run (`_runs`, `single_process_digests`, `_schemes`) trains a few steps on synthetic 16 px images through
`train()` into a temporary folder, and an ImageFolder of PNG files is read back through `load_data`; a digest
hashes the per-epoch numbers, final accuracies and predictions and the exact bytes of the final weights. One
thread, so that the digests do not depend on how a machine splits its sums over cores; torch.compile is left
out (it needs a compiler, and its kernels are torch's, not this code's).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..core.config import DataConfig, ModelConfig, Recipe
from ..core.data import ImageData, load_data
from ..core.runcache import Initialization, load_trained_model
from .trainer import train

THREADS = 1  # see the module docstring
IMAGE_SIZE, CLASSES = 16, 4
SMALL = dict(image_size=IMAGE_SIZE, patch_size=4, width=16, num_heads=2, mlp_ratio=2.0, num_classes=CLASSES)
BASE_RECIPE = Recipe(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.5, augment=("flip", "crop"), seed=1)
VIT = ModelConfig(branch_depth=4, num_layers=4, step=1 / 4, **SMALL)


def toy_images(n: int, seed: int, classes: tuple[int, ...] = tuple(range(CLASSES))):
    """`n` 16 px RGB images whose class is which halves are bright (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([classes[i % len(classes)] for i in range(n)])
    images = torch.randint(0, 60, (n, 3, IMAGE_SIZE, IMAGE_SIZE), generator=g, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        if label in (0, 2):
            images[i, :, :IMAGE_SIZE // 2] += 150
        if label in (1, 2):
            images[i, :, IMAGE_SIZE // 2:] += 150
    return images, labels


def toy_data(classes: tuple[int, ...] = tuple(range(CLASSES)), seed: int = 0) -> ImageData:
    train_images, train_labels = toy_images(64, seed, classes)
    val_images, val_labels = toy_images(16, seed + 1, classes)
    test_images, test_labels = toy_images(32, seed + 2, classes)
    return ImageData(name="canary", train_images=train_images, train_labels=train_labels, val_images=val_images,
                     val_labels=val_labels, test_images=test_images, test_labels=test_labels,
                     classes=["top", "bottom", "both", "neither"], mean=(0.3, 0.3, 0.3), std=(0.3, 0.3, 0.3),
                     source="synthetic")


DATA = DataConfig(dataset="canary", n_test_per_epoch=16)


def _runs() -> list[tuple[str, ModelConfig, Recipe, dict]]:
    para, vit = ModelConfig(branch_depth=1, num_layers=3, dropout=0.1, **SMALL), VIT
    mgrit = replace(BASE_RECIPE, solver="mgrit", mgrit_coarsening=2, augment=())
    return [
        ("joint", para, BASE_RECIPE, {}),
        # the authors' method and residual under torchvision's RandAugment and our data pipeline
        ("authors", replace(para, residual="authors"),
         Recipe.authors(2, method="authors", batch_size=16, randaugment_magnitude=9, seed=2, randaugment="torchvision",
                        augment=("randaugment", "crop", "flip"), crop_padding=None, normalization="dataset",
                        amp_dtype="bfloat16"), {}),
        # their whole recipe and model: their RandAugment on the 16 px images, then the resize to 32 px
        ("authors-exact", replace(para, image_size=2 * IMAGE_SIZE, patch_size=8).as_authors(),
         Recipe.authors(2, method="authors", batch_size=16, seed=2), {}),
        ("prefix", para, replace(BASE_RECIPE, method="prefix", prefix_weights=(1.0, 2.0, 3.0), optimizer="sgd",
                                 lr=0.05, schedule="constant", grad_clip=0.5, label_smoothing=0.0), {}),
        ("frozen", para.with_branches(2), replace(BASE_RECIPE, method="frozen", optimizer="adam",
                                                          epochs=1), {}),
        ("vit-step", vit, replace(BASE_RECIPE, augment=()), {}),
        ("mgrit-fixed", vit, replace(mgrit, mgrit_iterations=(1, 1)), {}),
        ("mgrit-adaptive", replace(vit, branch_depth=8, num_layers=8, step=1 / 8),
         replace(mgrit, mgrit_iterations=(0, 0), mgrit_check_every=2, mgrit_tolerance=1e-3), {}),
    ]


def _digest(record, runs: Path) -> str:
    """The digest (module docstring) of a run trained into `runs`; its times are left out."""
    weights = load_trained_model(record, runs).state_dict()
    h = hashlib.sha256()
    history = [{k: v for k, v in entry.items() if "seconds" not in k} for entry in record.history]
    numbers = {"history": history, "final_test_acc": record.final_test_acc,
               "final_prefix_test_acc": record.final_prefix_test_acc, "final_val_acc": record.final_val_acc,
               "test_predictions": record.test_predictions, "num_params": record.num_params}
    h.update(json.dumps(numbers, sort_keys=True).encode())
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _data_digest(folder: Path) -> str:
    """An ImageFolder of PNG images written here and read back through `load_data`: decoding, subsets, statistics."""
    from PIL import Image

    images, labels = toy_images(48, seed=5)
    for split, rows in (("train", range(0, 36)), ("test", range(36, 48))):
        for i in rows:
            path = folder / "images" / split / f"class{int(labels[i])}" / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(path)
    data = load_data(DataConfig(dataset=str(folder / "images"), n_train=30, n_test=8, val_fraction=0.2,
                                subset_seed=3))
    h = hashlib.sha256()
    for tensor in (data.train_images, data.train_labels, data.val_images, data.val_labels, data.test_images,
                   data.test_labels):
        h.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
        h.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([data.mean, data.std, data.classes]).encode())
    return h.hexdigest()[:16]


def single_process_digests(folder: Path) -> dict[str, str]:
    """The digests of the data and of every run in one process, trained into `folder`."""
    digests, runs, results, data = {"data": _data_digest(folder)}, folder / "runs", {}, toy_data()
    for name, model, recipe, keywords in _runs():
        results[name] = train(model, DATA, recipe, name=name, data=data, results_root=runs, progress=False, **keywords)
        digests[name] = _digest(results[name], runs)
    # a model grown from a two-class one (class-incremental: two new classes, only the new branch learns), and a
    # fine-tune that starts from the joint run's weights with a new head
    parent_model = ModelConfig(branch_depth=1, num_layers=2, **{**SMALL, "num_classes": 2})
    parent = train(parent_model, replace(DATA, classes=(0, 1)), BASE_RECIPE, name="task1",
                   data=toy_data(classes=(0, 1)), results_root=runs, progress=False)
    child = train(parent_model.expanded(1, 2), replace(DATA, classes=(2, 3)),
                  replace(BASE_RECIPE, freeze_inherited=True), name="task2", data=toy_data(classes=(2, 3)),
                  parent=parent, results_root=runs, progress=False)
    digests["expand"] = _digest(child, runs)
    weights = {k: v for k, v in load_trained_model(results["joint"], runs).state_dict().items()
               if not k.startswith("head.")}
    tuned = train(_runs()[0][1], DATA, replace(BASE_RECIPE, optimizer="sgd", lr=0.01, grad_clip=1.0),
                  name="finetune", data=toy_data(seed=7), init=Initialization("the joint run", weights),
                  results_root=runs, progress=False)
    digests["finetune"] = _digest(tuned, runs)
    return digests


# --- across processes ---------------------------------------------------------------------------------------

WORLD = 2


def _schemes() -> dict[str, tuple[ModelConfig, Recipe]]:
    return {
        "data": (ModelConfig(branch_depth=2, num_layers=2, **SMALL), replace(BASE_RECIPE, parallel="data",
                                                                             processes=WORLD)),
        "branch": (ModelConfig(branch_depth=1, num_layers=2, dropout=0.1, **SMALL),
                   replace(BASE_RECIPE, parallel="branch", processes=WORLD)),
        "layer": (VIT, replace(BASE_RECIPE, parallel="layer", processes=WORLD, solver="mgrit", mgrit_coarsening=2,
                               augment=(), mgrit_iterations=(0, 0), mgrit_check_every=2, mgrit_tolerance=1e-3)),
    }


def _worker(rank: int, port: int, folder: str) -> None:
    """One rank of the multi-process runs, joining the group as under torchrun; rank 0 writes the digests."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(THREADS)
    data = toy_data()
    try:
        for scheme, (model, recipe) in _schemes().items():
            result = train(model, DATA, recipe, name=f"processes-{scheme}", data=data,
                           results_root=Path(folder) / "runs", progress=False)
            if rank == 0:
                (Path(folder) / f"{scheme}.digest").write_text(_digest(result, Path(folder) / "runs"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def multi_process_digests(folder: Path) -> dict[str, str]:
    """The digests of data, branch and layer parallelism on two gloo processes, trained into `folder`."""
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(folder)), nprocs=WORLD, join=True)
    return {f"processes-{scheme}": (folder / f"{scheme}.digest").read_text() for scheme in _schemes()}


@contextmanager
def one_thread():
    """Torch on `THREADS` thread(s) inside, as it was after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_canary() -> dict[str, str]:
    """Every run's digest (name -> digest), trained in a temporary folder on one thread (about 10 s on 2 cores)."""
    with one_thread(), tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        digests = single_process_digests(Path(folder))
        digests.update(multi_process_digests(Path(folder)))
    return digests


def overall(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]

