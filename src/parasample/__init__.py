"""parasample: parallel sampling from language models."""

__version__ = "0.1.0"
