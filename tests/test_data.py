"""Data: where datasets come from, how subsets are drawn, and what augmentation does to a batch.

Everything here runs on tiny synthetic datasets written into tmp_path (archives, folders, idx files);
nothing touches the network. Each synthetic image carries its identity in its pixels: pixel (0, 0) is a
unique image id and every other pixel is the code of the class folder it was written to, so a test can
check labels and splits from the loaded tensors alone.
"""

import gzip
import hashlib
import io
import os
import struct
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import paraformer.core.paths as config_module
import paraformer.core.data as data
import paraformer.core.datasources as datasources
from paraformer.core.config import ConfigError, DataConfig
from paraformer.core.data import (DATASETS, DataIntegrityError, DatasetSpec, augment_batch, crop_padding,
                             data_fingerprint, load_data, normalize, stratified_subset)
from paraformer.core.datasources import ImageSizeError, read_idx

FOLDER_CODES = {"zebra": 10, "apple": 20, "mango": 30}
OFFICIAL_ORDER = ["zebra", "apple", "mango"]  # as classes.txt numbers them: not alphabetical
TOY = DatasetSpec("toy", num_classes=3, in_channels=1, image_size=8, mean=(0.1,), std=(0.2,),
                  torchvision_class="FakeToy")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def toy_files(per_class={"train": 6, "test": 3}, sizes=(8,), first_id=0) -> dict[str, bytes]:
    """Relative path -> file bytes of an ImageFolder tree with classes.txt in OFFICIAL_ORDER; image ids count
    from `first_id`, so that two trees with the same file names can hold different pixels."""
    files = {"classes.txt": ("# official index -> folder\n"
                             + "".join(f"{i} {name}\n" for i, name in enumerate(OFFICIAL_ORDER))).encode()}
    image_id = first_id
    for split, n in per_class.items():
        for folder, code in FOLDER_CODES.items():
            for k in range(n):
                size = sizes[image_id % len(sizes)]
                pixels = np.full((size, size), code, dtype=np.uint8)
                pixels[0, 0] = image_id
                files[f"{split}/{folder}/{k:04d}.png"] = png(pixels)
                image_id += 1
    return files


