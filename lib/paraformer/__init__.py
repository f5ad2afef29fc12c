"""ParaFormer: parallel-branch shallow Transformers (reference replication)."""

__version__ = "0.1.0"
