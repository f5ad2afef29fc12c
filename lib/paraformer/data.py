"""Data: image-classification datasets as uint8 tensors, class-stratified subsets, and batch augmentation.

`load_data(DataConfig)` returns an `ImageData` (train / validation / test tensors plus normalization
constants and a line saying where the pixels came from). A dataset is a registry name (see `DATASETS`) or
the path of an ImageFolder root (`<root>/train/<class>/<file>`, `<root>/test/<class>/<file>`).

A registry dataset is looked for, in order:
  1. the decoded-tensor cache `data_dir()/cache/<name>-<source>-<size>px.pt` (delete it to decode again);
  2. offline copies, without any configuration: `<name>.tar.gz` or an unpacked `<name>/train` + `<name>/test`
     in each of `offline_dirs()`, then (Fashion-MNIST only) Debian's official idx files;
  3. torchvision's `download=True` into `data_dir()`.
The whole split is decoded once and cached; subsets are drawn from the cached tensors, so a sweep over
subset sizes never decodes twice.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import os
import re
import struct
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.transforms import v2

from .config import AUGMENTATIONS, ConfigError, DataConfig, data_dir, offline_dirs
from .results import atomic_save

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


_SPLIT = (("split", "train"),), (("split", "test"),)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR10"),
    DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "CIFAR100"),
    DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), "FashionMNIST",
                classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"),
                idx_dir=DEBIAN_FASHION_MNIST),
    DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), "MNIST"),
    DatasetSpec("stl10", 10, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "STL10", *_SPLIT),
    # Pets and Flowers come in many sizes: they are fitted (shorter side, then center crop) when decoded.
    DatasetSpec("oxford_pets", 37, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "OxfordIIITPet",
                (("split", "trainval"), ("target_types", "category")),
                (("split", "test"), ("target_types", "category"))),
    DatasetSpec("flowers102", 102, 3, 96, IMAGENET_MEAN, IMAGENET_STD, "Flowers102", *_SPLIT),
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
        num_classes = len(full["classes"])
        if max(config.classes) >= num_classes:
            raise ConfigError(f"DataConfig.classes={config.classes} names a class that {name} lacks; "
                              f"it has classes 0..{num_classes - 1}")
        wanted = torch.tensor(config.classes)
        pools = {split: torch.nonzero(torch.isin(full[f"{split}_labels"], wanted)).flatten() for split in pools}
    for field, n, split in (("n_train", config.n_train, "train"), ("n_test", config.n_test, "test")):
        available = len(pools[split])
        if n is not None and n > available:
            raise ConfigError(f"DataConfig.{field}={n} exceeds the {available} images of {name}'s {split} split; "
                              f"use at most {available} (or None for all)")
    train_idx = pools["train"][stratified_subset(full["train_labels"][pools["train"]], config.n_train,
                                                 config.subset_seed)]
    n_val = round(config.val_fraction * len(train_idx))
    if n_val >= len(train_idx) and n_val > 0:
        raise ConfigError(f"DataConfig.val_fraction={config.val_fraction} leaves no training images out of "
                          f"{len(train_idx)}; lower it or raise DataConfig.n_train")
    # The validation draw has its own seed, so that it does not repeat the pattern of the subset draw.
    val_pos = stratified_subset(full["train_labels"][train_idx], n_val, _derived_seed(config.subset_seed, "val"))
    is_val = torch.zeros(len(train_idx), dtype=torch.bool)
    is_val[val_pos] = True
    val_idx, train_idx = train_idx[is_val], train_idx[~is_val]
    test_idx = pools["test"][stratified_subset(full["test_labels"][pools["test"]], config.n_test, config.subset_seed)]
    return ImageData(
        name=name,
        train_images=full["train_images"][train_idx], train_labels=full["train_labels"][train_idx],
        val_images=full["train_images"][val_idx], val_labels=full["train_labels"][val_idx],
        test_images=full["test_images"][test_idx], test_labels=full["test_labels"][test_idx],
        classes=list(full["classes"]), mean=tuple(full["mean"]), std=tuple(full["std"]), source=full["source"],
    )


def _derived_seed(seed: int, purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "big") >> 1


# --- subsets ----------------------------------------------------------------------------------------

def stratified_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of `n` items, each class getting its share of `n` in proportion to its frequency.

    Shares are rounded by largest remainder (ties broken at random), so they sum to exactly `n`; the items
    inside each class are drawn with a generator seeded by `seed` alone.
    """
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


# --- full splits: cache, then offline copies, then torchvision ---------------------------------------
# A "full" is a dict: train_images, train_labels, test_images, test_labels, classes, mean, std, source.

CACHE_FORMAT = 1  # bump when the cached layout or the decoding changes
_SOURCE_TAGS = ("offline", "idx", "torchvision")  # cache files are looked up in this order