def write_archive(path: Path, top: str, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def ids(images: torch.Tensor) -> set[int]:
    return set(images[:, 0, 0, 0].tolist())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_names(dirs) -> list[str]:
    return sorted(p.name for p in (dirs["data"] / "cache").iterdir())


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """A private data dir and offline dir; the checkout's ../shared/datasets is an empty temp folder."""
    paths = {"data": tmp_path / "data", "offline": tmp_path / "offline", "shared": tmp_path / "shared" / "datasets"}
    for path in paths.values():
        path.mkdir(parents=True)
    monkeypatch.setenv("PARAFORMER_DATA", str(paths["data"]))
    monkeypatch.setenv("PARAFORMER_OFFLINE_DATA", str(paths["offline"]))
    monkeypatch.setattr(config_module, "project_root", lambda: tmp_path / "checkout")
    monkeypatch.setitem(DATASETS, "toy", TOY)
    return paths


# --- subsets ----------------------------------------------------------------------------------------

def test_a_subset_keeps_class_proportions_and_is_the_same_for_the_same_seed():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    subset = stratified_subset(labels, 10, seed=3)
    assert torch.equal(subset, stratified_subset(labels, 10, seed=3))
    assert torch.equal(subset, subset.sort().values) and len(set(subset.tolist())) == 10
    assert labels[subset].bincount().tolist() == [5, 3, 2]


def test_shares_that_do_not_divide_evenly_are_rounded_by_largest_remainder():
    labels = torch.arange(30) % 3  # 10 per class; 10 / 3 = 3.33 each
    counts = labels[stratified_subset(labels, 10, seed=0)].bincount().tolist()
    assert sorted(counts) == [3, 3, 4]


def test_different_seeds_draw_different_subsets():
    labels = torch.arange(1000) % 10
    assert not torch.equal(stratified_subset(labels, 100, seed=0), stratified_subset(labels, 100, seed=1))


def test_no_size_means_everything_and_too_large_a_size_is_an_error():
    labels = torch.arange(100) % 4
    assert torch.equal(stratified_subset(labels, None, seed=0), torch.arange(100))
    with pytest.raises(ConfigError, match=r"n=101.*100 images"):
        stratified_subset(labels, 101, seed=0)


# --- loading ----------------------------------------------------------------------------------------

def test_an_archive_is_split_into_disjoint_train_validation_and_test_subsets(dirs):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    loaded = load_data(DataConfig(dataset="toy", n_train=15, n_test=6, val_fraction=0.2, subset_seed=1))
    assert (len(loaded.train_labels), len(loaded.val_labels), len(loaded.test_labels)) == (12, 3, 6)
    assert loaded.val_labels.bincount().tolist() == [1, 1, 1]  # the validation split is stratified too
    assert not ids(loaded.train_images) & ids(loaded.val_images)
    assert (loaded.train_images.dtype, loaded.train_labels.dtype) == (torch.uint8, torch.int64)
    assert (loaded.num_classes, loaded.in_channels, loaded.image_size) == (3, 1, 8)
    assert (loaded.mean, loaded.std) == (TOY.mean, TOY.std)  # registry datasets use their standard constants
    assert loaded.source.startswith("offline archive toy.tar.gz")  # its name, not this machine's path to it
    again = load_data(DataConfig(dataset="toy", n_train=15, n_test=6, val_fraction=0.2, subset_seed=1))
    assert torch.equal(again.train_images, loaded.train_images) and torch.equal(again.val_images, loaded.val_images)


def test_a_class_subset_keeps_only_those_classes_with_their_original_labels(dirs):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    loaded = load_data(DataConfig(dataset="toy", classes=(1, 2), n_train=8, n_test=4))
    assert set(loaded.train_labels.tolist()) == set(loaded.test_labels.tolist()) == {1, 2}
    assert loaded.train_labels.bincount().tolist() == [0, 4, 4]  # n_train counts within the kept classes
    codes = {FOLDER_CODES[OFFICIAL_ORDER[label]] for label in (1, 2)}
    assert set(loaded.train_images[:, 0, 1, 1].tolist()) == codes  # the pixels belong to those classes
    assert loaded.num_classes == 3  # the dataset's classes, so label numbers stay meaningful
    with pytest.raises(ConfigError, match=r"classes=\(1, 3\) names a class that toy lacks"):
        load_data(DataConfig(dataset="toy", classes=(1, 3)))
    with pytest.raises(ConfigError, match="n_train=13 exceeds the 12 images"):
        load_data(DataConfig(dataset="toy", classes=(0, 1), n_train=13))
    with pytest.raises(ConfigError, match="must be distinct class indices"):
        DataConfig(dataset="toy", classes=(1, 1))


def test_classes_txt_gives_the_official_label_order_not_the_alphabetical_one(dirs):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    loaded = load_data(DataConfig(dataset="toy"))
    assert loaded.classes == OFFICIAL_ORDER
    for images, labels in ((loaded.train_images, loaded.train_labels), (loaded.test_images, loaded.test_labels)):
        codes = [FOLDER_CODES[loaded.classes[label]] for label in labels.tolist()]
        assert images[:, 0, 1, 1].tolist() == codes


def test_the_second_load_comes_from_the_decoded_tensor_cache(dirs, monkeypatch):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    first = load_data(DataConfig(dataset="toy"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached dataset must not be decoded again")

    monkeypatch.setattr(data, "read_archive", no_decoding)
    second = load_data(DataConfig(dataset="toy", n_train=9))
    assert torch.equal(second.test_images, first.test_images) and second.source == first.source
    # The cache is named by the archive's sha256 (it used to be toy-offline-8px.pt, whatever the archive held).
    assert cache_names(dirs) == [f"toy-offline-archive-{sha256(dirs['offline'] / 'toy.tar.gz')[:16]}-8px.pt"]


def test_an_unpacked_offline_folder_works_like_the_archive(dirs):
    write_folder(dirs["shared"] / "toy", toy_files())  # found in ../shared/datasets without configuration
    loaded = load_data(DataConfig(dataset="toy"))
    assert loaded.classes == OFFICIAL_ORDER and len(loaded.train_labels) == 18
    assert loaded.source.startswith("offline folder")


def test_a_failed_cache_write_leaves_no_partial_file_behind(dirs, monkeypatch):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())

    def disk_full(obj, f):
        Path(f).write_bytes(b"half a cache")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        loaded = load_data(DataConfig(dataset="toy"))
    assert len(loaded.train_labels) == 18
    assert list((dirs["data"] / "cache").iterdir()) == []


def test_a_cache_write_killed_half_way_is_cleaned_up_by_the_next_decode(dirs):
    import subprocess
    import sys

    from paraformer.core import files as results

    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    (dirs["data"] / "cache").mkdir()
    orphan = dirs["data"] / "cache" / f".toy-cache.pt.{results._HOST}.{dead_pid}.x1y2z3.tmp"
    orphan.write_bytes(b"half a cache")
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    load_data(DataConfig(dataset="toy"))
    assert not orphan.exists() and len(cache_names(dirs)) == 1


def test_a_different_image_size_is_resized_when_decoded_and_cached_apart(dirs):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files(sizes=(8, 12)))  # fitted to 8 by default
    assert load_data(DataConfig(dataset="toy")).image_size == 8
    assert load_data(DataConfig(dataset="toy", image_size=16)).train_images.shape[1:] == (1, 16, 16)
    digest = sha256(dirs["offline"] / "toy.tar.gz")[:16]  # the cache names once lacked the source's fingerprint
    assert cache_names(dirs) == [f"toy-offline-archive-{digest}-16px.pt", f"toy-offline-archive-{digest}-8px.pt"]


def test_without_offline_copies_torchvision_downloads_into_the_data_dir(dirs, monkeypatch):
    class FakeCIFAR10(list):
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

        def __init__(self, root, train, download):
            assert download and root == str(dirs["data"])
            n = 20 if train else 10
            super().__init__((Image.new("RGB", (32, 32), (i, i, i)), i % 10) for i in range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    # The fake has far fewer images than CIFAR-10, whose official counts are now checked.
    monkeypatch.setitem(DATASETS, "cifar10", replace(DATASETS["cifar10"], num_train=None, num_test=None))
    loaded = load_data(DataConfig(dataset="cifar10"))
    assert loaded.train_images.shape == (20, 3, 32, 32) and loaded.test_labels.tolist() == list(range(10))
    assert loaded.source == "torchvision CIFAR10 (official)"  # where it went is this machine's affair
    assert loaded.classes == FakeCIFAR10.classes
    assert loaded.fingerprint == data_fingerprint(DataConfig(dataset="cifar10")) == "torchvision:CIFAR10"
    assert cache_names(dirs) == ["cifar10-torchvision-CIFAR10-32px.pt"]

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)  # the cache serves without the network
    assert torch.equal(load_data(DataConfig(dataset="cifar10")).train_images, loaded.train_images)


@pytest.mark.parametrize("name, torchvision_class", [("cifar100", "CIFAR100"), ("fashion_mnist", "FashionMNIST")])
def test_a_dataset_found_nowhere_fails_with_one_message_listing_every_way_to_provide_it(
        dirs, monkeypatch, name, torchvision_class):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.datasets, torchvision_class, offline)
    if DATASETS[name].idx_dir:  # Debian's files must not be found either, even where they are installed
        monkeypatch.setitem(DATASETS, name, replace(DATASETS[name], idx_dir=str(dirs["offline"] / "not-installed")))
    with pytest.raises(data.DatasetNotFoundError) as error:
        load_data(DataConfig(dataset=name))
    message = str(error.value)
    for expected in ("PARAFORMER_OFFLINE_DATA", f"{name}.tar.gz", f"{name}/train", "../shared/datasets",
                     "torchvision", str(dirs["data"]), "URLError"):
        assert expected in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion_mnist")
    assert not (dirs["data"] / "cache").exists() or not list((dirs["data"] / "cache").iterdir())


