"""The CUDA paths: bf16 autocast, fused AdamW, torch.compile, device-resident data, NCCL. Skipped without a GPU.

The CPU runs the same code path (see test_train.py); what only a GPU can show is here: that the data and the
augmentation really stay on the device (a run's flips and crops drawn there by a CUDA generator; the same draws give
the CPU's pixels), that an epoch does not wait for the device at every step, and that the CUDA-only switches are
taken and recorded.
"""

import warnings
from dataclasses import replace

import pytest
import torch

import paraformer.training.trainer as training
from paraformer.core.data import augment_batch
from paraformer.core.model import ParaFormer
from paraformer.core.steps import build_optimizer
from paraformer.training import train

from .test_parallel import free_port
from .test_train import DATA, MODEL, RECIPE, interrupt_after_first_epoch, toy_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = replace(RECIPE, device="cuda")


def test_flip_and_crop_on_the_gpu_give_the_cpus_pixels_and_draw_there_without_waiting():
    images = toy_data().train_images
    on_cpu = augment_batch(images, ("flip", "crop"), torch.Generator().manual_seed(5))
    on_gpu = augment_batch(images.cuda(), ("flip", "crop"), torch.Generator().manual_seed(5))  # the same draws
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), on_cpu)
    # a CUDA run's own draws: from a generator on the GPU, so that nothing crosses from the host
    gpu_images = images.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            drawn = [augment_batch(gpu_images, ("flip", "crop"), torch.Generator(device="cuda").manual_seed(5))
                     for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sum("synchroniz" in str(w.message) for w in caught) == 0
    assert drawn[0].is_cuda and torch.equal(drawn[0], drawn[1])


def test_a_cuda_run_uses_bf16_autocast_and_fused_adamw_and_records_both(tmp_path):
    model = ParaFormer(MODEL).cuda()
    assert build_optimizer(model, CUDA, torch.device("cuda")).defaults["fused"] is True
    result = train(MODEL, DATA, CUDA, data=toy_data(), results_root=tmp_path, progress=False)
    cpu = train(MODEL, DATA, replace(RECIPE, device="cpu"), data=toy_data(), results_root=tmp_path, progress=False)
    assert result.precision == "bf16 autocast" and result.device == torch.cuda.get_device_name()
    assert result.key != cpu.key  # the device is part of the recipe, so of the key
    # another precision, the same learning: the toy task is learnt either way
    assert result.final_test_acc >= 90 and cpu.final_test_acc >= 90


def test_the_data_live_on_the_gpu_and_an_epoch_does_not_wait_for_it_at_every_step(tmp_path, monkeypatch):
    seen = {}
    start_run = training.start_run

    def spying_start_run(*args, **kwargs):
        run = start_run(*args, **kwargs)
        seen["images"], seen["labels"] = run.train_images.device, run.train_labels.device
        return run
    monkeypatch.setattr(training, "start_run", spying_start_run)
    one_epoch = training.train_one_epoch

    def watched_epoch(*args):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loss = one_epoch(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        seen.setdefault("syncs", []).append(sum("synchroniz" in str(w.message) for w in caught))
        return loss
    monkeypatch.setattr(training, "train_one_epoch", watched_epoch)
    recipe = replace(CUDA, method="authors", epochs=2)  # 24 optimizer steps per epoch
    train(MODEL, DATA, recipe, data=toy_data(), results_root=tmp_path, progress=False, log_every=1000)
    assert seen["images"].type == seen["labels"].type == "cuda"
    assert all(syncs <= 3 for syncs in seen["syncs"]), seen["syncs"]  # the epoch's loss and the step log


def test_a_compiled_cuda_run_learns_like_an_eager_one(tmp_path):
    eager = train(MODEL, DATA, CUDA, data=toy_data(), results_root=tmp_path, progress=False)
    compiled = train(MODEL, DATA, replace(CUDA, compile=True), data=toy_data(), results_root=tmp_path,
                     progress=False)
    assert compiled.config["recipe"]["compile"] is True
    assert compiled.compiled["graphs"] > 0 and compiled.compiled["eager_fallbacks"] == 0  # compiled on the GPU too
    assert abs(compiled.final_test_acc - eager.final_test_acc) <= 5


def test_a_resumed_cuda_run_follows_an_uninterrupted_one_within_tolerance_not_bit_for_bit(tmp_path):
    # CUDA kernels (attention's backward among them) may add in another order from one process to the next, so this
    # resume is compared with tolerance; bit-exact resume is the CPU's claim (test_train.py, docs/run-cache.md)
    data = toy_data()
    straight = train(MODEL, DATA, CUDA, data=data, results_root=tmp_path / "a", progress=False)
    interrupt_after_first_epoch(data, tmp_path / "b", CUDA)
    epochs = []
    resumed = train(MODEL, DATA, CUDA, data=data, results_root=tmp_path / "b", progress=False,
                    on_epoch_end=lambda entry: epochs.append(entry["epoch"]))
    assert epochs == [2, 3]  # epoch 1 came from the checkpoint
    losses = [[entry["train_loss"] for entry in run.history] for run in (straight, resumed)]
    assert losses[1] == pytest.approx(losses[0], rel=0.05)
    assert abs(resumed.final_test_acc - straight.final_test_acc) <= 100 * 3 / 48  # three of the 48 test images


def test_one_nccl_process_gives_the_single_process_logits_and_sends_host_values_beside_nccl(monkeypatch):
    import torch.distributed as dist
    from paraformer.parallel.branch import BranchParallel
    from paraformer.parallel.launch import control_group, init_process_group

    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    rank, world, device = init_process_group()
    try:
        assert (rank, world, device.type, dist.get_backend()) == (0, 1, "cuda", "nccl")
        flag = torch.tensor([1])  # a host value: over the gloo group beside NCCL, which carries device memory only
        dist.broadcast(flag, src=0, group=control_group())
        assert dist.get_backend(control_group()) == "gloo" and flag.tolist() == [1]
        torch.manual_seed(0)
        model = ParaFormer(MODEL).to(device).eval()
        x = torch.randn(6, 3, 16, 16, device=device)
        # both in eval mode: in training mode BranchParallel draws MODEL's dropout masks from streams of its own (so
        # that ranks agree), which the plain model does not (as in tools/gpu_check.py)
        torch.testing.assert_close(BranchParallel(model).eval()(x), model(x))
    finally:
        dist.destroy_process_group()
