"""Reading image datasets from files, and proving that what was read is what the files hold (docs/data.md).

Sources: ImageFolder trees, unpacked or as a .tar.gz streamed without unpacking, and idx files (MNIST's format).
Every image becomes uint8 greyscale or RGB. Anything that would decode into a partial, clipped or silently altered
dataset raises `DataIntegrityError` (or `ImageSizeError` where a DataConfig setting is the fix) naming the file.
The hashes here (`file_sha256`, `listing_sha256`) identify a source cheaply enough to key caches and runs on.
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
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import ConfigError


class DataIntegrityError(RuntimeError):
    """A source whose files are damaged, incomplete or inconsistent; the message names the file and the fix.
    `path` is the file or folder at fault (an archive, a folder, an image file), `member` the file inside an
    archive when there is one, `problem` a short code (checksum, unreadable, undecodable, unsupported-mode,
    transparent, mixed-kinds, classes, empty-class, count) and `details` the facts behind it, as data."""

    def __init__(self, message: str, path, problem: str, member: str | None = None, **details):
        super().__init__(message)
        self.path, self.member, self.problem, self.details = Path(path), member, problem, details

    def __reduce__(self):  # the default would call __init__ with the message alone, e.g. in another process
        return type(self), (str(self), self.path, self.problem, self.member), {"details": self.details}


class ImageSizeError(ConfigError):
    """Images whose native sizes cannot share one tensor; the fix is DataConfig.image_size. `sizes` maps what
    was compared (a split, or a split and an example file) to (height, width)."""

    def __init__(self, message: str, path, sizes: dict):
        super().__init__(message)
        self.path, self.sizes = Path(path), sizes

    def __reduce__(self):
        return type(self), (str(self), self.path, self.sizes)


# --- fingerprints ----------------------------------------------------------------------------------

_SHA256_BY_STAT: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    # ctime and inode as well as mtime: tools that copy or unpack files (tar, rsync -t, cp -p) set mtime to an
    # old value, but cannot set ctime, and a replaced file is often a new inode.
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, memoized while the file's size and timestamps stay the same."""
    key = _stat_key(path)
    if key not in _SHA256_BY_STAT:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        # A file rewritten while it was being read must not leave a hash of half old, half new bytes behind.
        if _stat_key(path) != key:
            return file_sha256(path)
        _SHA256_BY_STAT[key] = digest.hexdigest()
    return _SHA256_BY_STAT[key]


def listing_sha256(root: Path) -> str:
    """The sha256 of a folder's root and of every file under it (relative path, size, mtime, ctime): any
    added, removed, edited or replaced file changes it, without reading a single image."""
    entries = []
    for directory, _, files in os.walk(root, followlinks=True):  # a symlinked train/ or test/ is read too
        for name in files:
            st = os.stat(os.path.join(directory, name))
            entries.append((os.path.relpath(os.path.join(directory, name), root), st.st_size, st.st_mtime_ns,
                            st.st_ctime_ns))
    return hashlib.sha256(repr((str(root), sorted(entries))).encode()).hexdigest()


CHECKSUMS_FILE = "checksums.sha256"


def verify_checksum(path: Path) -> None:
    """Compare `path` with its line in a `checksums.sha256` beside it (the format `sha256sum` writes), if any."""
    listing = path.parent / CHECKSUMS_FILE
    if not listing.is_file():
        return
    expected = None
    for line in listing.read_text().splitlines():
        match = re.fullmatch(r"\s*([0-9a-fA-F]{64}) [ *](.+?)\s*", line)
        if match and os.path.normpath(match.group(2)) == path.name:
            expected = match.group(1).lower()
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise DataIntegrityError(
            f"{path} does not match {listing}: its sha256 is {actual}, the list says {expected}. The file is "
            f"damaged or incomplete; copy it again (then check with `sha256sum -c {CHECKSUMS_FILE}`)",
            path, "checksum", expected=expected, actual=actual)


# --- one image ----------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GREY_MODES = ("1", "L", "LA", "La")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _where(path: Path, member: str | None) -> str:
    return f"{path}: {member}" if member else str(path)


