"""Importing torchvision ViTs: the imported ParaFormer computes what the ViT computes, and fine-tuning starts
from exactly those weights. No test downloads anything."""

import functools
import urllib.error

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from dataclasses import replace

import paraformer.core.weights as pretrained
from paraformer.core.config import ConfigError, DataConfig, ModelConfig, Recipe
from paraformer.core.data import IMAGENET_MEAN, IMAGENET_STD
from paraformer.core.model import ParaFormer
from paraformer.core.runcache import Initialization, run_key
from paraformer.core.weights import PretrainedUnavailable, config_from_torchvision, from_torchvision
from paraformer.experiments import finetune
from paraformer.experiments.accuracy import judge_claims
from paraformer.experiments.finetune import finetune_claims, finetune_table, imagenet_available, table4_verdicts
from paraformer.experiments.paper import TABLE4_FINETUNE
from paraformer.experiments.profiles import PROFILES, get_profile
from paraformer.training import train
from tests.test_train import toy_data


def randomize_norms_and_biases(vit: torchvision.models.VisionTransformer) -> None:
    """torchvision initializes LayerNorms to (1, 0) and attention biases to 0, which would hide a wrong mapping
    of those tensors; give every one of them distinct values."""
    with torch.no_grad():
        for module in vit.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
            if isinstance(module, torch.nn.MultiheadAttention):
                module.in_proj_bias.normal_(0.0, 0.1)
                module.out_proj.bias.normal_(0.0, 0.1)
        vit.heads.head.weight.normal_(0.0, 0.02)  # torchvision zeroes the head: the logits would all be 0


def test_torchvision_vit_b_16_imports_with_the_same_logits():
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16().eval()  # random weights: nothing is downloaded
    randomize_norms_and_biases(vit)
    ours = from_torchvision(vit).eval()
    assert ours.config.name == "Para-F-12-12"
    assert (ours.config.width, ours.config.num_heads, ours.config.patch_size, ours.config.norm_eps) == (768, 12, 16, 1e-6)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in vit.parameters())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = vit(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.1  # the comparison is not between near-zero logits


def small_vit(image_size=28, patch_size=4, **fields):
    vit = torchvision.models.VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=12,
                                               num_heads=2, hidden_dim=16, mlp_dim=64, **fields)
    randomize_norms_and_biases(vit)
    return vit.eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_our_normalization_and_greyscale_are_folded_into_the_patch_projection(channels):
    """Our pipeline normalizes with each dataset's statistics and keeps greyscale in one channel; the imported
    model on our input equals the ViT on the ImageNet-normalized RGB input it was trained for."""
    torch.manual_seed(1)
    vit = small_vit()
    mean, std = (0.29, 0.31, 0.27)[:channels], (0.35, 0.30, 0.33)[:channels]
    ours = from_torchvision(vit, channels, mean, std).eval()
    pixels = torch.rand(3, channels, 28, 28)
    rgb = pixels.expand(-1, 3, -1, -1)
    imagenet = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mine = (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(mine), vit(imagenet), rtol=1e-4, atol=1e-5)


def test_layouts_the_import_cannot_reproduce_are_refused():
    with pytest.raises(ConfigError, match="representation_size"):
        from_torchvision(torchvision.models.VisionTransformer(28, 4, 2, 2, 16, 32, representation_size=8))
    with pytest.raises(ConfigError, match="attention_dropout=0.1"):
        config_from_torchvision(small_vit(attention_dropout=0.1))
    with pytest.raises(ConfigError, match="in_channels=1 needs data_mean"):
        from_torchvision(small_vit(), in_channels=1)
    with pytest.raises(ConfigError, match="expected a torchvision VisionTransformer"):
        config_from_torchvision(torch.nn.Linear(2, 2))


def test_regrouping_a_vit_puts_consecutive_layers_into_parallel_branches():
    torch.manual_seed(2)
    sequential = from_torchvision(small_vit())
    four = sequential.regroup(3)
    assert (four.config.name, four.num_branches) == ("Para-F-3-12", 4)
    for layer in range(12):
        torch.testing.assert_close(four.branches[layer // 3][layer % 3].mlp.fc1.weight,
                                   sequential.branches[0][layer].mlp.fc1.weight)
    torch.testing.assert_close(four.head.weight, sequential.head.weight)
    # regrouping only moves layers: back into one branch, it is the same ViT again
    x = torch.randn(2, 1, 28, 28).expand(-1, 3, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(four.regroup(1).regroup(12)(x), sequential(x))
        assert not torch.allclose(four(x), sequential(x))  # in parallel it is a different function
    with pytest.raises(ConfigError, match="branch_depth=5 must be a positive int dividing the model's 12 layers"):
        sequential.regroup(5)


def test_fine_tuning_starts_from_the_given_weights_with_a_new_head(tmp_path):
    config = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, mlp_ratio=2.0, branch_depth=1,
                         num_layers=2, num_classes=4)
    torch.manual_seed(3)
    weights = {k: v for k, v in ParaFormer(config).state_dict().items() if not k.startswith("head.")}
    init = Initialization("a test", weights)
    recipe = Recipe(epochs=1, batch_size=16, augment=(), lr=1e-9, warmup_epochs=0.0)  # barely moves the weights
    result = train(config, DataConfig(dataset="toy"), recipe, data=toy_data(), init=init, results_root=tmp_path,
                   progress=False)
    trained = torch.load(tmp_path / "models" / f"{result.name}-{result.key}.pt", weights_only=True)
    torch.testing.assert_close(trained["pos_embed"], weights["pos_embed"])
    assert result.config["init"] == {"source": "a test", "digest": init.digest}
    other = Initialization("a test", {**weights, "pos_embed": weights["pos_embed"] + 1})
    assert run_key(config, DataConfig(dataset="toy"), recipe, init=other) != result.key


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path):
    config = ModelConfig(image_size=16, patch_size=4, width=32, num_heads=2, branch_depth=1, num_layers=2,
                         num_classes=4)
    weights = {k: v for k, v in ParaFormer(config).state_dict().items() if not k.startswith("branches.1.")}
    with pytest.raises(ConfigError, match="missing.*branches.1.*only head.\\* may be missing"):
        train(config, DataConfig(dataset="toy"), Recipe(epochs=1), data=toy_data(),
              init=Initialization("half a model", weights), results_root=tmp_path, progress=False)


