"""The text2art version (also in pyproject.toml), written into every PNG's metadata."""

__version__ = "0.1.0"
