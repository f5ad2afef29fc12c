"""The experiments behind the notebooks, one module per notebook, each with `plan(profile)` (the exact `train()`
calls, as data), `run(profile)` (which trains that plan), and the tables and verdicts its notebook shows:

- 01 `layer_sweep`, 02 `depth_sweep`, 03 `versus_vit`, 04 `compression`, 05 `expansion`, 06 `speedup`,
  07 `finetune`, 08 `layer_parallel`, 99 `report` (the claims report).

What they share: `profiles` (the four profiles, everything each runs, in one file; `settings` their dataclasses),
`plan` (planned runs and their execution), `estimate` (their cost before they start), `accuracy` and `stats`
(intervals, paired tests, the one verdict rule), `tables` (what a notebook writes), `display` (a notebook's
parameters and what a reader sees), `paper` (the papers' numbers, kept apart from ours). Imports every other layer
of the package but `tools`.
"""