def _load_full(config: DataConfig) -> tuple[str, dict]:
    if config.dataset in DATASETS:
        spec = DATASETS[config.dataset]
        return spec.name, _load_registry(spec, config.image_size or spec.image_size)
    root = Path(config.dataset).expanduser()
    if not root.is_dir():
        raise ConfigError(f"DataConfig.dataset={config.dataset!r} is neither a known dataset nor a directory; "
                          f"use one of {sorted(DATASETS)} or the path of an ImageFolder root "
                          f"(with train/ and test/ subfolders)")
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        raise ConfigError(f"DataConfig.dataset={config.dataset!r} is a directory without train/ and test/ "
                          f"subfolders; an ImageFolder root needs <root>/train/<class>/... and <root>/test/<class>/...")
    return root.resolve().name, _load_image_folder(root.resolve(), config.image_size)


def _load_registry(spec: DatasetSpec, size: int) -> dict:
    for tag in _SOURCE_TAGS:
        if (full := _read_cache(_cache_path(spec.name, tag, size))) is not None:
            return full
    full, tag = None, None
    for directory in offline_dirs():
        archive, folder = directory / f"{spec.name}.tar.gz", directory / spec.name
        if archive.is_file():
            full, tag = _read_archive(archive, spec.in_channels, size), "offline"
        elif (folder / "train").is_dir() and (folder / "test").is_dir():
            full, tag = _read_folder(folder, spec.in_channels, size), "offline"
        if full is not None:
            break
    idx_dir = Path(spec.idx_dir) if spec.idx_dir else None
    if full is None and idx_dir is not None and all((idx_dir / f).is_file() for f in _IDX_FILES):
        full, tag = _read_idx_dir(idx_dir, spec, size), "idx"
    if full is None:
        full, tag = _download(spec, size), "torchvision"
    if len(full["classes"]) != spec.num_classes:
        raise RuntimeError(f"{full['source']} has {len(full['classes'])} classes but {spec.name} has "
                           f"{spec.num_classes}; is it the right dataset?")
    full["mean"], full["std"] = spec.mean, spec.std
    _write_cache(_cache_path(spec.name, tag, size), full)
    return full


def _load_image_folder(root: Path, size: int | None) -> dict:
    # The key fingerprints the file listing, so that adding, removing or editing images decodes again.
    listing = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in root.rglob("*") if p.is_file())
    fingerprint = hashlib.sha256(repr((str(root), listing)).encode()).hexdigest()[:12]
    path = _cache_path(f"{root.name}-{fingerprint}", "folder", size)
    if (full := _read_cache(path)) is not None:
        return full
    full = _read_folder(root, None, size)
    full["source"] = f"ImageFolder {root}"
    full["mean"], full["std"] = _channel_stats(full["train_images"])
    _write_cache(path, full)
    return full


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


def _cache_path(name: str, tag: str, size: int | None) -> Path:
    return data_dir() / "cache" / f"{name}-{tag}-{f'{size}px' if size else 'native'}.pt"


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        full = torch.load(path, weights_only=True)
        if full.get("format") == CACHE_FORMAT:
            return full
    except Exception as error:  # a cache from another version or a damaged disk: decode again
        warnings.warn(f"ignoring unreadable dataset cache {path} ({error}); decoding again")
    return None


def _write_cache(path: Path, full: dict) -> None:
    """Atomic, so readers never see half a file; a full or read-only disk costs only the cache, not the run."""
    try:
        atomic_save({**full, "format": CACHE_FORMAT}, path)
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
    return DatasetNotFoundError(f"dataset {name!r} was found nowhere (no cache in {data_dir() / 'cache'}, no offline "
                                f"copy in {looked}). Provide it with\n  - " + "\n  - ".join(ways))


# --- decoding ---------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _to_tensor(image: Image.Image, channels: int | None, size: int | None) -> torch.Tensor:
    """A PIL image as uint8 (C, H, W): greyscale or RGB (`channels`, or the image's own when None),
    fitted to `size` x `size` when given and different."""
    mode = {1: "L", 3: "RGB"}[channels] if channels else ("L" if image.mode in _GREY_MODES else "RGB")
    if image.mode != mode:
        image = image.convert(mode)
    x = torch.from_numpy(np.array(image))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    return fit(x, size) if size and tuple(x.shape[-2:]) != (size, size) else x


def fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) so that the shorter side is `size`, then center-crop to a square."""
    images = v2.functional.resize(images, [size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    return v2.functional.center_crop(images, [size, size])


class _ImageFolderDecoder:
    """Collects decoded images of an ImageFolder tree in any order; numbers the classes at the end, because
    classes.txt (official index -> folder name) may come after the images in an archive."""

    def __init__(self, where: str, channels: int | None, size: int | None):
        self.where, self.channels, self.size = where, channels, size
        self.items = {"train": [], "test": []}  # split -> [(class folder, file name, image)]
        self.class_order: list[str] | None = None
        self.formats: set[str] = set()
        self.jpeg_quality: int | None = None

    def add(self, split: str, folder: str, filename: str, raw: bytes) -> None:
        try:
            with Image.open(io.BytesIO(raw)) as image:
                if image.format == "JPEG" and "JPEG" not in self.formats:
                    self.jpeg_quality = _jpeg_quality(image)
                self.formats.add(image.format)
                self.items[split].append((folder, filename, _to_tensor(image, self.channels, self.size)))
        except (OSError, ValueError, SyntaxError) as error:
            raise RuntimeError(f"cannot decode {self.where}: {split}/{folder}/{filename} ({error})") from error

    def read_classes_txt(self, text: str) -> None:
        """Lines `<index> <folder>` (or just `<folder>`, in index order); `#` starts a comment."""
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        entries = [line.split(maxsplit=1) for line in lines if line]
        if all(len(e) == 2 and e[0].isdigit() for e in entries):
            entries = sorted((int(i), folder) for i, folder in entries)
            if [i for i, _ in entries] != list(range(len(entries))):
                raise RuntimeError(f"{self.where}/classes.txt must number the classes 0..{len(entries) - 1} once each")
            self.class_order = [folder for _, folder in entries]
        else:
            self.class_order = [" ".join(e) for e in entries]

    def finish(self, allow_empty: bool = False) -> dict:
        folders = sorted({folder for items in self.items.values() for folder, _, _ in items})
        classes = self.class_order if self.class_order is not None else folders  # ImageFolder sorts by name
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise RuntimeError(f"{self.where} has class folders {unknown} that classes.txt does not list")
        index = {folder: i for i, folder in enumerate(classes)}
        full = {"classes": list(classes)}
        decoded = {split: self._stack(split, index, allow_empty) for split in self.items}
        if self.channels is None and decoded["train"][0].shape[1] != decoded["test"][0].shape[1]:
            decoded = {s: (x.expand(-1, 3, -1, -1).contiguous(), y) for s, (x, y) in decoded.items()}
        for split, (images, labels) in decoded.items():
            full[f"{split}_images"], full[f"{split}_labels"] = images, labels
        return full

    def _stack(self, split: str, index: dict[str, int], allow_empty: bool) -> tuple[torch.Tensor, torch.Tensor]:
        items = sorted(self.items[split], key=lambda item: (index[item[0]], _natural_key(item[1])))
        if not items:
            some_image = [x for other in self.items.values() for _, _, x in other[:1]]
            if not (allow_empty and some_image):
                raise RuntimeError(f"{self.where} has no images under {split}/<class>/")
            return torch.empty(0, *some_image[0].shape, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
        shapes = {tuple(x.shape) for _, _, x in items}
        if self.size is None and (len({s[1:] for s in shapes}) > 1 or any(s[1] != s[2] for s in shapes)):
            examples = ", ".join(f"{h}x{w}" for h, w in sorted({s[1:] for s in shapes})[:4])
            raise ConfigError(f"{self.where} has images of different or non-square sizes ({examples}); "
                              f"set DataConfig.image_size to resize them to one square size")
        if len({s[0] for s in shapes}) > 1:  # greyscale and colour mixed: make them all RGB
            items = [(f, n, x.expand(3, -1, -1)) for f, n, x in items]
        labels = torch.tensor([index[folder] for folder, _, _ in items], dtype=torch.long)
        return torch.stack([x for _, _, x in items]), labels

    def describe(self) -> str:
        if "JPEG" in self.formats:
            quality = f" q{self.jpeg_quality}" if self.jpeg_quality else ""
            return f"JPEG{quality}: not the official pixels"
        return ", ".join(sorted(self.formats)) + (", lossless" if self.formats <= {"PNG", "BMP", "PPM"} else "")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _jpeg_quality(image: Image.Image) -> int | None:
    """The IJG quality whose luminance table this JPEG uses (None for other encoders' tables)."""
    table = list(getattr(image, "quantization", {}).get(0, []))
    return next((q for q in range(1, 101) if _ijg_luminance_table(q) == table), None)


@functools.lru_cache(maxsize=None)
def _ijg_luminance_table(quality: int) -> list[int]:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "JPEG", quality=quality)
    return list(Image.open(buffer).quantization[0])


def _split_and_class(parts: list[str]) -> tuple[str, str] | None:
    """('train', class folder) for `[top/]train/<class>/.../<file>`; None for anything else."""
    if parts and parts[0] not in ("train", "test"):
        parts = parts[1:]  # the archive's top folder, e.g. cifar10/
    if len(parts) >= 3 and parts[0] in ("train", "test") and not parts[-1].startswith("."):
        if parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            return parts[0], parts[1]
    return None