def own_kind(image: Image.Image, path: Path, member: str | None = None) -> Image.Image:
    """The image as mode L (greyscale kinds) or RGB (colour kinds), keeping every pixel's value; 16-bit
    greyscale is scaled to 8 bits, opaque alpha is dropped. Images that cannot be made so without losing
    information (32-bit or float greyscale, transparent pixels) are refused."""
    mode = image.mode
    if mode in ("I", "F") or mode.startswith(("I;32", "F;")):
        raise DataIntegrityError(
            f"{_where(path, member)} is a {'32-bit integer' if mode.startswith('I') else 'floating-point'} "
            f"greyscale image (mode {mode}), whose range has no agreed 8-bit scale; convert it to 8- or 16-bit "
            f"greyscale first", path, "unsupported-mode", member, mode=mode)
    if mode.startswith("I;16"):
        # Pillow's own I;16 -> L conversion clips at 255, which turns 16-bit images black and white.
        values = np.asarray(image).astype(np.uint32)
        transparent = image.info.get("transparency")
        if isinstance(transparent, int) and (values == transparent).any():
            raise _transparent(path, member)
        return Image.fromarray(((values + 128) // 257).astype(np.uint8))  # round(x / 257): 65535 -> 255
    if mode in _ALPHA_MODES or "transparency" in image.info:
        with_alpha = image if mode in _ALPHA_MODES else image.convert("RGBA")
        if with_alpha.getchannel(with_alpha.getbands()[-1]).getextrema()[0] < 255:  # "A", or "a" premultiplied
            raise _transparent(path, member)
        if mode == "L":
            return image
        return image.convert("L") if mode in _GREY_MODES else with_alpha.convert("RGB")
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if mode in _GREY_MODES else "RGB")


def _transparent(path: Path, member: str | None) -> DataIntegrityError:
    return DataIntegrityError(
        f"{_where(path, member)} has transparent pixels, whose colour depends on what they are drawn over; "
        f"flatten it onto a background first", path, "transparent", member)


def to_tensor(image: Image.Image, channels: int | None, size: int | None, path: Path,
              member: str | None = None) -> tuple[torch.Tensor, int]:
    """A PIL image as uint8 (C, H, W), converted to `channels` (1 or 3) when given and fitted to `size` x
    `size` when given and different; and the number of channels it had (1 or 3)."""
    image = own_kind(image, path, member)
    had = 1 if image.mode == "L" else 3
    if channels and channels != had:
        image = image.convert("L" if channels == 1 else "RGB")
    x = torch.from_numpy(np.array(image))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    return (fit(x, size) if size and tuple(x.shape[-2:]) != (size, size) else x), had


def fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (bilinear, antialiased) so that the shorter side is `size`, then center-crop to a square."""
    from torchvision.transforms import v2  # here alone: fixed-size datasets decode without torchvision

    images = v2.functional.resize(images, [size], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    return v2.functional.center_crop(images, [size, size])


def conversion_note(converted: int, total: int, channels: int | None) -> str:
    return f"{converted} of {total} images converted to {'greyscale' if channels == 1 else 'RGB'}" if converted else ""


# --- checks on a whole dataset ----------------------------------------------------------------------

def check_classes_present(classes: list[str], labels: dict[str, torch.Tensor], path: Path) -> None:
    """Every class must have images in both splits: a class missing from train is never learnt and one missing
    from test is never measured, and either makes the accuracy mean something else than it says."""
    counts = {split: torch.bincount(y, minlength=len(classes)).tolist() for split, y in labels.items()}
    for split, other in (("train", "test"), ("test", "train")):
        missing = [k for k, n in enumerate(counts[split]) if n == 0]
        if not missing:
            continue
        names = [classes[k] for k in missing]
        only_other = [classes[k] for k in missing if counts[other][k]]
        reason = (f"class(es) {only_other} have images only in {other}/" if only_other
                  else f"class(es) {names} have no images in {split}/")
        raise DataIntegrityError(
            f"{path}: {reason}; every class needs at least one image in train/ and in test/. Add "
            f"{split}/<class> images, or remove the class (its {other}/ folder and its line in classes.txt); if "
            f"the source is a copy, it is incomplete: copy it again", path, "empty-class", split=split,
            classes=names)


# --- ImageFolder trees --------------------------------------------------------------------------------

class ImageFolderDecoder:
    """Collects decoded images of an ImageFolder tree in any order; numbers the classes at the end, because
    classes.txt (official index -> folder name) may come after the images in an archive. `in_archive`: file names
    are members of the archive `path`, rather than paths under the folder `path`."""

    def __init__(self, path: Path, channels: int | None, size: int | None, in_archive: bool):
        self.path, self.channels, self.size, self.in_archive = Path(path), channels, size, in_archive
        self.items = {"train": [], "test": []}  # split -> [(class folder, file name, image, channels it had)]
        self.class_order: list[str] | None = None
        self.formats: set[str] = set()
        self.jpeg_quality: int | None = None
        self.scaled_16_bit = 0  # not lossless, although PNG is
        self.hidden: list[str] = []  # images skipped for a hidden name on their path (`_hidden_image`)

    def add(self, split: str, folder: str, filename: str, raw: bytes) -> None:
        relative = f"{split}/{folder}/{filename}"
        path, member = (self.path, relative) if self.in_archive else (self.path / relative, None)
        try:
            with Image.open(io.BytesIO(raw)) as image:
                if image.format == "JPEG" and "JPEG" not in self.formats:
                    self.jpeg_quality = _jpeg_quality(image)
                self.formats.add(image.format)
                self.scaled_16_bit += image.mode.startswith("I;16")
                x, had = to_tensor(image, self.channels, self.size, path, member)
        except (OSError, ValueError, SyntaxError) as error:
            raise DataIntegrityError(f"cannot decode {_where(path, member)} ({error}); replace or remove that file",
                                     path, "undecodable", member) from error
        self.items[split].append((folder, filename, x, had))

    def read_classes_txt(self, text: str) -> None:
        """Lines `<index> <folder>` (or just `<folder>`, in index order); `#` starts a comment."""
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        entries = [line.split(maxsplit=1) for line in lines if line]
        if all(len(e) == 2 and e[0].isdigit() for e in entries):
            entries = sorted((int(i), folder) for i, folder in entries)
            if [i for i, _ in entries] != list(range(len(entries))):
                raise DataIntegrityError(f"{self.path}: classes.txt must number the classes 0..{len(entries) - 1} "
                                         f"once each", self.path, "classes", "classes.txt")
            self.class_order = [folder for _, folder in entries]
        else:
            self.class_order = [" ".join(e) for e in entries]

    def finish(self, allow_empty: bool = False) -> dict:
        """The decoded splits, with notes on their formats and conversions. `allow_empty` (for a quick look at the
        first images) skips the checks that need every image: that each class has images in both splits."""
        folders = sorted({folder for items in self.items.values() for folder, *_ in items})
        classes = self.class_order if self.class_order is not None else folders  # ImageFolder sorts by name
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DataIntegrityError(f"{self.path} has class folders {unknown} that classes.txt does not list; add "
                                     f"them to it or remove them", self.path, "classes", folders=unknown)
        if len(classes) < 2 and not allow_empty:  # one class: every prediction is right, a silent 100%
            raise DataIntegrityError(f"{self.path} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'})"
                                     f" under train/ and test/; a classifier needs at least 2: add a folder per class",
                                     self.path, "classes", found=len(classes))
        index = {folder: i for i, folder in enumerate(classes)}
        if not allow_empty:
            check_classes_present(list(classes), {split: torch.tensor([index[f] for f, *_ in items], dtype=torch.long)
                                                  for split, items in self.items.items()}, self.path)
        self._check_one_kind()
        full = {"classes": list(classes)}
        for split in self.items:
            full[f"{split}_images"], full[f"{split}_labels"] = self._stack(split, index)
        sizes = {split: tuple(full[f"{split}_images"].shape[2:]) for split in self.items}
        if self.size is None and sizes["train"] != sizes["test"] and all(self.items.values()):
            raise ImageSizeError(f"{self.path}: the train images are {_size(sizes['train'])} but the test images are "
                                 f"{_size(sizes['test'])}; set DataConfig.image_size to fit both to one square size",
                                 self.path, sizes)
        full["formats"], full["conversion"] = self.describe(), self.conversion()
        return full

    def _check_one_kind(self) -> None:
        """With no DataConfig.channels, greyscale and colour images must not be mixed: which kind wins would be
        decided by one stray file."""
        kinds = {1: [], 3: []}
        for split, items in self.items.items():
            for folder, filename, _, had in items:
                kinds[had].append(f"{split}/{folder}/{filename}")
        if self.channels is not None or not (kinds[1] and kinds[3]):
            return
        minority = 1 if len(kinds[1]) < len(kinds[3]) else 3
        examples = sorted(kinds[minority], key=_natural_key)[:3]
        raise DataIntegrityError(
            f"{self.path} mixes {len(kinds[1])} greyscale and {len(kinds[3])} colour images (the "
            f"{'greyscale' if minority == 1 else 'colour'} ones include {', '.join(examples)}); convert them to one "
            f"kind, or set DataConfig.channels=1 or 3 to convert every image", self.path, "mixed-kinds",
            greyscale=len(kinds[1]), colour=len(kinds[3]), examples=examples)

    def _stack(self, split: str, index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = sorted(self.items[split], key=lambda item: (index[item[0]], _natural_key(item[1])))
        if not items:  # only reached with allow_empty, or with no images at all
            some_image = [x for other in self.items.values() for _, _, x, _ in other[:1]]
            if not some_image:
                raise DataIntegrityError(f"{self.path} has no images under train/<class>/ or test/<class>/",
                                         self.path, "empty-class", split=split, classes=[])
            return torch.empty(0, *some_image[0].shape, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
        by_shape: dict[tuple, str] = {}
        for folder, filename, x, _ in items:
            by_shape.setdefault(tuple(x.shape[1:]), f"{split}/{folder}/{filename}")
        if self.size is None and (len(by_shape) > 1 or any(h != w for h, w in by_shape)):
            sizes = dict(sorted((example, shape) for shape, example in by_shape.items())[:4])
            raise ImageSizeError(f"{self.path} has images of different or non-square sizes ("
                                 + ", ".join(f"{_size(s)}: {e}" for e, s in sizes.items())
                                 + "); set DataConfig.image_size to resize them to one square size", self.path, sizes)
        labels = torch.tensor([index[folder] for folder, *_ in items], dtype=torch.long)
        return torch.stack([x for _, _, x, _ in items]), labels

    def describe(self) -> str:
        if "JPEG" in self.formats:
            quality = f" q{self.jpeg_quality}" if self.jpeg_quality else ""
            return f"JPEG{quality}: not the official pixels"
        lossless = self.formats <= {"PNG", "BMP", "PPM"} and not self.scaled_16_bit
        return ", ".join(sorted(self.formats)) + (", lossless" if lossless else "")

    def conversion(self) -> str:
        total = sum(map(len, self.items.values()))
        converted = sum(had != self.channels for items in self.items.values() for *_, had in items)
        notes = [conversion_note(converted if self.channels else 0, total, self.channels),
                 f"{self.scaled_16_bit} of {total} images scaled from 16 to 8 bits" if self.scaled_16_bit else "",
                 f"{len(self.hidden)} hidden image(s) skipped, e.g. {sorted(self.hidden)[0]}" if self.hidden else ""]
        return "; ".join(note for note in notes if note)


def _size(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


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


def _below_split(parts: list[str]) -> list[str]:
    """`parts` from train/ or test/ on, without the archive's top folder (e.g. cifar10/)."""
    return parts[1:] if parts and parts[0] not in ("train", "test") else parts


def _hidden_image(parts: list[str]) -> bool:
    """An image file under train/<class>/ or test/<class>/ with a hidden name on its way (JupyterLab's
    .ipynb_checkpoints/, macOS's ._ files): skipped, since a hidden folder would otherwise become a class."""
    parts = _below_split(parts)
    return (len(parts) >= 3 and parts[0] in ("train", "test") and parts[-1].lower().endswith(IMAGE_EXTENSIONS)
            and any(part.startswith(".") for part in parts[1:]))


def _split_and_class(parts: list[str]) -> tuple[str, str] | None:
    """('train', class folder) for `[top/]train/<class>/.../<file>`; None for anything else, hidden entries
    included (`_hidden_image`)."""
    parts = _below_split(parts)
    if len(parts) >= 3 and parts[0] in ("train", "test") and not any(part.startswith(".") for part in parts[1:]):
        if parts[-1].lower().endswith(IMAGE_EXTENSIONS):
            return parts[0], parts[1]
    return None


def decoding_bar(path: Path, total: int, unit: str = "B"):
    """A progress bar for the first decode of a dataset (CIFAR-10's archive takes about half a minute; later loads
    read the data cache), shown where stderr is a terminal and nowhere else: logs, notebooks and tests stay as
    they were."""
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=f"decoding {Path(path).name} (once: later loads read the data cache)", unit=unit,
                unit_scale=unit == "B", disable=not _is_terminal(sys.stderr), leave=False)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def read_archive(path: Path, channels: int | None, size: int | None, limit: int | None = None) -> dict:
    """Decode an ImageFolder .tar.gz by streaming it: nothing is unpacked to disk. `limit` stops after that
    many images (for quick looks; a split may then be empty)."""
    path = Path(path)
    decoder, seen = ImageFolderDecoder(path, channels, size, in_archive=True), 0
    try:
        # GzipFile rather than tarfile's own "r|gz": tarfile's stream reader treats a truncated gzip stream as
        # the end of the archive and quietly returns the members before the cut.
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar, decoding_bar(path, path.stat().st_size) as bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)  # the compressed bytes read so far
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
                elif _hidden_image(parts):
                    decoder.hidden.append(member.name)
            if limit is None:
                while stream.read(1 << 20):  # to gzip's end, where its length and CRC are checked
                    pass
                bar.update(raw.tell() - bar.n)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataIntegrityError(f"offline archive {path} is unreadable or incomplete ({type(error).__name__}: "
                                 f"{error}); copy it again or remove it", path, "unreadable") from error
    return decoder.finish(allow_empty=limit is not None)


