"""The package's version (one place: ``rem.__version__`` and every record's environment read it)."""

__version__ = "0.1.0"
