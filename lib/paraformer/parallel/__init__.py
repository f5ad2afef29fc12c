"""Parallel execution: one training step's work shared over devices, each scheme on torch.distributed (gloo on the
CPU, NCCL on GPUs, one rank per device, launched by torchrun). Imports only `paraformer.core`.

- `launch`: joining the process group torchrun describes.
- `branch`: branch parallelism, a ParaFormer's branches shared over the ranks (`BranchParallel`).
- `pipeline`: the equivalent sequential ViT as stages, for the pipeline-parallel baselines (GPipe, 1F1B, FairScale).
- `mgrit`: layer parallelism, the 2026 paper's route: MGRIT across the layers of a deep ViT, forward and adjoint.
- `layertrain`: MGRIT gradients inside a training step (`Recipe.solver="mgrit"`), with the adaptive rule.
- `processes`: this process's place in a run and what it computes of each step (`Recipe.parallel`).
"""
