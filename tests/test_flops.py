"""FLOPs per image and per run (paraformer.flops), against counts written out by hand.

A tiny model: 4x4 one-channel images in 2x2 patches (4 patches + the CLS token = 5 tokens), width 8, one head,
MLP 16, 3 classes. Every product (m x k)·(k x n) costs 2·m·n·k FLOPs; nothing else counts.
"""

from dataclasses import asdict, replace

import pytest
import torch

from paraformer.core import flops
from paraformer.core.config import ConfigError, ModelConfig, Recipe
from paraformer.core.model import ParaFormer
from paraformer.core.runcache import RunResult

P, T, C, PATCH, W, HID, K = 4, 5, 1, 2, 8, 16, 3


def mm(m: int, k: int, n: int) -> int:
    return 2 * m * n * k


STEM = mm(P, C * PATCH * PATCH, W)  # the patch projection: 256
FULL_LAYER = (mm(T, W, 3 * W)  # q, k, v of every token: 1920
              + mm(T, W, T) + mm(T, T, W)  # scores q·kᵀ, then attention x v (one head of width 8): 400 + 400
              + mm(T, W, W)  # output projection: 640
              + mm(T, W, HID) + mm(T, HID, W))  # MLP: 1280 + 1280
# A branch's last layer: the query of the CLS token alone, but keys and values of every token.
Q_CLS, KV_ALL = mm(1, W, W), mm(T, W, 2 * W)  # 128, 1280
CLS_REST = (mm(1, W, T) + mm(1, T, W)  # scores and mixing of the CLS row: 80 + 80
            + mm(1, W, W)  # projection: 128
            + mm(1, W, HID) + mm(1, HID, W))  # MLP: 256 + 256
CLS_LAYER = Q_CLS + KV_ALL + CLS_REST  # 2208
HEAD = mm(1, W, K)  # 48


def tiny(depth: int, layers: int, **fields) -> ModelConfig:
    return ModelConfig(image_size=4, in_channels=C, patch_size=PATCH, width=W, num_heads=1, mlp_ratio=2.0,
                       branch_depth=depth, num_layers=layers, num_classes=K, **fields)


def test_the_hand_count_adds_up_as_written():
    # the constants above, as numbers, so that a slip in the formulas shows here rather than as a "match"
    assert (STEM, FULL_LAYER, CLS_LAYER, HEAD) == (256, 5920, 2208, 48)


def test_inference_of_a_two_layer_vit_is_the_stem_a_full_layer_a_cls_only_layer_and_the_head():
    assert flops.inference_flops_per_image(tiny(2, 2)) == STEM + FULL_LAYER + CLS_LAYER + HEAD


def test_depth_one_branches_compute_only_the_cls_row_of_their_one_layer():
    count = flops.inference_flops_per_image(tiny(1, 3))
    assert count == STEM + 3 * CLS_LAYER + HEAD  # 6928
    assert count < STEM + 3 * FULL_LAYER + HEAD  # what a model computing every token's output would cost


# Training, backward as the counter measures it: the gradient of each operand of a product that needs one, each as
# costly as the forward product. The images need no gradient, so the patch projection's backward is its weights'.
STEM_TRAIN = STEM + STEM
BRANCH_TRAIN = 3 * CLS_LAYER  # depth 1: every product has a learning weight (or two learning operands)
HEAD_TRAIN = 3 * HEAD


def test_a_joint_step_is_forward_plus_twice_forward_less_the_images_gradient():
    model = tiny(1, 3)
    assert flops.training_flops_per_image(model) == STEM_TRAIN + 3 * BRANCH_TRAIN + HEAD_TRAIN
    assert flops.training_flops_per_image(tiny(2, 2)) == 3 * (STEM + FULL_LAYER + CLS_LAYER + HEAD) - STEM
    # a prefix of the model is that many branches of it
    assert flops.training_flops_per_image(model, num_branches=2) == STEM_TRAIN + 2 * BRANCH_TRAIN + HEAD_TRAIN