def read_folder(root: Path, channels: int | None, size: int | None) -> dict:
    root = Path(root)
    decoder = ImageFolderDecoder(root, channels, size, in_archive=False)
    if (root / "classes.txt").is_file():
        decoder.read_classes_txt((root / "classes.txt").read_text())
    files = [file for split in ("train", "test") for file in sorted((root / split).rglob("*"))]
    with decoding_bar(root, len(files), unit="file") as bar:
        for file in files:
            bar.update(1)
            parts = list(file.relative_to(root).parts)
            where = _split_and_class(parts)
            if where is not None and file.is_file():
                decoder.add(*where, str(file.relative_to(root / where[0] / where[1])), file.read_bytes())
            elif _hidden_image(parts) and file.is_file():
                decoder.hidden.append("/".join(parts))
    return decoder.finish()


# --- idx files ------------------------------------------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
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


def read_idx_dir(directory: Path, classes: list[str], size: int) -> dict:
    full = {"classes": list(classes)}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")[:, None]
        labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz").long()
        if len(images) != len(labels):
            raise DataIntegrityError(f"{directory}: {len(images)} {prefix} images but {len(labels)} labels; "
                                     f"install the files again", directory / f"{prefix}-labels-idx1-ubyte.gz",
                                     "count", split=split, expected=len(images), found=len(labels))
        if images.shape[-1] != size:
            images = torch.cat([fit(chunk, size) for chunk in images.split(4096)])
        full[f"{split}_images"], full[f"{split}_labels"] = images, labels
    return full
