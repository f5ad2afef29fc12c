"""The environment: torch and torchvision must match, or torchvision's compiled operators fail to load; and the
installed packages are the versions constraints.txt pins, unless `make env CONSTRAINTS=` installed newer ones."""

import os
import re
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
    installed = {normalized(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    # A pin installs nothing, so packages only other platforms need (nvidia-* outside Linux) may be absent.
    different = {name: (version, installed[name]) for name, version in pins(CONSTRAINTS).items()
                 if name in installed and installed[name] != version}
    assert different == {}
    assert {"torch", "torchvision"} <= set(installed)
