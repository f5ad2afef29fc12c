"""The ParaFormer model: what it computes, what it refuses, and how big it is."""

import dataclasses

import pytest
import torch

from paraformer.core.config import ConfigError, ModelConfig, Recipe, from_dict
from paraformer.core.model import ParaFormer, count_parameters


def small(name="2-6", **fields):
    base = dict(image_size=16, in_channels=3, patch_size=4, width=32, num_heads=4, mlp_ratio=2.0, num_classes=7)
    return ModelConfig.from_name(name, **{**base, **fields})


def test_name_maps_to_depth_layers_and_branches():
    config = ModelConfig.from_name("Para-F-6-24")
    assert (config.branch_depth, config.num_layers, config.num_branches) == (6, 24, 4)
    assert ModelConfig.from_name("1-24").name == "Para-F-1-24"
    assert ModelConfig(branch_depth=3, num_branches=4).num_layers == 12


@pytest.mark.parametrize("name", ["1-1", "1-6", "3-6", "6-6"])
def test_output_shape_and_no_nans(name):
    model = ParaFormer(small(name))
    logits = model(torch.randn(5, 3, 16, 16))
    assert logits.shape == (5, 7)
    assert torch.isfinite(logits).all()


def test_prefix_evaluation_is_the_head_on_the_sum_of_the_first_k_branches():
    torch.manual_seed(0)
    model = ParaFormer(small("2-8")).eval()
    x = torch.randn(3, 3, 16, 16)
    tokens = model.embed(x)
    outputs = [branch(tokens) for branch in model.branches]
    for k in range(1, 5):
        expected = model.head(model.norm(sum(outputs[:k])))
        torch.testing.assert_close(model(x, num_branches=k), expected)
    torch.testing.assert_close(model(x), model(x, num_branches=4))


def test_later_branches_do_not_affect_a_prefix():
    torch.manual_seed(0)
    model = ParaFormer(small("1-4")).eval()
    x = torch.randn(2, 3, 16, 16)
    before = model(x, num_branches=2)
    with torch.no_grad():
        for p in model.branches[3].parameters():
            p.add_(1.0)
    torch.testing.assert_close(model(x, num_branches=2), before)
    assert not torch.allclose(model(x), model(x, num_branches=2))


def test_one_branch_is_a_plain_sequential_vit():
    """Every token through every layer, then the CLS token: what the branch computes with its last layer on the
    CLS token alone."""
    torch.manual_seed(0)
    model = ParaFormer(small("4-4")).eval()
    x = torch.randn(2, 3, 16, 16)
    h = model.embed(x)
    for layer in model.branches[0]:
        h = h + layer.attn(layer.norm1(h))
        h = h + layer.mlp(layer.norm2(h))
    torch.testing.assert_close(model(x), model.head(model.norm(h[:, 0])))


def test_every_parameter_gets_a_gradient():
    model = ParaFormer(small("2-6", dropout=0.1))
    model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("name", ["1-1", "1-6", "2-6", "6-24"])
def test_parameter_count_matches_the_closed_form(name):
    config = small(name)
    model = ParaFormer(config)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config)
    w, c = 32, 7
    # qkv (3w^2 + 3w) + proj (w^2 + w) + MLP with hidden 2w (4w^2 + 3w) + two LayerNorms (4w)
    per_layer = 8 * w * w + 11 * w
    stem = 3 * 16 * w + w + w + 17 * w  # patch projection + bias, CLS token, 16 + 1 position embeddings
    assert count_parameters(config) == stem + config.num_layers * per_layer + 2 * w + w * c + c


def test_prefix_parameter_count_keeps_stem_and_head():
    model = ParaFormer(small("2-6"))
    per_branch = sum(p.numel() for p in model.branches[0].parameters())
    assert model.num_parameters(1) == model.num_parameters() - 2 * per_branch


@pytest.mark.parametrize("fields, message", [
    (dict(patch_size=5), "patch_size=5"),
    (dict(num_heads=5), "num_heads=5"),
    (dict(branch_depth=4, num_layers=6), "num_layers=6"),
    (dict(branch_depth=2, num_layers=6, num_branches=2), "num_branches=2"),
    (dict(width=0), "width=0"),
    (dict(width="64"), "width='64'"),
    (dict(dropout=1.5), "dropout=1.5"),
])
def test_impossible_shapes_raise_value_error_naming_the_field(fields, message):
    base = dict(image_size=16, patch_size=4, width=32, num_heads=4, branch_depth=1, num_layers=2)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **fields})


def test_prefix_out_of_range_is_refused():
    model = ParaFormer(small("1-3"))
    x = torch.randn(1, 3, 16, 16)
    for bad in (0, 4, -1):
        with pytest.raises(ValueError, match=f"num_branches={bad}"):
            model(x, num_branches=bad)


def test_wrong_input_shape_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"expected \(batch, 3, 16, 16\)"):
        ParaFormer(small())(torch.randn(1, 1, 28, 28))


def test_unknown_config_keys_fail_loudly():
    with pytest.raises(ConfigError, match="unknown ModelConfig key"):
        from_dict(ModelConfig, {"num_layers": 2, "nb": 3})
    with pytest.raises(ConfigError, match="not of the form"):
        ModelConfig.from_name("24")


