"""Custos sidecar: a transparent OpenAI-compatible proxy with compliance stages."""

from custos import __version__

__all__ = ["__version__"]
