"""Data: image-classification datasets as uint8 tensors, class-stratified subsets, and batch augmentation.

`load_data(DataConfig)` returns an `ImageData` (train / validation / test tensors, normalization constants, a
source line and its fingerprint) for a registry name (`DATASETS`) or an ImageFolder root. A registry dataset is
read from the first source `_locate` finds; its decoded tensors are cached under the source's fingerprint
(`data_fingerprint`) and subsets are drawn from them (docs/data.md). Decoding and the checks that refuse damaged
sources are in `datasources`; the image counts and classes of registry datasets are checked here.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import AUGMENTATIONS, ConfigError, DataConfig
from .datasources import (IDX_FILES, DataIntegrityError, check_classes_present, conversion_note, file_sha256,
                          listing_sha256, read_archive, read_folder, read_idx_dir, to_tensor, verify_checksum)
from .files import atomic_save, remove_orphan_temporaries
from .paths import data_dir, offline_dirs

# --- the registry -----------------------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # from `apt-get install dataset-fashion-mnist`


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    in_channels: int
    image_size: int  # native size, or the square size that variable-size images are fitted to by default
    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    torchvision_class: str  # in torchvision.datasets
    train_kwargs: tuple[tuple[str, object], ...] = (("train", True),)  # split arguments of that class
    test_kwargs: tuple[tuple[str, object], ...] = (("train", False),)
    classes: tuple[str, ...] = ()  # official names, for sources that carry none (idx files)
    idx_dir: str | None = None  # official idx files (train-images-idx3-ubyte.gz, ...), if a package installs them
    # Official split sizes, checked whatever the source, so that a partial copy cannot pass for the dataset;
    # None = not known.
    num_train: int | None = None
    num_test: int | None = None


_SPLIT = (("split", "train"),), (("split", "test"),)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10",
                num_train=50_000, num_test=10_000),
    DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100",
                num_train=50_000, num_test=10_000),
    DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), "FashionMNIST",
                classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"),
                idx_dir=DEBIAN_FASHION_MNIST, num_train=60_000, num_test=10_000),
    DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), "MNIST", num_train=60_000, num_test=10_000),
    DatasetSpec("stl10", 10, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "STL10", *_SPLIT, num_train=5_000, num_test=8_000),
    # Pets and Flowers come in many sizes: they are fitted (shorter side, then center crop) when decoded.
    # Their split sizes are those of the official split files (Pets trainval.txt / test.txt, Flowers setid.mat).
    DatasetSpec("oxford_pets", 37, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "OxfordIIITPet",
                (("split", "trainval"), ("target_types", "category")),
                (("split", "test"), ("target_types", "category")), num_train=3_680, num_test=3_669),
    DatasetSpec("flowers102", 102, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "Flowers102", *_SPLIT,
                num_train=1_020, num_test=6_149),
]}


class DatasetNotFoundError(FileNotFoundError):
    """No cache, offline copy or download provided the dataset; the message lists the ways to provide it."""


# --- what load_data returns -------------------------------------------------------------------------

@dataclass(repr=False)
class ImageData:
    name: str
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor  # int64 (N,)
    val_images: torch.Tensor  # uint8, possibly with N = 0
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]  # index -> class name, in official label order
    mean: tuple[float, ...]  # per-channel normalization in [0, 1] pixel units
    std: tuple[float, ...]
    source: str  # one line: where the pixels came from
    # `data_fingerprint` of the source: what a run key needs to tell apart two copies of "the same" dataset.
    # Empty for an ImageData built by hand rather than by load_data.
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[2]

    def __repr__(self) -> str:  # the default would print every pixel
        return (f"ImageData({self.name!r}: train {len(self.train_labels)}, val {len(self.val_labels)}, "
                f"test {len(self.test_labels)}, {self.num_classes} classes, "
                f"{self.in_channels}x{self.image_size}x{self.image_size}; {self.source})")


def load_data(config: DataConfig) -> ImageData:
    """The images `config` asks for: stratified subsets (drawn with `config.subset_seed`) of the full splits."""
    name, full = _load_full(config)
    # Class-incremental tasks keep some classes; labels keep their numbers, so a task's labels index the
    # outputs of a model that has seen all earlier classes too.
    pools = {split: torch.arange(len(full[f"{split}_labels"])) for split in ("train", "test")}
    if config.classes is not None:
        if max(config.classes) >= len(full["classes"]):
            raise ConfigError(f"DataConfig.classes={config.classes} names a class that {name} lacks; "
                              f"it has classes 0..{len(full['classes']) - 1}")
        wanted = torch.tensor(config.classes)
        pools = {split: torch.nonzero(torch.isin(full[f"{split}_labels"], wanted)).flatten() for split in pools}
    for field, n, split in (("n_train", config.n_train, "train"), ("n_test", config.n_test, "test")):
        available = len(pools[split])
        if n is not None and n > available:
            raise ConfigError(f"DataConfig.{field}={n} exceeds the {available} images of {name}'s {split} split; "
                              f"use at most {available} (None for all; on the command line, all)")
    train_idx = pools["train"][stratified_subset(full["train_labels"][pools["train"]], config.n_train,
                                                 config.subset_seed)]
    n_val = round(config.val_fraction * len(train_idx))
    if n_val >= len(train_idx) and n_val > 0:
        raise ConfigError(f"DataConfig.val_fraction={config.val_fraction} leaves no training images out of "
                          f"{len(train_idx)}; lower it or raise DataConfig.n_train")
    # The validation draw has its own seed, so that it does not repeat the pattern of the subset draw.
    val_seed = int.from_bytes(hashlib.sha256(f"{config.subset_seed}/val".encode()).digest()[:8], "big") >> 1
    val_pos = stratified_subset(full["train_labels"][train_idx], n_val, val_seed)
    is_val = torch.zeros(len(train_idx), dtype=torch.bool)
    is_val[val_pos] = True
    val_idx, train_idx = train_idx[is_val], train_idx[~is_val]
    wanted_classes = config.classes if config.classes is not None else range(len(full["classes"]))
    untrained = sorted(set(wanted_classes) - set(full["train_labels"][train_idx].tolist()))
    if untrained:  # a class no training image shows would only ever be guessed wrong, silently
        shown = ", ".join(str(full["classes"][c]) for c in untrained[:5]) + (", ..." if len(untrained) > 5 else "")
        raise ConfigError(f"DataConfig.n_train={config.n_train} leaves {len(untrained)} of {len(wanted_classes)} "
                          f"classes of {name} without a training image ({shown}); raise n_train to at least one "
                          f"training image per class (after the validation split)")
    test_idx = pools["test"][stratified_subset(full["test_labels"][pools["test"]], config.n_test, config.subset_seed)]
    return ImageData(
        name=name,
        train_images=full["train_images"][train_idx], train_labels=full["train_labels"][train_idx],
        val_images=full["train_images"][val_idx], val_labels=full["train_labels"][val_idx],
        test_images=full["test_images"][test_idx], test_labels=full["test_labels"][test_idx],
        classes=list(full["classes"]), mean=tuple(full["mean"]), std=tuple(full["std"]), source=full["source"],
        fingerprint=full["fingerprint"],
    )


def image_counts(config: DataConfig) -> tuple[int, int, int]:
    """(training, validation, test) images of `config`, from the registry's split sizes: what `load_data` returns,
    without decoding. A class subset keeps its share of each split (the registry's datasets are balanced, or
    nearly); the validation share is rounded as `load_data` rounds it."""
    spec = DATASETS.get(config.dataset)
    if spec is None or spec.num_train is None or spec.num_test is None:
        raise ConfigError(f"cannot count the images of {config.dataset!r} without decoding it: a registry dataset "
                          f"with known split sizes is needed (one of {sorted(DATASETS)})")
    share = len(config.classes) / spec.num_classes if config.classes is not None else 1.0
    n_train = config.n_train if config.n_train is not None else round(spec.num_train * share)
    n_test = config.n_test if config.n_test is not None else round(spec.num_test * share)
    n_val = round(config.val_fraction * n_train)
    return n_train - n_val, n_val, n_test


# --- subsets ----------------------------------------------------------------------------------------

def stratified_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of `n` items, each class getting its share of `n` in proportion to its frequency. Shares
    are rounded by largest remainder (ties broken at random), so they sum to exactly `n`; the items inside each
    class are drawn with a generator seeded by `seed` alone."""
    total = len(labels)
    if n is None:
        return torch.arange(total)
    if not 0 <= n <= total:
        raise ConfigError(f"subset size n={n} is not possible: {total} images are available; use 0..{total}")
    generator = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    # Integer arithmetic: n * count / total as floor + remainder, so ties are exact.
    shares = [n * c // total for c in counts.tolist()]
    remainders = [n * c % total for c in counts.tolist()]
    tie_break = torch.randperm(len(classes), generator=generator).tolist()
    by_remainder = sorted(range(len(classes)), key=lambda k: (-remainders[k], tie_break[k]))
    for k in by_remainder[:n - sum(shares)]:
        shares[k] += 1
    chosen = []
    for cls, share in zip(classes.tolist(), shares):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:share]])
    return torch.cat(chosen).sort().values if chosen else torch.arange(0)