def test_without_network_the_weights_are_reported_unavailable_in_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(type(pretrained.IMAGENET_VIT), "get_state_dict", offline)
    imagenet_available.cache_clear()  # (it remembers its answer for the process)
    try:
        imagenet, line = imagenet_available("auto")
        assert not imagenet and "\n" not in line
        # the line lands in committed notebooks: no raw network error, no path of this machine
        assert "RANDOM weights" in line and "Errno" not in line and torch.hub.get_dir() not in line and "/" not in line
        with pytest.raises(pretrained.PretrainedUnavailable, match="vit_b_16.*could not be downloaded.*checkpoints"):
            imagenet_available("required")  # where it is needed, the error says why and where the file goes
        assert imagenet_available("never")[0] is False
        with pytest.raises(ConfigError, match="pretrained='yes'"):
            imagenet_available("yes")
    finally:
        imagenet_available.cache_clear()


def test_the_ci_profile_never_depends_on_downloaded_weights():
    assert get_profile("ci").finetune.pretrained == "never"
    assert get_profile("paper").finetune.pretrained == "required"
    for profile in PROFILES.values():
        settings = profile.finetune
        for size in settings.random_patch:
            vit = finetune._weights(settings, False, "cifar10", size, 0, 12).vit()
            assert len(vit.encoder.layers) == 12 and all(12 % d == 0 for d in settings.branch_depths)


def test_the_random_stand_in_is_drawn_from_its_own_seed_and_leaves_the_global_random_state_alone():
    settings = get_profile("ci").finetune
    torch.manual_seed(5)
    before = torch.get_rng_state()
    one, again, other = (finetune._weights(settings, False, "fashion_mnist", 28, seed, 12).initialization(None)
                         for seed in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), before)
    assert one.digest == again.digest != other.digest


def finetune_runs(weights: str, accs=(60.0, 50.0, 59.5), seeds=(0, 1, 2), images=2000) -> pd.DataFrame:
    difficulty = np.random.default_rng(0).random(images)
    rows = []
    for (m, a, d), acc in zip([("Para-F-12-12", "sequential (1 branch)", 12), ("Para-F-1-12", "12 branches x depth 1", 1),
                               ("Para-F-3-12", "4 branches x depth 3", 3)], accs):
        for seed in seeds:
            rng = np.random.default_rng(seed + d)
            correct = np.where(rng.random(images) < 0.8, difficulty, rng.random(images)) < acc / 100
            rows.append({"dataset": "cifar10", "model": m, "arrangement": a, "weights": weights, "branch_depth": d,
                         "num_layers": 12, "seed": seed, "test_acc": 100 * correct.mean(), "correct": correct,
                         "num_params": 1, "epochs": 10, "train_images": 100, "test_images": images,
                         "image_size": 32, "train_seconds": 1.0, "train_tflop": 0.1 * d + seed})
    return pd.DataFrame(rows)


def test_random_weights_never_stand_beside_the_papers_table_4():
    table = finetune_table(finetune_runs("random (not pretrained)"), TABLE4_FINETUNE)
    assert table["paper_acc"].isna().all() and table["ours_minus_paper"].isna().all()
    (verdict,) = table4_verdicts(table)
    assert verdict.verdict == "not testable here"


def test_with_imagenet_weights_our_sequential_fine_tune_is_judged_against_table_4():
    table = finetune_table(finetune_runs("torchvision ViT_B_16", accs=(98.4, 97.0, 98.0)), TABLE4_FINETUNE)
    assert table["paper_acc"].tolist()[0] == 98.62 and table["paper_acc"].isna().sum() == 2
    (verdict,) = table4_verdicts(table)
    assert verdict.paper == 98.62 and verdict.ours == pytest.approx(table["our_acc"].iloc[0] - 98.62)
    assert verdict.verdict == "supported"  # within 1 point of the paper: the interval lies above -1


