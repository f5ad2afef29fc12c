"""The core: everything one training run is made of, on one device. Imports nothing else of the package.

- `config`: the model, data and recipe dataclasses (every field part of a run's identity); `paths`: where files live.
- `data`, `datasources`: datasets as uint8 tensors, offline copies, subsets, augmentation.
- `model`: the ParaFormer (and the ViT it is compared with); `execution`: how its branches run on one device;
  `weights`: torchvision's ViTs imported as ParaFormers.
- `progressive`: the training methods (joint and three forms of progressive approximation).
- `steps`: one optimizer step, its device and precision; `timing`: the one timing loop of every benchmark.
- `runcache`, `runlog`: a run's record, key, checkpoints and step log; `files`: atomic writes;
  `provenance`: code version and device names; `flops`: FLOPs per image and per run.
"""