# --- full splits: locate the source, fingerprint it, then its cache or a decode -------------------------
# A "full" is a dict: train_images, train_labels, test_images, test_labels, classes, mean, std, source,
# fingerprint.

CACHE_FORMAT = 2  # bump when the cached layout or the decoding changes


@dataclass(frozen=True)
class _Source:
    """Where a dataset's pixels come from. kind: offline-archive, offline-folder, idx, torchvision (path is
    the download root) or image-folder (a user's ImageFolder root)."""
    kind: str
    path: Path


def data_fingerprint(config: DataConfig) -> str:
    """`<kind>:<id>` of the exact source whose pixels `load_data(config)` returns; torchvision's downloads are named
    by their class (torchvision verifies their md5s itself). Cheap on repeated calls: file hashes are memoized."""
    if config.dataset in DATASETS:
        spec = DATASETS[config.dataset]
        return _fingerprint(_locate(spec), spec)
    return _fingerprint(_Source("image-folder", _image_folder_root(config)))


def _fingerprint(source: _Source, spec: DatasetSpec | None = None) -> str:
    if source.kind == "offline-archive":
        return f"{source.kind}:{file_sha256(source.path)}"
    if source.kind in ("offline-folder", "image-folder"):
        return f"{source.kind}:{listing_sha256(source.path)}"
    if source.kind == "idx":
        files = "".join(file_sha256(source.path / name) for name in IDX_FILES)
        return f"idx:{hashlib.sha256(files.encode()).hexdigest()}"
    return f"torchvision:{spec.torchvision_class}"


