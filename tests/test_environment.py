"""The environment: torch and torchvision must match, or torchvision's compiled operators fail to load."""

import torch
import torchvision


def test_torchvision_compiled_ops_load_with_this_torch():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.5)
    assert kept.tolist() == [0]
