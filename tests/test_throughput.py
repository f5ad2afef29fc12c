"""The throughput benchmark: a same-shape peer, FLOP counts that match the arithmetic, a target that is data.

(Its timings are benchmarks, not tests: here only what it counts, checks and writes.)
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from paraformer.bench import throughput
from paraformer.core.config import ConfigError
from paraformer.core.model import ParaFormer
from paraformer.experiments.profiles import get_profile
from paraformer.tools import bench

CI = get_profile("ci").throughput


@pytest.fixture
def timm():
    """For the tests that build timm's ViT: skipped where timm is not installed (pip install -e ".[bench]")."""
    return pytest.importorskip("timm")


def forward_flops_by_hand(config, full_last_layer: bool) -> int:
    """2 x the multiply-adds of one image's forward pass, with T = 1 + patches tokens, width d, MLP hidden h:

        patch projection  2 * patches * (C * p^2) * d
        each layer        2*T*(3d^2) qkv + 2*T*d^2 output projection + 2*T*(2*d*h) MLP + 4*T^2*d (QK^T and AV)
                          (with h = 4d: 2*T*(12 d^2) + 4*T^2*d)
        head              2 * d * classes

    Our last layer computes only the CLS row: its query (2d^2), every token's keys and values (2*T*2d^2), the
    CLS row's attention (4*T*d), its output projection (2d^2) and its MLP (2*2*d*h)."""
    t, d, h = config.num_patches + 1, config.width, config.mlp_hidden
    patch = 2 * config.num_patches * config.patch_size ** 2 * config.in_channels * d
    full_layer = 2 * t * 3 * d * d + 2 * t * d * d + 2 * t * 2 * d * h + 4 * t * t * d
    cls_layer = 2 * d * d + 2 * t * 2 * d * d + 4 * t * d + 2 * d * d + 2 * 2 * d * h
    layers = config.num_layers * full_layer if full_last_layer else (config.num_layers - 1) * full_layer + cls_layer
    return patch + layers + 2 * d * config.num_classes


def a_batch(config, batch=4):
    torch.manual_seed(0)
    images = torch.randn(batch, config.in_channels, config.image_size, config.image_size)
    return images, torch.randint(0, config.num_classes, (batch,))


def test_timms_vit_of_as_many_layers_has_exactly_our_parameter_count(timm):
    for name in ("2-2", "1-2", "1-3"):
        config = CI.config(name)
        ours, peer = ParaFormer(config), throughput.timm_vit(config)
        assert throughput.check_same_parameters(config, ours, peer) == throughput.parameter_count(peer), name


def test_a_peer_of_another_shape_is_refused_before_anything_is_timed(timm, monkeypatch):
    monkeypatch.setattr(throughput, "timm_vit", lambda config: ParaFormer(CI.config("3-3")))
    monkeypatch.setattr(throughput, "median_seconds", lambda *a, **k: pytest.fail("timed a mismatched pair"))
    with pytest.raises(RuntimeError, match="not the same shape"):
        throughput.measure(CI, "cpu", progress=False)


def test_a_training_steps_flops_are_the_hand_count_three_times_less_one_patch_projection(timm):
    # backward costs twice the forward, but the images need no gradient: the patch projection's backward is only
    # its weight gradient, one forward's worth
    config = CI.config("2-2")
    images, labels = a_batch(config)
    patch = 2 * config.num_patches * config.patch_size ** 2 * config.in_channels * config.width
    timm_flops = throughput.step_flops_per_image(throughput.timm_vit(config), images, labels)
    our_flops = throughput.step_flops_per_image(ParaFormer(config), images, labels)
    assert timm_flops == pytest.approx(3 * forward_flops_by_hand(config, full_last_layer=True) - patch, rel=0.01)
    assert our_flops == pytest.approx(3 * forward_flops_by_hand(config, full_last_layer=False) - patch, rel=0.01)
    # attention (4*T^2*d) is an eighth of a layer here: a count that missed it (torch's counter alone does not
    # know the CPU's fused attention kernel) would be far outside 1%


