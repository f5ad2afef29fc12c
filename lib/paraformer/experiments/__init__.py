"""The experiments behind the notebooks, one module per notebook (01 `layer_sweep`, 02 `depth_sweep`, 03
`versus_vit`, 04 `compression`, 05 `expansion`, 06 `speedup`, 07 `finetune`, 08 `layer_parallel`, 99 `report`), each
with `plan(profile)` (the exact `train()` calls, as data), `run(profile)` (which trains that plan), and the tables
and verdicts its notebook shows; the other modules are what they share (`profiles` holds the four profiles). Imports
every other layer of the package but `tools`.
"""