def test_an_unknown_name_is_a_config_error_that_lists_the_known_names(dirs):
    with pytest.raises(ConfigError, match=r"'cifar11'.*cifar10.*ImageFolder.*train/ and test/"):
        load_data(DataConfig(dataset="cifar11"))


# --- ImageFolder directories and idx files ---------------------------------------------------------

def test_an_imagefolder_directory_uses_alphabetical_classes_and_its_own_statistics(dirs, tmp_path):
    files = {k: v for k, v in toy_files().items() if k != "classes.txt"}
    root = write_folder(tmp_path / "my_images", files)
    loaded = load_data(DataConfig(dataset=str(root)))
    assert loaded.name == "my_images" and loaded.classes == sorted(FOLDER_CODES)
    assert loaded.source == f"ImageFolder {root.name}"  # the folder's name: no machine path in any table
    pixels = loaded.train_images.double() / 255
    assert loaded.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-4)
    assert loaded.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-4)


def test_an_imagefolder_with_mixed_image_sizes_needs_an_image_size(dirs, tmp_path):
    root = write_folder(tmp_path / "mixed", toy_files(sizes=(8, 10)))
    with pytest.raises(ConfigError, match="DataConfig.image_size"):
        load_data(DataConfig(dataset=str(root)))
    loaded = load_data(DataConfig(dataset=str(root), image_size=6))
    assert loaded.train_images.shape[1:] == (1, 6, 6) and loaded.classes == OFFICIAL_ORDER


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_official_idx_files_are_read_when_no_offline_copy_exists(dirs, tmp_path, monkeypatch):
    idx_dir = tmp_path / "fashion-mnist"
    idx_dir.mkdir()
    rng = np.random.default_rng(0)
    splits = {"train": (rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10),
              "t10k": (rng.integers(0, 256, (10, 28, 28)), np.arange(10)[::-1] % 10)}
    for prefix, (images, labels) in splits.items():
        write_idx(idx_dir / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(idx_dir / f"{prefix}-labels-idx1-ubyte.gz", labels)
    # Tiny files: without the official counts, which would refuse them.
    monkeypatch.setitem(DATASETS, "fashion_mnist", replace(DATASETS["fashion_mnist"], idx_dir=str(idx_dir),
                                                           num_train=None, num_test=None))
    loaded = load_data(DataConfig(dataset="fashion_mnist"))
    assert torch.equal(loaded.test_images[:, 0], torch.from_numpy(splits["t10k"][0].astype(np.uint8)))
    assert loaded.test_labels.tolist() == splits["t10k"][1].tolist()
    assert loaded.classes[0] == "T-shirt/top" and loaded.source == f"official idx files ({idx_dir.name})"


def test_read_idx_rejects_a_file_that_is_not_unsigned_byte_idx(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\0\0\0\0"))
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        read_idx(tmp_path / "bad.gz")


def test_a_first_decode_shows_its_progress_on_a_terminal_to_the_end_and_nowhere_else(tmp_path, monkeypatch):
    import paraformer.core.datasources as datasources

    bars, shown, updates = [], [], []

    def kept(path, total, unit="B"):
        bars.append(real(path, total, unit))
        shown.append(not bars[-1].disable)  # tqdm marks every bar disabled once closed
        update = bars[-1].update
        bars[-1].update = lambda n: (updates.append(n), update(n))
        return bars[-1]

    real = datasources.decoding_bar
    monkeypatch.setattr(datasources, "decoding_bar", kept)
    # a megabyte of noise ahead of the images: more than gzip reads at once, so that reading moves the bar twice
    archive = write_archive(tmp_path / "toy.tar.gz", "toy", {"notes/noise.bin": os.urandom(1 << 20), **toy_files()})
    folder = write_folder(tmp_path / "toy", toy_files())
    datasources.read_archive(archive, 1, 8)
    datasources.read_folder(folder, 1, 8)
    assert shown == [False, False]  # stderr is no terminal here: no bar in logs, notebooks or tests
    monkeypatch.setattr(datasources, "_is_terminal", lambda stream: True)
    bars.clear(), shown.clear(), updates.clear()
    datasources.read_archive(archive, 1, 8)
    assert shown == [True] and sum(n > 0 for n in updates) >= 2  # it moves while decoding, not once at the end
    datasources.read_folder(folder, 1, 8)
    files = sum(1 for split in ("train", "test") for _ in (folder / split).rglob("*"))  # class folders too
    assert shown == [True, True]
    assert [(bar.n, bar.total) for bar in bars] == [(archive.stat().st_size,) * 2, (files, files)]


@pytest.mark.skipif(not Path("/work/shared/datasets/fashion_mnist.tar.gz").exists(),
                    reason="the shared offline Fashion-MNIST archive is not on this machine")
def test_the_shared_fashion_mnist_archive_is_remapped_to_official_labels():
    # The archive is sorted by name, so its first images are test/Ankle_boot: official label 9, alphabetical 0.
    first = data.read_archive(Path("/work/shared/datasets/fashion_mnist.tar.gz"), 1, 28, limit=5)
    assert first["classes"][0] == "T-shirt_top" and first["classes"][9] == "Ankle_boot"
    assert first["test_labels"].tolist() == [9] * 5 and first["test_images"].shape == (5, 1, 28, 28)


# --- fingerprints: what identifies the pixels, and keys the cache ------------------------------------

def test_a_replaced_offline_archive_is_decoded_again_not_served_from_the_cache(dirs):
    archive = write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    first = load_data(DataConfig(dataset="toy"))
    assert first.fingerprint == data_fingerprint(DataConfig(dataset="toy")) == f"offline-archive:{sha256(archive)}"
    write_archive(archive, "toy", toy_files(first_id=100))  # the same file names, other pixels
    second = load_data(DataConfig(dataset="toy"))
    assert second.fingerprint == f"offline-archive:{sha256(archive)}" != first.fingerprint
    assert ids(second.train_images) == {i + 100 for i in ids(first.train_images)}


def as_bmp(files: dict[str, bytes]) -> dict[str, bytes]:
    """The images of `files` as BMP: uncompressed, so the file size does not depend on the pixels."""
    converted = {}
    for name, content in files.items():
        if name.endswith(".png"):
            buffer = io.BytesIO()
            Image.open(io.BytesIO(content)).save(buffer, "BMP")
            name, content = name[:-4] + ".bmp", buffer.getvalue()
        converted[name] = content
    return converted


def test_replacing_the_images_of_an_imagefolder_gives_another_fingerprint_and_the_new_pixels(dirs, tmp_path):
    files = as_bmp({k: v for k, v in toy_files().items() if k != "classes.txt"})
    root = write_folder(tmp_path / "my_images", files)
    config = DataConfig(dataset=str(root))
    first = load_data(config)
    assert first.fingerprint == data_fingerprint(config) and first.fingerprint.partition(":")[0] == "image-folder"
    # The hardest case for a listing: same names, same sizes and the old mtimes, as `tar -x` or `cp -p` leave them.
    replacement = as_bmp(toy_files(first_id=100))
    for name in files:
        if name.startswith("train/"):
            old = (root / name).stat()
            (root / name).write_bytes(replacement[name])
            os.utime(root / name, ns=(old.st_atime_ns, old.st_mtime_ns))
            assert (root / name).stat().st_size == old.st_size
    second = load_data(config)
    assert second.fingerprint == data_fingerprint(config) != first.fingerprint
    assert ids(second.train_images) == {i + 100 for i in ids(first.train_images)}
    assert torch.equal(second.test_images, first.test_images)


def write_idx_dir(directory: Path, n_train: int, n_test: int) -> Path:
    directory.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return directory


def test_each_kind_of_source_has_its_own_fingerprint_and_a_file_is_hashed_once(dirs, tmp_path, monkeypatch):
    def kind(name):
        return data_fingerprint(DataConfig(dataset=name)).partition(":")[0]

    archive = write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    expected = f"offline-archive:{sha256(archive)}"
    assert data_fingerprint(DataConfig(dataset="toy")) == expected
    with monkeypatch.context() as patch:
        patch.setattr(datasources.hashlib, "sha256", None)  # hashing the archive again would fail
        assert data_fingerprint(DataConfig(dataset="toy")) == expected
    archive.unlink()
    write_folder(dirs["shared"] / "toy", toy_files())
    assert kind("toy") == "offline-folder"
    idx_dir = write_idx_dir(tmp_path / "fashion-mnist", 20, 10)
    monkeypatch.setitem(DATASETS, "fashion_mnist", replace(DATASETS["fashion_mnist"], idx_dir=str(idx_dir)))
    before = data_fingerprint(DataConfig(dataset="fashion_mnist"))
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.arange(10)[::-1] % 10)
    after = data_fingerprint(DataConfig(dataset="fashion_mnist"))
    assert before.partition(":")[0] == after.partition(":")[0] == "idx" and before != after
    assert data_fingerprint(DataConfig(dataset="cifar100")) == "torchvision:CIFAR100"


# --- damaged, partial or inconsistent sources are refused ------------------------------------------------

def test_a_truncated_archive_is_an_error_not_a_smaller_dataset(dirs, tmp_path):
    whole = write_archive(tmp_path / "whole.tar.gz", "toy", toy_files()).read_bytes()
    archive = dirs["offline"] / "toy.tar.gz"
    # Cuts everywhere, including in gzip's trailer, where tarfile's own stream reader sees nothing wrong.
    for length in [len(whole) * k // 10 for k in range(1, 10)] + [len(whole) - 20, len(whole) - 4]:
        archive.write_bytes(whole[:length])
        with pytest.raises(DataIntegrityError) as error:
            load_data(DataConfig(dataset="toy"))
        assert (error.value.path, error.value.problem) == (archive, "unreadable")
    assert not (dirs["data"] / "cache").exists()


def test_an_archive_that_does_not_match_its_checksums_file_is_refused_even_when_cached(dirs):
    archive = write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    load_data(DataConfig(dataset="toy"))  # cached before any checksums file existed
    listing = dirs["offline"] / "checksums.sha256"
    wrong = "0" * 64
    listing.write_text(f"{sha256(archive)}  other.tar.gz\n{wrong}  toy.tar.gz\n")
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset="toy"))
    assert (error.value.path, error.value.problem) == (archive, "checksum")
    assert error.value.details == {"expected": wrong, "actual": sha256(archive)}
    listing.write_text(f"{sha256(archive)} *toy.tar.gz\n")  # sha256sum's binary-mode line
    assert len(load_data(DataConfig(dataset="toy")).train_labels) == 18
    listing.write_text(f"{wrong}  other.tar.gz\n")  # a list without this archive checks nothing
    assert len(load_data(DataConfig(dataset="toy")).train_labels) == 18