@pytest.mark.parametrize("m", [1, 3, 4])
def test_the_authors_method_costs_m_m_plus_1_over_2_plus_m_branch_passes_against_m_for_joint(m):
    model = tiny(1, m)
    joint = flops.training_flops_per_image(model, "joint")
    authors = flops.training_flops_per_image(model, "authors")
    # pass 1 recomputes the stem and the head at each of its m steps, pass 2 once more: m + 1 of each, exactly
    shared = STEM_TRAIN + HEAD_TRAIN
    assert joint == shared + m * BRANCH_TRAIN
    assert authors == (m + 1) * shared + (m * (m + 1) // 2 + m) * BRANCH_TRAIN
    # so, net of the stem and head, the ratio is exactly the ratio of branch passes
    assert (authors - (m + 1) * shared) * m == (m * (m + 1) // 2 + m) * (joint - shared)


def test_prefix_training_is_one_forward_and_backward_with_a_head_per_prefix():
    assert flops.training_flops_per_image(tiny(1, 3), "prefix") == STEM_TRAIN + 3 * BRANCH_TRAIN + 3 * HEAD_TRAIN


# A stage that trains branch k alone: the stem and branches 1..k-1 run forward only, without gradient, and the
# fixed head passes the gradient to its input only. Branch k's products all backpropagate to both operands: its
# input is fixed, but its own LayerNorms learn, so what enters its q and kv products needs a gradient.
NEW_BRANCH_TRAIN = BRANCH_TRAIN
FIXED_HEAD_TRAIN = 2 * HEAD


def test_a_frozen_stage_costs_the_forward_of_what_is_fixed_and_the_training_of_its_branch():
    model = tiny(1, 3)
    assert flops.training_flops_per_image(model, "frozen", num_branches=1) == STEM_TRAIN + BRANCH_TRAIN + HEAD_TRAIN
    for k in (2, 3):
        expected = STEM + (k - 1) * CLS_LAYER + NEW_BRANCH_TRAIN + FIXED_HEAD_TRAIN
        assert flops.training_flops_per_image(model, "frozen", num_branches=k) == expected
    assert flops.training_flops_per_image(model, "frozen") == flops.training_flops_per_image(model, "frozen", 3)
    with pytest.raises(ConfigError, match="no stage with 4 active branches"):
        flops.training_flops_per_image(model, "frozen", num_branches=4)


def test_a_run_costs_each_stage_per_image_times_images_times_epochs():
    model, recipe = tiny(1, 3), Recipe(epochs=5)
    assert flops.run_training_flops(model, recipe, n_train=90) == 90 * 5 * flops.training_flops_per_image(model)
    frozen = replace(recipe, method="frozen")  # three stages of 5 epochs each
    per_epoch = sum(flops.training_flops_per_image(model, "frozen", k) for k in (1, 2, 3))
    assert flops.run_training_flops(model, frozen, n_train=90) == 90 * 5 * per_epoch
    with pytest.raises(ConfigError, match="needs recipe= and n_train="):
        flops.run_training_flops(model, recipe)


def run_result(model: ModelConfig, recipe: Recipe, parent: dict | None = None) -> RunResult:
    config = {"model": asdict(model), "recipe": asdict(recipe),
              "data": {"dataset": "cifar10", "n_train": 100, "n_test": 50, "val_fraction": 0.1}}
    if parent:
        config["parent"] = parent
    return RunResult(name="r", key="k", config=config, history=[], final_test_acc=0.0, num_params=0,
                     wall_seconds=0.0, device="cpu", data_source="-", code_version="-", torch_version="-",
                     finished_at="-")


def test_a_recorded_run_is_costed_from_its_config():
    model, recipe = tiny(1, 3), Recipe(epochs=4, method="authors")
    # 100 training images less the 10% validation share
    assert flops.run_training_flops(run_result(model, recipe)) == 90 * 4 * flops.training_flops_per_image(model,
                                                                                                         "authors")


def test_a_grown_run_pays_the_forward_of_what_it_inherited_and_trains_the_new_branch_alone():
    parent, model = tiny(1, 1), tiny(1, 1).expanded(1)
    recipe = Recipe(epochs=2, freeze_inherited=True)
    grown = run_result(model, recipe, parent={"name": "p", "key": "pk"})
    expected = STEM + CLS_LAYER + NEW_BRANCH_TRAIN + FIXED_HEAD_TRAIN
    assert flops.run_training_flops(grown, parent=parent) == 90 * 2 * expected
    # without its parent, what learned is unknown: the parent's record is looked for, and its absence said
    with pytest.raises(ConfigError, match="pass parent="):
        flops.run_training_flops(grown, results_root="/nonexistent")
    # every parameter learning: the parent changes nothing
    assert flops.run_training_flops(run_result(model, replace(recipe, freeze_inherited=False))) == \
        90 * 2 * flops.training_flops_per_image(model)


def test_the_counter_sees_attention_on_the_cpu_too():
    # real tensors on the CPU, where torch's fused attention kernel would be invisible to the counter
    model = tiny(2, 2)
    net = ParaFormer(model)
    x = torch.zeros(1, C, 4, 4)
    with torch.no_grad():
        assert flops.count_flops(lambda: net(x)) == STEM + FULL_LAYER + CLS_LAYER + HEAD
