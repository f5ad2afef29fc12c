"""Branch parallelism across processes: two gloo processes on the CPU compute exactly what one process computes,
logits and gradients, and the frozen progressive variant communicates in the forward pass only."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paraformer.core.config import ConfigError
from paraformer.core.model import ParaFormer
from paraformer.parallel.branch import BranchParallel, branch_shares
from tests.test_model import small

WORLD_SIZE = 2


def test_branches_are_shared_out_contiguously_and_evenly():
    assert branch_shares(5, 2) == [range(0, 3), range(3, 5)]
    assert branch_shares(24, 4)[3] == range(18, 24)
    with pytest.raises(ConfigError, match="3 ranks for 2 branches"):
        branch_shares(2, 3)


def reference(name: str, frozen: bool):
    """The single-process model, its logits and its gradients on a fixed batch."""
    torch.manual_seed(0)
    model = ParaFormer(small(name))
    if frozen:  # stage 3 of `frozen`: only branch 3 trains, on top of the fixed branches 1-2; stem and head fixed
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("branches.2."))
    torch.manual_seed(1)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 7, (6,))
    return model, x, y


def _worker(rank: int, port: int, name: str, frozen: bool, num_branches: int | None) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, x, y = reference(name, frozen)
        parallel = BranchParallel(model)
        logits = parallel(x, num_branches)
        loss = torch.nn.functional.cross_entropy(logits, y)
        if loss.requires_grad:  # in a frozen stage, a rank holding only fixed branches has nothing to train
            loss.backward()
        reduced = parallel.sync_gradients()

        expected = model(x, num_branches)
        torch.nn.functional.cross_entropy(expected, y).backward()
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
        for local_name, p in parallel.local.named_parameters():
            full = model.get_parameter(parallel.global_name(local_name))
            if full.grad is None:
                assert p.grad is None, local_name
            else:
                torch.testing.assert_close(p.grad, full.grad, rtol=1e-5, atol=1e-6, msg=local_name)
        assert reduced == (0 if frozen else 4)  # frozen stem: forward communication only
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name, frozen, num_branches", [("1-4", False, None), ("2-6", False, None),
                                                        ("1-3", False, 2), ("1-4", True, 3)])
def test_two_gloo_processes_match_one_process(name, frozen, num_branches):
    mp.spawn(_worker, args=(free_port(), name, frozen, num_branches), nprocs=WORLD_SIZE, join=True)


def _dropout_worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        model = ParaFormer(small("1-3", dropout=0.5))  # shares of 2 and 1 branches: unequal mask draws
        parallel = BranchParallel(model, seed=7).train()
        stems = []
        parallel.local.embed_dropout.register_forward_hook(lambda module, args, out: stems.append(out.detach()))
        x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(100 + rank)  # the ranks' own random streams differ, as they may in any job
        first = [parallel(x) for _ in range(3)]
        assert parallel.calls == 3
        for stem in stems:  # every call's stem masks agree across ranks
            gathered = [torch.empty_like(stem) for _ in range(WORLD_SIZE)]
            dist.all_gather(gathered, stem)
            assert torch.equal(gathered[0], gathered[1])
        assert not torch.equal(stems[0], stems[1])  # and change from call to call
        before = torch.get_rng_state()
        parallel.calls = 0  # as a resumed run restores it: the same masks again
        again = [parallel(x) for _ in range(3)]
        assert all(torch.equal(a, b) for a, b in zip(first, again))
        assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    finally:
        dist.destroy_process_group()


def test_with_dropout_every_rank_draws_the_same_stem_masks():
    mp.spawn(_dropout_worker, args=(free_port(),), nprocs=WORLD_SIZE, join=True)