def test_other_image_counts_than_the_official_ones_are_refused_from_any_source(dirs, tmp_path, monkeypatch):
    archive = write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    monkeypatch.setitem(DATASETS, "toy", replace(TOY, num_train=18, num_test=10))
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset="toy"))
    assert (error.value.path, error.value.problem) == (archive, "count")
    assert error.value.details == {"split": "test", "expected": 10, "found": 9}
    assert not (dirs["data"] / "cache").exists()  # a refused dataset is not cached either

    idx_dir = write_idx_dir(tmp_path / "fashion-mnist", 20, 10)
    monkeypatch.setitem(DATASETS, "fashion_mnist", replace(DATASETS["fashion_mnist"], idx_dir=str(idx_dir)))
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset="fashion_mnist"))
    assert error.value.path == idx_dir / "train-images-idx3-ubyte.gz"
    assert error.value.details == {"split": "train", "expected": 60_000, "found": 20}

    class FakeCIFAR10(list):
        classes = [str(k) for k in range(10)]

        def __init__(self, root, train, download):
            super().__init__((Image.new("RGB", (32, 32)), i % 10) for i in range(20 if train else 10))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset="cifar10"))
    assert error.value.path == dirs["data"]
    assert error.value.details == {"split": "train", "expected": 50_000, "found": 20}


