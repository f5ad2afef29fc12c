"""The authors' variant (`ModelConfig.as_authors()`, `Recipe.authors()`) computes what their public code computes.

The reference numbers in tests/fixtures/authors_*.pt were made by running their code (GitHub
DUAT-Maker/Shallow-Paraformer, model at commit 7aa4532, training script at cb830b6) with
tests/fixtures/make_authors_fixture.py; their code is not part of this project.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paraformer.core.authors_augment import OPERATIONS, apply_operation, authors_randaugment, operation_value
from paraformer.core.config import AUTHORS_MODEL, ModelConfig, Recipe
from paraformer.core.data import DataConfig, ImageData, augment_batch, resize_images
from paraformer.core.model import ParaFormer
from paraformer.core.runcache import Initialization, load_trained_model, run_paths, step_log_path
from paraformer.core.runlog import read_step_log
from paraformer.training.trainer import train

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def randaugment_cases():
    return torch.load(FIXTURES / "authors_randaugment.pt", weights_only=True)


@pytest.fixture(scope="module")
def training_fixture():
    return torch.load(FIXTURES / "authors_training.pt", weights_only=True)


def test_every_operation_of_their_randaugment_matches_their_code_pixel_for_pixel(randaugment_cases):
    cases, magnitude = randaugment_cases["cases"], randaugment_cases["magnitude"]
    compared = set()
    for (channels, name, sign), theirs in cases.items():
        if name in ("input", "corners"):
            continue
        images = cases[(channels, "input", 0)]
        ours = apply_operation(name, images, operation_value(name, magnitude), torch.full((len(images),), float(sign)),
                               cases[(channels, "corners", 0)])
        assert torch.equal(ours, theirs), (channels, name, sign)
        compared.add((channels, name))
    # every operation of their list, on colour and on greyscale images (which never get Cutout)
    assert compared == {(3, op[0]) for op in OPERATIONS} | {(1, op[0]) for op in OPERATIONS[:-1]}


def test_their_magnitude_14_gives_their_values():
    """The values that make their recipe what it is: translations of 46.7 px on a 32 px image, 1-bit posterize."""
    assert operation_value("TranslateXabs", 14) == pytest.approx(46.667, abs=1e-3)
    assert operation_value("CutoutAbs", 14) == pytest.approx(18.667, abs=1e-3)
    assert int(operation_value("Posterize", 14)) == 1
    assert operation_value("Solarize", 14) == pytest.approx(119.467, abs=1e-3)


def test_their_randaugment_blanks_about_a_quarter_of_32_px_images():
    """2 draws from 16 operations, 2 of them translations of +-46.7 px: a 32 px image drawn a translation leaves
    the frame entirely, 1 - (14/16)^2 = 23% of them (the issue's "about 23%"). What is left is one flat colour
    (pixelwise operations keep it flat), unless Cutout draws its square on it afterwards."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4000, 3, 32, 32), generator=g, dtype=torch.uint8)
    out = authors_randaugment(images, 14, torch.Generator().manual_seed(1))
    flat = out.view(len(out), -1).float().std(1) == 0
    assert 0.20 < flat.float().mean().item() < 0.25


def test_the_resize_is_pils_bilinear_resize_bit_for_bit(randaugment_cases):
    """Their pipeline resizes the 32 px PIL image to 224 with torchvision's Resize, i.e. PIL's bilinear resize."""
    Image = pytest.importorskip("PIL.Image")
    images = randaugment_cases["cases"][(3, "input", 0)]
    for size in (224, 40):
        theirs = torch.stack([torch.from_numpy(np.array(Image.fromarray(im.permute(1, 2, 0).numpy())
                                                        .resize((size, size), Image.BILINEAR))).permute(2, 0, 1)
                              for im in images])
        assert torch.equal(resize_images(images, size), theirs)


def test_the_authors_model_is_initialized_as_their_code_initializes_it():
    """N(0, 1) position embedding and CLS token; PyTorch's default Linear init, bounded by 1/sqrt(fan_in)."""
    config = ModelConfig(image_size=32, patch_size=4, width=48, num_heads=3, num_layers=4).as_authors()
    torch.manual_seed(0)
    model = ParaFormer(config)
    assert 0.9 < model.pos_embed.std().item() < 1.1
    qkv = model.branches[0][0].attn.qkv
    assert qkv.bias is None and qkv.weight.shape == (3 * 3 * 64, 48)  # 3 heads of 64 whatever the width
    assert qkv.weight.abs().max().item() <= 48 ** -0.5
    assert qkv.weight.abs().max().item() > 0.9 * 48 ** -0.5  # uniform up to the bound, not a 0.02 normal


def their_weights_as_ours(state: dict, patch: int) -> dict:
    """Their parameter names and patch-projection layout (a Linear over (p1 p2 c)) in ours (a Conv2d)."""
    ours = {"pos_embed": state["pos_embedding"], "cls_token": state["cls_token"],
            "norm.weight": state["mlp_head.0.weight"], "norm.bias": state["mlp_head.0.bias"],
            "head.weight": state["mlp_head.1.weight"], "head.bias": state["mlp_head.1.bias"],
            "patch_embed.bias": state["to_patch_embedding.1.bias"]}
    weight = state["to_patch_embedding.1.weight"]
    ours["patch_embed.weight"] = weight.view(weight.shape[0], patch, patch, -1).permute(0, 3, 1, 2).contiguous()
    names = {"0.norm": "norm1", "0.fn.to_qkv": "attn.qkv", "0.fn.to_out.0": "attn.proj", "1.norm": "norm2",
             "1.fn.net.0": "mlp.fc1", "1.fn.net.3": "mlp.fc2"}
    for key, value in state.items():
        if not key.startswith("paraformerbranches.branches."):
            continue
        # paraformerbranches.branches.<branch>.<sub-layer>.<module>.<weight|bias>: sub-layers alternate attention, MLP
        branch, sublayer, *module, kind = key.split(".")[2:]
        layer, which = divmod(int(sublayer), 2)
        ours[f"branches.{branch}.{layer}.{names[f'{which}.' + '.'.join(module)]}.{kind}"] = value
    return ours


def test_their_training_loop_and_our_authors_variant_agree_step_for_step(training_fixture, tmp_path):
    """Their model, their initial weights and their loop (fp32 on the CPU, no augmentation or dropout: their
    draws come from Python's and numpy's generators) against ours from the same weights on the same minibatches:
    every optimizer step's loss and the final weights agree to float rounding. Their fp16 GradScaler is CUDA's and
    is compared nowhere: on the CPU both loops are fp32."""
    fx = training_fixture
    shape = fx["shape"]
    config = ModelConfig(image_size=shape["input_image_size"], patch_size=shape["patch_size"], width=shape["dim_X"],
                         num_heads=shape["num_heads"], mlp_ratio=shape["dim_MLP"] / shape["dim_X"],
                         num_branches=shape["num_branches"], branch_depth=shape["branch_depth"],
                         num_classes=shape["num_classes_to_predict"], **AUTHORS_MODEL)
    images, labels = fx["images"], fx["labels"]
    data = ImageData(name="authors-fixture", train_images=images, train_labels=labels, val_images=images[:0],
                     val_labels=labels[:0], test_images=images[:8], test_labels=labels[:8],
                     classes=[str(c) for c in range(10)], mean=(0.3,) * 3, std=(0.3,) * 3, source="fixture")
    recipe = Recipe.authors(fx["epochs"], batch_size=fx["batch_size"], method="authors", augment=(), seed=fx["seed"])
    init = Initialization("the authors' code under torch.manual_seed(0)",
                          their_weights_as_ours(fx["initial"], shape["patch_size"]))
    result = train(config, DataConfig(dataset="authors-fixture"), recipe, data=data, init=init, results_root=tmp_path,
                   progress=False, log_every=1)
    steps = read_step_log(step_log_path(run_paths(result.name, result.key, tmp_path)[0]))
    assert len(steps) == len(fx["losses"]) == fx["epochs"] * 4 * (shape["num_branches"] + 1)
    np.testing.assert_allclose(steps["loss"].to_numpy(), fx["losses"].numpy(), rtol=2e-6)
    final = load_trained_model(result, tmp_path).state_dict()
    theirs = their_weights_as_ours(fx["final"], shape["patch_size"])
    assert set(final) == set(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(final[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_the_batch_wide_form_that_never_waits_for_a_gpu_gives_the_same_pixels():
    """Off the CPU every operation runs on the whole batch and each image keeps its own (no data-dependent shape,
    so no wait for the device); on the CPU only the images that drew it. The same draws give the same pixels."""
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    by_index = authors_randaugment(images, 14, torch.Generator().manual_seed(5), masked=False)
    by_mask = authors_randaugment(images, 14, torch.Generator().manual_seed(5), masked=True)
    assert torch.equal(by_index, by_mask) and not torch.equal(by_index, images)


def test_fp16_steps_are_loss_scaled_and_a_step_whose_gradient_overflows_is_skipped():
    """Their fp16 autocast on CUDA trains with a GradScaler; `optimizer_step` takes one (shown here with the CPU's
    GradScaler): a scaled step equals the unscaled one, and an inf gradient skips the step and halves the scale."""
    from paraformer.core.steps import optimizer_step, precision

    assert precision(torch.device("cuda"), True, "float16") == "fp16 autocast"
    assert precision(torch.device("cpu"), True, "float16") == "fp32"  # autocast is CUDA's only
    weights = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
        optimizer_step(optimizer, layer(torch.ones(3, 4)).square().mean(), list(layer.parameters()), 1.0,
                       scaler=scaler)
        weights.append(layer.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])
    before = layer.weight.detach().clone()
    optimizer_step(optimizer, layer(torch.full((3, 4), float("inf"))).sum(), list(layer.parameters()), scaler=scaler)
    assert torch.equal(layer.weight, before) and scaler.get_scale() == 2.0 ** 9
