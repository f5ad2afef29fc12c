"""Training across devices, and what measures and predicts it. One module per scheme, each on torch.distributed
(gloo on CPU, NCCL on GPUs, one rank per device, launched by torchrun):

- `launch`: joining the process group torchrun describes.
- `branch`: branch parallelism, a ParaFormer's branches shared over the ranks (`BranchParallel`).
- `pipeline`: the equivalent sequential ViT as stages, for the pipeline-parallel baselines (GPipe, 1F1B, FairScale).
- `mgrit`: layer parallelism, the 2026 paper's route: MGRIT across the layers of a deep ViT, forward and adjoint.
- `layertrain`: MGRIT gradients inside `train()` (`Recipe.solver="mgrit"`), with the adaptive rule.
- `processes`: one `train()` run across torchrun's processes by data, branch or layer parallelism (`Recipe.parallel`).
- `convergence`: the solver's error against serial, per iteration count, level count and coarsening.
- `multibench`: the multi-process training-step benchmark of every scheme (`make bench`).
- `costmodel`: step times predicted for more devices from the measured costs.
"""

from .branch import BranchParallel, branch_shares, sum_across_ranks  # noqa: F401 (the names most callers want)
from .launch import init_process_group  # noqa: F401