def test_each_regrouping_is_compared_with_the_sequential_fine_tune_of_the_same_seeds_and_images():
    runs = finetune_runs("random (not pretrained)")
    table = finetune_table(runs, TABLE4_FINETUNE)
    seq = table["our_acc"].iloc[0]
    assert table["minus_sequential"].tolist() == pytest.approx([0.0, table["our_acc"].iloc[1] - seq,
                                                                table["our_acc"].iloc[2] - seq])
    # each arrangement's training FLOPs per run, mean over its seeds
    expected = runs.groupby("model", sort=False)["train_tflop"].mean()
    assert table.set_index("model")["train_tflop"].to_dict() == pytest.approx(expected.to_dict())
    claims = finetune_claims(runs)
    assert [(c.better, c.worse, c.threshold) for c in claims] == [
        ("Para-F-1-12", "Para-F-12-12", -1.0), ("Para-F-3-12", "Para-F-12-12", -1.0)]
    far, close = judge_claims(runs, claims)
    assert far.verdict == "contradicted"  # 10 points below: the whole interval lies under -1
    assert close.verdict in ("inconclusive", "supported") and close.low < 0


def test_imagenet_weights_of_another_input_size_decode_the_images_at_that_size(tmp_path, monkeypatch):
    # ViT-B/16 takes 224 px images and CIFAR's are 32 px: they are upsampled when decoded (train() never resizes).
    # Here a 12-layer ViT for 32 px stands in for ImageNet's, fine-tuned on 28 px Fashion-MNIST.
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=12, num_heads=2,
                                               hidden_dim=16, mlp_dim=32)
    monkeypatch.setattr(finetune, "_imagenet_vit", lambda: vit)
    monkeypatch.setattr(finetune, "_imagenet_shape", lambda: vit)  # the shape a plan reads, without the weights
    monkeypatch.setattr(finetune, "imagenet_available", lambda mode: (True, "Weights: a stand-in."))
    ci = get_profile("ci")
    settings = replace(ci.finetune, n_train=64, n_test=40, branch_depths=(12,), recipe=replace(ci.finetune.recipe,
                                                                                                epochs=1))
    monkeypatch.setitem(PROFILES, "ci", replace(ci, finetune=settings))
    result = finetune.run("ci", progress=False)
    assert list(result.runs["image_size"]) == [32] and result.records[0].config["data"]["image_size"] == 32
    assert result.imagenet and result.runs["weights"].tolist() == [f"torchvision {pretrained.IMAGENET_VIT}"]


def test_with_random_weights_the_regrouping_claims_are_not_testable_and_stay_an_architecture_check():
    runs = finetune_runs("random (not pretrained)")
    claims = finetune_claims(runs)
    verdicts, checks = finetune.regrouping_verdicts(runs, claims, imagenet=False)
    assert [(v.claim, v.verdict) for v in verdicts] == [(c.claim, "not testable here") for c in claims]
    # the checks are the same paired comparisons, under claims of their own that the report never receives
    judged = judge_claims(runs, claims)
    assert [(v.verdict, v.ours, v.low, v.high) for v in checks] == [(v.verdict, v.ours, v.low, v.high) for v in judged]
    assert {v.claim for v in checks}.isdisjoint(c.claim for c in claims)
    table = finetune_table(runs, TABLE4_FINETUNE)
    found = finetune.Findings(table, table4_verdicts(table), claims, verdicts, checks)
    assert found.report_verdicts == found.paper_verdicts + verdicts
    assert found.sources == ["paper", "ours", "ours"]  # Table 4 is the paper's; the regroupings are the suite's


def test_with_imagenet_weights_the_regrouping_claims_are_judged_and_there_is_no_check():
    runs = finetune_runs("torchvision ViT_B_16")
    claims = finetune_claims(runs)
    verdicts, checks = finetune.regrouping_verdicts(runs, claims, imagenet=True)
    assert verdicts == judge_claims(runs, claims) and checks == []


def test_a_profile_that_requires_imagenet_weights_is_estimated_without_them_and_says_they_are_missing(monkeypatch):
    """`paper` offline: the estimate (make reproduce's first step) costs notebook 07's ViT-B/16 fine-tunes at 224 px
    as they will train once the weights are in place, instead of failing; planning the notebook still refuses."""
    def unavailable():
        raise PretrainedUnavailable("no weights here")

    monkeypatch.setattr(finetune, "_imagenet_vit", unavailable)
    monkeypatch.setattr(finetune, "imagenet_available", functools.lru_cache(finetune.imagenet_available.__wrapped__))
    settings = get_profile("paper").finetune
    assert settings.pretrained == "required"
    with pytest.raises(PretrainedUnavailable):
        finetune.plan("paper")
    estimate = finetune.estimate("paper", flops_per_second=1e12)
    rows = estimate.runs
    assert len(rows) == len(settings.datasets) * len(settings.seeds) * len(settings.branch_depths)
    assert set(rows["run"].str.endswith("-finetune-imagenet")) == {True}
    assert all(run.model.image_size == 224 and run.model.width == 768 and run.init.imagenet
               for run in finetune.plan("paper", imagenet=True))
    assert estimate.note and estimate.minutes > 0
