"""The trainer: `train(model_config, data_config, recipe)` (`trainer`), its evaluation, progress bars, and what
decides whether a finished run is still this code's (`numerics`, checked by the `canary`). Imports
`paraformer.core` and `paraformer.parallel`."""

from .trainer import train  # noqa: F401 (the entry point)