def test_every_class_needs_images_in_the_train_and_the_test_split(dirs, tmp_path):
    files = {k: v for k, v in toy_files().items() if k != "classes.txt"}
    for missing, split, name in (("train/mango/", "train", "only_in_test"), ("test/apple/", "test", "only_in_train")):
        root = write_folder(tmp_path / name, {k: v for k, v in files.items() if not k.startswith(missing)})
        with pytest.raises(DataIntegrityError) as error:
            load_data(DataConfig(dataset=str(root)))
        assert (error.value.path, error.value.problem) == (root, "empty-class")
        assert error.value.details == {"split": split, "classes": [missing.split("/")[1]]}
    # A registry archive whose classes.txt names a class that has no test images.
    archive = write_archive(dirs["offline"] / "toy.tar.gz", "toy",
                            {k: v for k, v in toy_files().items() if not k.startswith("test/zebra/")})
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset="toy"))
    assert (error.value.path, error.value.details) == (archive, {"split": "test", "classes": ["zebra"]})


def test_an_undecodable_image_is_an_error_naming_the_file(dirs, tmp_path):
    files = toy_files()
    files["train/apple/0001.png"] = b"not an image"
    archive = write_archive(dirs["offline"] / "toy.tar.gz", "toy", files)
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset="toy"))
    assert (error.value.path, error.value.member, error.value.problem) == (archive, "train/apple/0001.png",
                                                                         "undecodable")
    root = write_folder(tmp_path / "broken", files)
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset=str(root)))
    assert (error.value.path, error.value.member) == (root / "train/apple/0001.png", None)


