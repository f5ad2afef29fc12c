"""Benchmarks: execution strategies and layer counts on one device (`speed`), training steps across processes
(`multi`), our training step against timm's (`throughput`), MGRIT's convergence (`convergence`), and step times
predicted for more devices (`costmodel`). Every figure is a ratio of times measured in one run, with
`paraformer.core.timing`. Imports `paraformer.core`, `paraformer.parallel` and `paraformer.training`."""