def _locate(spec: DatasetSpec) -> _Source:
    """The source a registry dataset is read from; finding it reads no file, so it needs no network."""
    for directory in offline_dirs():
        archive, folder = directory / f"{spec.name}.tar.gz", directory / spec.name
        if archive.is_file():
            return _Source("offline-archive", archive)
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return _Source("offline-folder", folder)
    idx_dir = Path(spec.idx_dir) if spec.idx_dir else None
    if idx_dir is not None and all((idx_dir / f).is_file() for f in IDX_FILES):
        return _Source("idx", idx_dir)
    return _Source("torchvision", data_dir())


def _image_folder_root(config: DataConfig) -> Path:
    root = Path(config.dataset).expanduser()
    if not root.is_dir():
        raise ConfigError(f"DataConfig.dataset={config.dataset!r} is neither a known dataset nor a directory; "
                          f"use one of {sorted(DATASETS)} or the path of an ImageFolder root "
                          f"(with train/ and test/ subfolders)")
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        raise ConfigError(f"DataConfig.dataset={config.dataset!r} is a directory without train/ and test/ "
                          f"subfolders; an ImageFolder root needs <root>/train/<class>/... and <root>/test/<class>/...")
    return root.resolve()


def _load_full(config: DataConfig) -> tuple[str, dict]:
    if config.dataset in DATASETS:
        spec = DATASETS[config.dataset]
        if config.channels not in (None, spec.in_channels):
            raise ConfigError(f"DataConfig.channels={config.channels} does not fit {spec.name}, whose images have "
                              f"{spec.in_channels} channel(s); use None or {spec.in_channels} (the model's "
                              f"in_channels must match too)")
        return spec.name, _load_source(_locate(spec), spec, config.image_size or spec.image_size)
    root = _image_folder_root(config)
    return root.name, _load_source(_Source("image-folder", root), None, config.image_size, config.channels)


