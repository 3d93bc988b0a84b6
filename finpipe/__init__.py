"""finpipe: the shared library of finbert-pipeline (config, readers, schemas, splits, CLI)."""

__version__ = "0.1.0"
