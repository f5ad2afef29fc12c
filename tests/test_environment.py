"""The environment: torch and torchvision must match, or torchvision's compiled operators fail to load; and the
installed packages are the versions constraints.txt pins, unless `make env CONSTRAINTS=` installed newer ones."""

import os
import re
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import torch
import torchvision

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def test_torchvision_compiled_ops_load_with_this_torch():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.5)
    assert kept.tolist() == [0]


def normalized(name: str) -> str:
    """PEP 503: pip freeze writes jupyter_server, the metadata may say jupyter-server."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """Package -> version of every `name==version` line; any other requirement line is an error."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;=<>!~]+)", line)
        assert match, f"not an exact pin: {line!r}"
        found[normalized(match[1])] = match[2]
    return found


def test_constraints_pin_torch_and_torchvision_exactly():
    pinned = pins(CONSTRAINTS)
    assert {"torch", "torchvision"} <= set(pinned)


@pytest.mark.skipif(os.environ.get("PARAFORMER_UNPINNED") == "1",
                    reason="PARAFORMER_UNPINNED=1: installed without constraints.txt (make env CONSTRAINTS=)")
def test_installed_versions_are_the_pinned_ones():
    # what pip installed, in the environment's own site-packages: sys.path can also hold vendored copies (importing
    # torch's cpp_extension, as torch.compile does on the CPU, puts setuptools/_vendor on it, with its own packaging)
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {normalized(d.metadata["Name"]): d.version for d in metadata.distributions(path=site)
                 if d.metadata["Name"]}
    # A pin installs nothing, so packages only other platforms need (nvidia-* outside Linux) may be absent.
    different = {name: (version, installed[name]) for name, version in pins(CONSTRAINTS).items()
                 if name in installed and installed[name] != version}
    assert different == {}
    assert {"torch", "torchvision"} <= set(installed)


# A GPU machine may have only torch, pandas, matplotlib, scipy and tqdm: training, the sweeps and the benchmarks
# must import and run there, from offline copies of the data. torchvision (downloads, RandAugment, the pretrained
# ViT of notebook 07), the notebook tools, timm and tensorboard are each imported only where they are used.
_WITHOUT_EXTRAS = """
import sys, importlib.abc
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torchvision", "papermill", "nbval", "nbformat", "IPython", "timm", "tensorboard"}:
            raise ImportError("not installed here: " + name)
sys.meta_path.insert(0, Missing())
import torch
import paraformer.bench.speed, paraformer.bench.costmodel, paraformer.bench.multi, paraformer.bench.throughput
import paraformer.experiments.layer_sweep, paraformer.experiments.depth_sweep, paraformer.experiments.versus_vit
import paraformer.experiments.compression, paraformer.experiments.expansion, paraformer.experiments.speedup
import paraformer.experiments.layer_parallel, paraformer.experiments.report, paraformer.experiments.display
from paraformer.core.config import DataConfig, ModelConfig, Recipe
from paraformer.core.data import ImageData
from paraformer.training import train
g = torch.Generator().manual_seed(0)
images = torch.randint(0, 255, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
labels = torch.arange(64) % 2
data = ImageData("toy", images, labels, images[:0], labels[:0], images, labels, ["a", "b"], (0.5,) * 3, (0.2,) * 3,
                 "synthetic")
model = ModelConfig(image_size=8, patch_size=4, width=16, num_heads=2, num_layers=2, num_classes=2)
result = train(model, DataConfig("toy"), Recipe(epochs=1, batch_size=32), data=data, results_root=sys.argv[1],
               progress=False)
print(len(result.history), "torchvision" in sys.modules)
"""


def test_training_needs_neither_torchvision_nor_the_notebook_tools(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "False"]