def _load_source(source: _Source, spec: DatasetSpec | None, size: int | None, channels: int | None = None) -> dict:
    """The full splits of `source` (of a registry dataset where `spec` is given), from its cache or decoded."""
    if source.kind == "offline-archive":
        verify_checksum(source.path)
    fingerprint = _fingerprint(source, spec)
    cache = _cache_path(spec.name if spec else source.path.name, fingerprint, size, channels)
    full = _read_cache(cache, fingerprint)
    fresh = full is None
    if fresh:
        if source.kind == "offline-archive":
            full = read_archive(source.path, spec.in_channels, size)
        elif source.kind in ("offline-folder", "image-folder"):
            full = read_folder(source.path, spec.in_channels if spec else channels, size)
        elif source.kind == "idx":
            full = read_idx_dir(source.path, list(spec.classes), size)
        else:
            full = _download(spec, size)
        full["fingerprint"] = fingerprint
        full["mean"], full["std"] = (spec.mean, spec.std) if spec else _channel_stats(full["train_images"])
    if spec is not None:  # checked on cached tensors as well (it costs a bincount): a corrected spec is never bypassed
        _check_registry(spec, full, source)
    if fresh:
        _write_cache(cache, full)
    full["source"] = _source_line(source, spec, full)
    return full


_IDX_IMAGES = {"train": IDX_FILES[0], "test": IDX_FILES[2]}
_FIXES = {"offline-archive": "copy it again", "offline-folder": "copy or unpack it again",
          "idx": "install the package again (apt-get install --reinstall)",
          "torchvision": "delete torchvision's files there so that it downloads them again"}


def _check_registry(spec: DatasetSpec, full: dict, source: _Source) -> None:
    if len(full["classes"]) != spec.num_classes:
        raise DataIntegrityError(f"{source.path} has {len(full['classes'])} classes but {spec.name} has "
                                 f"{spec.num_classes}; is it the right dataset? If not, replace it",
                                 source.path, "classes", expected=spec.num_classes, found=len(full["classes"]))
    for split, expected in (("train", spec.num_train), ("test", spec.num_test)):
        found = len(full[f"{split}_labels"])
        if expected is not None and found != expected:
            path = source.path / _IDX_IMAGES[split] if source.kind == "idx" else source.path
            raise DataIntegrityError(f"{path} holds {found} {split} images of {spec.name}, which has {expected}; "
                                     f"the copy is incomplete or not {spec.name}: {_FIXES[source.kind]}", path, "count",
                                     split=split, expected=expected, found=found)
    check_classes_present(full["classes"], {split: full[f"{split}_labels"] for split in ("train", "test")},
                          source.path)


def _source_line(source: _Source, spec: DatasetSpec | None, full: dict) -> str:
    """What the images came from, for records and tables: the kind of source and its file or folder name, never
    the machine's path (which would mark every committed table as changed on another machine). Built at load time
    rather than cached, so that a moved archive (same bytes, same cache) is named as it is now."""
    notes = [note for note in (full.get("formats"), full.get("conversion")) if note]
    detail = f" ({'; '.join(notes)})" if notes else ""
    name = Path(source.path).name
    if source.kind in ("offline-archive", "offline-folder"):
        return f"{source.kind.replace('-', ' ')} {name}{detail}"
    if source.kind == "idx":
        return f"official idx files ({name})"
    if source.kind == "torchvision":
        return f"torchvision {spec.torchvision_class} (official){detail}"
    return f"ImageFolder {name}" + (f" ({full['conversion']})" if full.get("conversion") else "")


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks so that memory stays small."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.double() / 255
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean ** 2).clamp_min(1e-12).sqrt()  # a constant channel must not divide by zero
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(max(v, 1e-3), 4) for v in std.tolist())


def _cache_path(name: str, fingerprint: str, size: int | None, channels: int | None = None) -> Path:
    """`<name>-<kind>-<first 16 of the id>-<size>[-grey|-rgb].pt`: one file per source, size and conversion."""
    kind, _, ident = fingerprint.partition(":")
    converted = {None: "", 1: "-grey", 3: "-rgb"}[channels]
    return data_dir() / "cache" / f"{name}-{kind}-{ident[:16]}-{f'{size}px' if size else 'native'}{converted}.pt"


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        full = torch.load(path, weights_only=True)
        # The name holds only a prefix of the fingerprint; the whole of it must match.
        if full.get("format") == CACHE_FORMAT and full.get("fingerprint") == fingerprint:
            return full
    except Exception as error:  # a cache from another version or a damaged disk: decode again
        warnings.warn(f"ignoring unreadable dataset cache {path} ({error}); decoding again")
    return None