def test_test_images_of_another_native_size_than_the_train_images_need_an_image_size(dirs, tmp_path):
    files = {k: v for k, v in toy_files().items() if k.startswith("train/")}
    files.update({k: v for k, v in toy_files(sizes=(10,)).items() if k.startswith("test/")})
    root = write_folder(tmp_path / "two_sizes", files)
    with pytest.raises(ImageSizeError) as error:
        load_data(DataConfig(dataset=str(root)))
    assert error.value.sizes == {"train": (8, 8), "test": (10, 10)} and error.value.path == root
    assert isinstance(error.value, ConfigError)  # the fix is a DataConfig setting
    assert load_data(DataConfig(dataset=str(root), image_size=8)).test_images.shape[1:] == (1, 8, 8)


def test_the_channels_of_a_registry_dataset_are_its_own(dirs):
    write_archive(dirs["offline"] / "toy.tar.gz", "toy", toy_files())
    with pytest.raises(ConfigError):
        load_data(DataConfig(dataset="toy", channels=3))
    assert load_data(DataConfig(dataset="toy", channels=1)).in_channels == 1


# --- image kinds: bit depth, greyscale and colour, alpha ------------------------------------------------

def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(dirs, tmp_path):
    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    values[0, :4] = (128, 129, 32768, 65407)  # round(x / 257): 0.498 -> 0, 0.502 -> 1, 127.5 -> 128, 254.5 -> 255
    root = write_folder(tmp_path / "sixteen_bit", {f"{split}/{folder}/0.png": png(values)
                                                   for split in ("train", "test") for folder in ("a", "b")})
    assert Image.open(root / "train/a/0.png").mode == "I;16"  # what Pillow makes of a 16-bit PNG
    loaded = load_data(DataConfig(dataset=str(root)))
    expected = torch.tensor([[round(v / 257) for v in row] for row in values.tolist()], dtype=torch.uint8)
    assert expected[0, :4].tolist() == [0, 1, 128, 255] and expected.max() == 255
    for image in torch.cat([loaded.train_images, loaded.test_images]):
        assert torch.equal(image[0], expected)
    assert loaded.source == f"ImageFolder {root.name} (4 of 4 images scaled from 16 to 8 bits)"  # not lossless