def test_expanding_with_new_classes_keeps_the_old_logits_bit_identical_even_after_training():
    torch.manual_seed(0)
    old = ParaFormer(small("1-2", num_classes=3)).eval()
    x = torch.randn(4, 3, 16, 16)
    reference = old(x)
    bigger = old.expand(2, num_new_classes=4).eval()
    assert (bigger.config.num_branches, bigger.config.num_classes) == (4, 7)
    assert (bigger.config.task_classes, bigger.config.task_branches) == ((3, 4), (2, 2))
    assert torch.equal(bigger(x)[:, :3], reference)
    # train only what is new, as class-incremental expansion does
    new = set(bigger.inherit(old))
    assert new and all(n.startswith(("branches.2.", "branches.3.", "task_heads.0.")) for n in new)
    trainable = [p for n, p in bigger.named_parameters() if n in new]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        bigger(x).logsumexp(1).sum().backward()
        optimizer.step()
    assert not torch.equal(bigger(x)[:, 3:], old.expand(2, 4)(x)[:, 3:])
    assert torch.equal(bigger(x)[:, :3], reference)


def test_growing_without_new_classes_keeps_the_old_model_as_a_bit_identical_prefix():
    torch.manual_seed(0)
    old = ParaFormer(small("1-3")).eval()
    x = torch.randn(4, 3, 16, 16)
    bigger = old.expand(2).eval()
    assert bigger.config.num_branches == 5 and not bigger.config.is_incremental
    assert torch.equal(bigger(x, num_branches=3), old(x))
    for k in (1, 2):
        assert torch.equal(bigger(x, num_branches=k), old(x, num_branches=k))


def test_a_class_incremental_model_has_prefixes_only_at_task_boundaries():
    model = ParaFormer(small("1-2", num_classes=3)).expand(1, 2).expand(2, 2)
    assert model.task_ends() == [2, 3, 5]
    assert model(torch.randn(1, 3, 16, 16), num_branches=3).shape == (1, 5)
    with pytest.raises(ValueError, match="num_branches=4 splits a task"):
        model(torch.randn(1, 3, 16, 16), num_branches=4)
    with pytest.raises(ValueError, match="grows only with a new task"):
        model.expand(1)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)


def test_a_model_inherits_only_from_a_model_it_expands():
    with pytest.raises(ValueError, match="is not an expansion of"):
        ParaFormer(small("1-4", width=64, num_heads=4)).inherit(ParaFormer(small("1-2")))
    with pytest.raises(ValueError, match="is not an expansion of"):
        ParaFormer(small("1-2")).inherit(ParaFormer(small("1-4")))


def test_selected_branches_make_a_smaller_model_that_saves_and_loads_without_the_others(tmp_path):
    from paraformer.core.model import load_model, save_model

    torch.manual_seed(0)
    model = ParaFormer(small("2-8")).eval()
    x = torch.randn(3, 3, 16, 16)
    tokens = model.embed(x)
    kept = [2, 0]
    compressed = model.select_branches(kept)
    expected = model.classify(model.branches[2](tokens) + model.branches[0](tokens))
    assert torch.equal(compressed(x), expected)
    assert torch.equal(model.select_branches([0, 1])(x), model(x, num_branches=2))
    full_file, small_file = save_model(model, tmp_path / "full.pt"), save_model(compressed, tmp_path / "small.pt")
    assert small_file.stat().st_size < 0.6 * full_file.stat().st_size
    loaded = load_model(small_file).eval()
    assert loaded.config == compressed.config and loaded.num_branches == 2
    assert torch.equal(loaded(x), compressed(x))
    for bad in ([], [0, 0], [4], [True]):
        with pytest.raises(ValueError, match="branch indices"):
            model.select_branches(bad)


def test_the_authors_residual_adds_the_normalized_input_back():
    config = ModelConfig(image_size=8, patch_size=4, width=16, num_heads=2, mlp_ratio=2.0, branch_depth=2,
                         num_layers=2, num_classes=3, residual="authors")
    layer = ParaFormer(config).branches[0][0].eval()
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = layer.norm1(x)
        h = h + layer.attn(h, False)
        expected = layer.norm2(h) + layer.mlp(layer.norm2(h))
        assert torch.allclose(layer(x), expected, atol=1e-6)
        standard = ParaFormer(dataclasses.replace(config, residual="pre-norm")).branches[0][0].eval()
        standard.load_state_dict(layer.state_dict())
        assert not torch.allclose(standard(x), layer(x), atol=1e-3)  # the default is the ViT's y = x + f(LN x)
        # the CLS-only last layer computes the CLS row of the full layer
        assert torch.allclose(layer(x, cls_only=True), layer(x)[:, :1], atol=1e-6)


def test_the_authors_residual_runs_only_as_a_loop_and_unknown_residuals_are_refused():
    config = ModelConfig(image_size=8, patch_size=4, width=16, num_heads=2, num_layers=2, residual="authors")
    with pytest.raises(ConfigError, match="runs with execution='loop'"):
        ParaFormer(config, execution="fused")
    with pytest.raises(ConfigError, match="residual='post-norm' is unknown"):
        ModelConfig(num_layers=2, residual="post-norm")


def test_the_authors_recipe_is_their_codes_settings():
    recipe = Recipe.authors(epochs=3)
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.schedule, recipe.warmup_epochs) == (
        "adam", 1e-4, 0.0, "constant", 0.0)
    assert (recipe.batch_size, recipe.label_smoothing, recipe.augment, recipe.randaugment_magnitude) == (
        500, 0.0, ("randaugment", "resize", "crop", "flip"), 14)
    # their RandAugment before the resize, 4 px of crop padding after it, mean 0.5 / std 0.2, fp16 on CUDA
    assert (recipe.randaugment, recipe.crop_padding, recipe.normalization, recipe.amp_dtype) == (
        "authors", 4, "authors", "float16")
    assert Recipe.authors(epochs=3, seed=2).seed == 2