def _write_cache(path: Path, full: dict) -> None:
    """Atomic, so readers never see half a file; a full or read-only disk costs only the cache, not the run."""
    try:
        remove_orphan_temporaries(path.parent)  # what a decode killed while writing its cache left behind
        atomic_save({**{k: v for k, v in full.items() if k != "source"}, "format": CACHE_FORMAT}, path)
    except (OSError, RuntimeError) as error:
        warnings.warn(f"could not write the dataset cache {path} ({error}); using the data uncached")


def _not_found(spec: DatasetSpec, download_error: BaseException | None) -> DatasetNotFoundError:
    name = spec.name
    ways = [f"an offline copy: set PARAFORMER_OFFLINE_DATA (separated by {os.pathsep!r}) to a directory holding "
            f"{name}.tar.gz or an unpacked {name}/train + {name}/test (ImageFolder layout, optional {name}/classes.txt)",
            "or put that archive or folder in ../shared/datasets beside the checkout"]
    if spec.idx_dir:
        ways.append(f"or `apt-get install dataset-fashion-mnist` (official idx files in {spec.idx_dir})")
    ways.append(f"or internet access, so that torchvision downloads {spec.torchvision_class} into {data_dir()}"
                + (f" (it failed: {type(download_error).__name__}: {download_error})" if download_error else ""))
    looked = ", ".join(str(d) for d in offline_dirs())
    return DatasetNotFoundError(f"dataset {name!r} was found nowhere (no cache of torchvision's copy in "
                                f"{data_dir() / 'cache'}, no offline copy in {looked}). Provide it with\n  - "
                                + "\n  - ".join(ways))


def _download(spec: DatasetSpec, size: int) -> dict:
    import torchvision  # only here and for RandAugment: offline copies decode without it (a bare GPU machine)

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    root = data_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        splits = {split: dataset_class(str(root), download=True, **dict(kwargs))
                  for split, kwargs in (("train", spec.train_kwargs), ("test", spec.test_kwargs))}
    except (OSError, RuntimeError) as error:  # offline: URLError (an OSError) or "Dataset not found"
        raise _not_found(spec, error) from error
    full = {"classes": list(getattr(splits["train"], "classes", None) or spec.classes
                            or [str(i) for i in range(spec.num_classes)])}
    converted = total = 0
    for split, dataset in splits.items():
        images, labels = [], []
        for k, (image, label) in enumerate(dataset):
            x, had = to_tensor(image, spec.in_channels, size, root, f"{spec.torchvision_class} {split} image {k}")
            images.append(x)
            labels.append(label)
            converted += had != spec.in_channels
        total += len(images)
        full[f"{split}_images"] = torch.stack(images)
        full[f"{split}_labels"] = torch.tensor(labels, dtype=torch.long)
    full["conversion"] = conversion_note(converted, total, spec.in_channels)
    return full


# --- per-batch transforms on uint8 tensors ------------------------------------------------------------