@pytest.mark.parametrize("dtype, mode", [(np.int32, "I"), (np.float32, "F")])
def test_32_bit_and_float_greyscale_are_refused_naming_the_file(dirs, tmp_path, dtype, mode):
    files = {k: v for k, v in toy_files().items() if k != "classes.txt"}
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 1000, dtype=dtype)).save(buffer, "TIFF")
    files["test/mango/0001.tif"] = buffer.getvalue()
    root = write_folder(tmp_path / "deep", files)
    assert Image.open(root / "test/mango/0001.tif").mode == mode
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset=str(root)))
    assert (error.value.path, error.value.problem, error.value.details) == (
        root / "test/mango/0001.tif", "unsupported-mode", {"mode": mode})


def rgba(rgb: tuple[int, int, int], alpha: int = 255, size: int = 8) -> np.ndarray:
    return np.dstack([np.full((size, size), v, dtype=np.uint8) for v in (*rgb, alpha)])


def test_mixed_greyscale_and_colour_images_need_channels_which_converts_every_image(dirs, tmp_path):
    files = {k: v for k, v in toy_files().items() if k != "classes.txt"}
    odd = "train/apple/0002.png"
    files[odd] = png(rgba((20, 200, 90)))  # one colour image (opaque RGBA) among 26 greyscale ones
    root = write_folder(tmp_path / "mixed_kinds", files)
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset=str(root)))
    assert (error.value.path, error.value.problem) == (root, "mixed-kinds")
    assert error.value.details == {"greyscale": 26, "colour": 1, "examples": [odd]}

    grey, colour = (load_data(DataConfig(dataset=str(root), channels=c)) for c in (1, 3))
    luma = Image.new("RGB", (1, 1), (20, 200, 90)).convert("L").getpixel((0, 0))
    assert grey.train_images.shape[1] == 1 and (grey.train_images[2] == luma).all()  # apple is class 0
    assert colour.train_images.shape[1] == 3 and colour.train_images[2, :, 4, 4].tolist() == [20, 200, 90]
    assert colour.train_images[0, :, 4, 4].tolist() == [FOLDER_CODES["apple"]] * 3
    assert grey.source == f"ImageFolder {root.name} (1 of 27 images converted to greyscale)"
    assert colour.source == f"ImageFolder {root.name} (26 of 27 images converted to RGB)"