def _read_archive(path: Path, channels: int | None, size: int | None, limit: int | None = None) -> dict:
    """Decode an ImageFolder .tar.gz by streaming it: nothing is unpacked to disk. `limit` stops after that
    many images (for quick looks; a split may then be empty)."""
    decoder, seen = _ImageFolderDecoder(str(path), channels, size), 0
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if parts[-1] == "classes.txt" and len(parts) <= 2:
                    decoder.read_classes_txt(tar.extractfile(member).read().decode())
                elif (where := _split_and_class(parts)) is not None:
                    decoder.add(*where, parts[-1], tar.extractfile(member).read())
                    seen += 1
                    if limit is not None and seen >= limit:
                        break
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as error:
        raise RuntimeError(f"offline archive {path} is unreadable ({error}); copy it again or remove it") from error
    full = decoder.finish(allow_empty=limit is not None)
    full["source"] = f"offline archive {path} ({decoder.describe()})"
    return full


def _read_folder(root: Path, channels: int | None, size: int | None) -> dict:
    decoder = _ImageFolderDecoder(str(root), channels, size)
    if (root / "classes.txt").is_file():
        decoder.read_classes_txt((root / "classes.txt").read_text())
    for split in ("train", "test"):
        for file in sorted((root / split).rglob("*")):
            where = _split_and_class(list(file.relative_to(root).parts))
            if where is not None and file.is_file():
                decoder.add(*where, str(file.relative_to(root / split / where[1])), file.read_bytes())
    full = decoder.finish()
    full["source"] = f"offline folder {root} ({decoder.describe()})"
    return full


_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def read_idx(path: Path) -> torch.Tensor:
    """An idx file (MNIST's format, gzipped or not) of unsigned bytes as a uint8 tensor of its shape."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (header {raw[:4].hex()}, expected 000008..)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = raw[4 + 4 * ndim:]
    if len(data) != math.prod(shape):
        raise ValueError(f"{path}: its header says shape {shape} ({math.prod(shape)} bytes) but it holds {len(data)}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(shape)


def _read_idx_dir(directory: Path, spec: DatasetSpec, size: int) -> dict:
    full = {"classes": list(spec.classes), "source": f"official idx files in {directory}"}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")[:, None]
        labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz").long()
        if len(images) != len(labels):
            raise RuntimeError(f"{directory}: {len(images)} {prefix} images but {len(labels)} labels")
        if images.shape[-1] != size:
            images = torch.cat([fit(chunk, size) for chunk in images.split(4096)])
        full[f"{split}_images"], full[f"{split}_labels"] = images, labels
    return full


def _download(spec: DatasetSpec, size: int) -> dict:
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    root = data_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        splits = {split: dataset_class(str(root), download=True, **dict(kwargs))
                  for split, kwargs in (("train", spec.train_kwargs), ("test", spec.test_kwargs))}
    except (OSError, RuntimeError) as error:  # offline: URLError (an OSError) or "Dataset not found"
        raise _not_found(spec, error) from error
    full = {"classes": list(getattr(splits["train"], "classes", None) or spec.classes
                            or [str(i) for i in range(spec.num_classes)]),
            "source": f"torchvision {spec.torchvision_class} (official) in {root}"}
    for split, dataset in splits.items():
        pairs = [(_to_tensor(image, spec.in_channels, size), label) for image, label in dataset]
        full[f"{split}_images"] = torch.stack([x for x, _ in pairs])
        full[f"{split}_labels"] = torch.tensor([label for _, label in pairs], dtype=torch.long)
    return full


# --- per-batch transforms on uint8 tensors ------------------------------------------------------------

def normalize(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std per channel, on the images' device."""
    channels = images_uint8.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalize got {channels}-channel images but mean={tuple(mean)}, std={tuple(std)}; "
                         f"give one value per channel")
    mean = torch.tensor(mean, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32, device=images_uint8.device).view(-1, 1, 1)
    return images_uint8.to(torch.float32).div_(255).sub_(mean).div_(std)


def augment_batch(images_uint8: torch.Tensor, augment: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """Apply the named augmentations in order; flip and crop draw only from `generator` (reproducible),
    RandAugment from the global torch RNG."""
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
            images = random_crop(images, generator)
        else:
            randaugment = v2.RandAugment(num_ops=2, magnitude=9)
            images = torch.stack([randaugment(image) for image in images]) if len(images) else images
    return images


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(images), generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def random_crop(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Pad each image with `pad` zero pixels per side and cut an H x W window at a random offset, for the
    whole batch at once: every output pixel is gathered from its image's shifted row and column."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=generator.device).to(images.device)
    rows = dy.view(n, 1, 1, 1) + torch.arange(h, device=images.device).view(1, 1, h, 1)
    cols = dx.view(n, 1, 1, 1) + torch.arange(w, device=images.device).view(1, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]