def normalize(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std per channel, on the images' device. `mean` and `std`
    are sequences, or float32 tensors already on that device (the trainer's, so that no step copies them there)."""
    channels = images_uint8.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalize got {channels}-channel images but mean={tuple(mean)}, std={tuple(std)}; "
                         f"give one value per channel")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    return images_uint8.to(torch.float32).div_(255).sub_(mean).div_(std)


def augment_batch(images_uint8: torch.Tensor, augment: tuple[str, ...], generator: torch.Generator,
                  crop_pad: int | None = None, randaugment_magnitude: int = 9, randaugment: str = "torchvision",
                  size: int | None = None) -> torch.Tensor:
    """Apply the named augmentations in order. Flip, crop and the authors' RandAugment draw only from `generator`
    (reproducible); torchvision's RandAugment (2 operations of `randaugment_magnitude`) from the global torch RNG.
    `crop_pad`: see `random_crop`. "resize" fits the images to `size` (`resize_images`)."""
    unknown = [name for name in augment if name not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; choose from {AUGMENTATIONS}")
    if augment and (images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4):
        raise ValueError(f"augment_batch needs uint8 (N, C, H, W) images, got {images_uint8.dtype} "
                         f"{tuple(images_uint8.shape)}")
    images = images_uint8
    for name in augment:
        if name == "flip":
            images = random_flip(images, generator)
        elif name == "crop":
            images = random_crop(images, generator, crop_pad)
        elif name == "resize":
            images = resize_images(images, size)
        elif randaugment == "authors":
            from .authors_augment import authors_randaugment

            images = authors_randaugment(images, randaugment_magnitude, generator)
        else:
            from torchvision.transforms import v2

            transform = v2.RandAugment(num_ops=2, magnitude=randaugment_magnitude)
            images = torch.stack([transform(image) for image in images]) if len(images) else images
    return images


def resize_images(images_uint8: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 images fitted to `size` x `size` as PIL's Image.resize(BILINEAR) does it (what torchvision's Resize
    does to the authors' PIL images): a horizontal then a vertical pass, each with PIL's bilinear weights in 22-bit
    fixed point and rounded to uint8 in between. Images already of that size (or `size` None) are returned as they
    are."""
    if size is None or tuple(images_uint8.shape[-2:]) == (size, size):
        return images_uint8
    *batch, h, w = images_uint8.shape
    rows, cols = _pil_bilinear_weights(h, size), _pil_bilinear_weights(w, size)
    x = images_uint8.to(torch.float64)  # every product and sum below is an integer under 2^53: exact
    x = _fixed_point_pass(x @ cols.to(x.device).T)  # (..., h, size)
    x = _fixed_point_pass(rows.to(x.device) @ x)  # (..., size, size)
    return x.to(torch.uint8)


_PRECISION_BITS = 22  # PIL's for 8-bit images: 32 - 8 - 2


@functools.lru_cache(maxsize=8)  # one pair of sizes per run: not rebuilt in Python at every minibatch
def _pil_bilinear_weights(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) PIL's resampling coefficients (Resample.c precompute_coeffs with the bilinear filter,
    then normalize_coeffs_8bpc), as integers in float64."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        k = [max(0.0, 1.0 - abs((x - center + 0.5) / filterscale)) for x in range(xmin, xmax)]
        total = sum(k)
        for offset, value in enumerate(k):
            value = value / total if total else value
            weights[xx, xmin + offset] = math.floor(value * (1 << _PRECISION_BITS) + 0.5) if value >= 0 \
                else math.ceil(value * (1 << _PRECISION_BITS) - 0.5)
    return weights


def _fixed_point_pass(accumulated: torch.Tensor) -> torch.Tensor:
    """PIL's clip8: (sum + 2^21) >> 22, clipped to [0, 255]."""
    return torch.floor((accumulated + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS)).clamp_(0, 255)


AUTHORS_MEAN, AUTHORS_STD = 0.5, 0.2  # their data_utils.py normalizes every channel so, whatever the dataset


def normalization(data: "ImageData", how: str = "dataset") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that a run normalizes `data` with (Recipe.normalization)."""
    if how == "authors":
        return (AUTHORS_MEAN,) * data.in_channels, (AUTHORS_STD,) * data.in_channels
    return tuple(data.mean), tuple(data.std)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def crop_padding(image_size: int) -> int:
    """The zero padding of `random_crop`: an eighth of the side and at least one pixel (4 px at 32 and 28, the
    usual CIFAR choice). A fixed 4 px would shift an 8 x 8 digit by half its width, which destroys it."""
    return max(1, round(image_size / 8))


def random_crop(images: torch.Tensor, generator: torch.Generator, pad: int | None = None) -> torch.Tensor:
    """Pad each image with `pad` zero pixels per side (default `crop_padding` of its shorter side) and cut an
    H x W window at a random offset, for the whole batch at once: every output pixel is gathered from its
    image's shifted row and column."""
    n, c, h, w = images.shape
    pad = crop_padding(min(h, w)) if pad is None else pad
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=generator.device).to(images.device)
    rows = dy.view(n, 1, 1, 1) + torch.arange(h, device=images.device).view(1, 1, h, 1)
    cols = dx.view(n, 1, 1, 1) + torch.arange(w, device=images.device).view(1, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]
