"""Custos sidecar: a transparent OpenAI-compatible proxy with compliance stages."""

__version__ = "0.1.0"