def test_the_target_is_at_most_timms_time_and_met_only_when_every_row_meets_it():
    assert throughput.meets_target(0.99) and throughput.meets_target(1.0) and not throughput.meets_target(1.01)
    table = pd.DataFrame({"model": ["a", "b"], "batch": [8, 16], "ratio": [0.99, 1.01]})
    table["target_met"] = table["ratio"].map(throughput.meets_target)
    target = throughput.speed_target(table)
    assert target["per_row"] == {"a batch 8": True, "b batch 16": False}
    assert (target["met"], target["rows_met"], target["worst_ratio"], target["worst_model"]) == (False, 1, 1.01, "b")
    assert throughput.speed_target(table.iloc[:1])["met"] is True


def test_the_ci_profile_writes_one_row_per_model_and_batch_with_positive_finite_numbers(timm, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))
    assert bench.main(["--profile", "ci", "--only", "throughput", "--repeats", "2"]) == 0
    folder = tmp_path / "ci" / "bench" / "ci"
    table = pd.read_csv(folder / "throughput.csv")
    assert list(table["model"]) == ["Para-F-2-2", "Para-F-1-2"] and set(table["batch"]) == set(CI.batches)
    assert list(table["peer"]) == ["timm ViT-2", "timm ViT-2"] and list(table["same_architecture"]) == [True, False]
    assert (table["parameters"] == table["timm_parameters"]).all()
    numbers = table[["our_step_ms", "timm_step_ms", "our_images_per_s", "timm_images_per_s", "ratio",
                     "our_gflops_per_image", "timm_gflops_per_image", "our_mfu", "timm_mfu",
                     "matmul_peak_tflops_per_s"]]
    assert numbers.map(lambda v: math.isfinite(v) and v > 0).all().all()
    assert (table["our_step_ms"] < 60e3).all() and (table["timm_step_ms"] < 60e3).all()  # seconds at most
    assert np.allclose(table["ratio"], table["our_step_ms"] / table["timm_step_ms"])
    assert np.allclose(table["our_images_per_s"], 1e3 * table["batch"] / table["our_step_ms"])
    assert np.allclose(table["our_mfu"], table["our_gflops_per_image"] * table["our_images_per_s"] * 1e-3
                       / table["matmul_peak_tflops_per_s"])
    assert (table["target_met"] == (table["ratio"] <= 1.0)).all()
    assert set(table["precision"]) == {"fp32"} and set(table["threads"]) == {torch.get_num_threads()}
    assert set(table["matmul_precision"]) == {"fp32"}  # recorded; on the CPU left as it was
    assert set(table["repeats"]) == {2} and table["device"].str.len().min() > 0
    assert {"torch_version", "timm_version", "code_version"} <= set(table.columns)
    assert "| Para-F-1-2 | timm ViT-2 |" in (folder / "throughput.md").read_text()


def test_bad_arguments_and_a_missing_timm_are_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PARAFORMER_RESULTS", str(tmp_path))  # should a bad argument be accepted: ci, into tmp
    for argv in (["--profile", "huge"], ["--profile", "ci", "--repeats", "0"], ["--profile", "ci", "--batches", "x"],
                 ["--profile", "ci", "--device", "tpu"], ["--profile", "ci", "--only", "speed"]):
        with pytest.raises(SystemExit) as caught:
            bench.main(argv)
        assert caught.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1, argv
    assert bench.main(["--profile", "paper", "--only", "throughput"]) == 2  # not sized for the paper profile
    assert capsys.readouterr().err.strip().splitlines() == ["error: profile 'paper' has no throughput settings; use "
                                                            "ci, quick or gpu"]
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install timm \(or pip install -e "\.\[bench\]"\)'):
        throughput.measure(CI, "cpu", progress=False)