def test_opaque_alpha_is_dropped_and_transparent_pixels_are_refused(dirs, tmp_path):
    files = {f"{split}/{folder}/0.png": png(rgba((30, 60, 90 + k)))
             for split in ("train", "test") for k, folder in enumerate("ab")}
    root = write_folder(tmp_path / "alpha", files)
    loaded = load_data(DataConfig(dataset=str(root)))
    assert loaded.in_channels == 3 and loaded.train_images[:, :, 0, 0].tolist() == [[30, 60, 90], [30, 60, 91]]
    see_through = rgba((30, 60, 91))
    see_through[3, 5, 3] = 0
    (root / "test/b/0.png").write_bytes(png(see_through))
    with pytest.raises(DataIntegrityError) as error:
        load_data(DataConfig(dataset=str(root)))
    assert (error.value.path, error.value.problem) == (root / "test/b/0.png", "transparent")


# --- batches ----------------------------------------------------------------------------------------

def test_normalize_gives_float32_in_units_of_the_channel_std():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    x = normalize(images, mean=(0.5, 0.5, 0.0), std=(0.5, 0.25, 1.0))
    assert x.dtype == torch.float32 and x[:, :, 0, 0].tolist() == [[1.0, 2.0, 1.0]] * 2
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(images, mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("augment", [(), ("flip",), ("crop",), ("randaugment",), ("flip", "crop", "randaugment")])
def test_augmentation_keeps_shape_and_dtype(augment, channels):
    images = torch.randint(0, 256, (4, channels, 16, 16), dtype=torch.uint8)
    out = augment_batch(images, augment, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    if not augment:
        assert torch.equal(out, images)


def test_flip_and_crop_are_reproducible_with_the_same_generator_seed():
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    first = augment_batch(images, ("flip", "crop"), torch.Generator().manual_seed(7))
    assert torch.equal(first, augment_batch(images, ("flip", "crop"), torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment_batch(images, ("flip", "crop"), torch.Generator().manual_seed(8)))


def test_flip_mirrors_some_images_and_leaves_the_others_untouched():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, ("flip",), torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_crop_is_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (16, 3, 16, 16), dtype=torch.uint8)
    out = augment_batch(images, ("crop",), torch.Generator().manual_seed(0))
    pad = crop_padding(16)
    padded = torch.nn.functional.pad(images, (pad,) * 4)
    for o, p in zip(out, padded):
        assert any(torch.equal(o, p[:, dy:dy + 16, dx:dx + 16]) for dy in range(2 * pad + 1)
                   for dx in range(2 * pad + 1))
    assert (out == 0).any()  # some windows reach into the zero padding


def test_an_unknown_augmentation_is_a_config_error():
    with pytest.raises(ConfigError, match="'mixup'"):
        augment_batch(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), ("mixup",), torch.Generator())


def test_crop_padding_is_an_eighth_of_the_image_size():
    assert [crop_padding(size) for size in (32, 28, 96, 8, 224)] == [4, 4, 12, 1, 28]


def test_an_8x8_crop_shifts_by_at_most_one_pixel():
    images = (torch.arange(64, dtype=torch.uint8) + 1).view(1, 1, 8, 8).repeat(256, 1, 1, 1)  # 1 + 8 row + column
    out = augment_batch(images, ("crop",), torch.Generator().manual_seed(0))
    shifts = set()
    for o in out[:, 0]:
        rows, cols = torch.nonzero(o, as_tuple=True)
        source = o[rows, cols].long() - 1
        dy, dx = set((source // 8 - rows).tolist()), set((source % 8 - cols).tolist())
        assert len(dy) == len(dx) == 1  # one shift per image
        shifts.add((dy.pop(), dx.pop()))
    assert shifts == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert torch.equal(augment_batch(images[:1], ("crop",), torch.Generator(), crop_pad=0), images[:1])
