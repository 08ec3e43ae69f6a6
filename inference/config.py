"""The ``inference:`` config section: which engine serves the model, where, and how it batches.

``custos inference serve`` reads it from the same custos.yaml as the sidecar (``--config``), with CLI
flags overriding. The defaults serve the embedded single-machine setup: the CPU engine with the tiny
model on 127.0.0.1:8000, the sidecar's default upstream.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from custos.section import Section

_HUMAN_INT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
# As vLLM reads them: lower case is decimal (16k = 16000), upper case binary (16K = 16384).
_MULTIPLIERS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}


def human_int(value: object) -> object:
    """``16K`` -> 16384, ``16k`` -> 16000, ``4096`` -> 4096; anything else is left to pydantic."""
    if isinstance(value, str):
        match = _HUMAN_INT.match(value)
        if not match:
            raise ValueError("must be a whole number, optionally with a k/K/m/M suffix (16K = 16384)")
        number = float(match.group(1)) * _MULTIPLIERS[match.group(2)]
        if number != int(number):
            raise ValueError("must come out as a whole number")
        return int(number)
    return value


Quantization = Literal[
    "gptq", "awq", "bitsandbytes", "fp8", "gptq_marlin", "awq_marlin", "compressed-tensors"
]


class VllmConfig(Section):
    """Options of the production engine, passed to ``vllm serve`` (names follow its flags)."""

    executable: str = Field(
        "vllm", description="the vllm command (looked up next to this Python, then on PATH)"
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    quantization: Quantization | None = Field(None, description="None: what the checkpoint declares")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs to shard the model over")
    pipeline_parallel_size: int = Field(1, ge=1, le=64)
    max_model_len: int | None = Field(
        None, ge=16, description="context length (16K = 16384); None: the model's"
    )
    max_num_batched_tokens: int | None = Field(None, ge=16, description="token budget per scheduler step")
    max_num_seqs: int | None = Field(None, ge=1, description="max sequences batched together")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="fraction of GPU memory vLLM may use"
    )
    enable_prefix_caching: bool | None = Field(None, description="None: vLLM's default")
    enforce_eager: bool = Field(False, description="disable CUDA graphs (faster start, slower decode)")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    trust_remote_code: bool = Field(False, description="run Python code shipped with the checkpoint")
    enable_lora: bool = Field(False, description="also implied by lora_modules")
    lora_modules: dict[str, Path] = Field(default_factory=dict, description="adapter name -> local directory")
    max_loras: int | None = Field(None, ge=1)
    max_lora_rank: int | None = Field(None, ge=1)
    extra_args: list[str] = Field(default_factory=list, description="appended verbatim to `vllm serve`")
    ready_timeout_s: float = Field(1800.0, gt=0, description="how long to wait for /health before giving up")

    @field_validator("max_model_len", "max_num_batched_tokens", mode="before")
    @classmethod
    def _human(cls, value: object) -> object:
        return human_int(value)

    @field_validator("lora_modules")
    @classmethod
    def _lora_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            if not name or "=" in name or any(c.isspace() for c in name):
                raise ValueError(f"adapter name {name!r} must be non-empty without '=' or spaces")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VllmConfig:
        tokens, seqs = self.max_num_batched_tokens, self.max_num_seqs
        if tokens is not None and seqs is not None and tokens < seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least "
                f"max_num_seqs ({self.max_num_seqs})"
            )
        if self.quantization == "fp8" and self.dtype in ("float", "float32"):
            raise ValueError("quantization fp8 needs dtype auto, half/float16 or bfloat16, not float32")
        return self


class InferenceConfig(Section):
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers: the CPU engine; vllm: the production GPU engine"
    )
    model: Path | None = Field(None, description="local model directory; None: the tiny test model")
    served_model_name: str | None = Field(None, description="name in /v1/models; None: the directory name")
    host: str = Field("127.0.0.1", description="only the sidecar should reach the engine")
    port: int = Field(8000, ge=1, le=65535)
    # CPU engine (engine: transformers)
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="auto: cuda when available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, the checkpoint's dtype on CUDA"
    )
    max_batch_tokens: int = Field(
        4096, ge=16, description="token budget of one batch: prompt + generated tokens of its requests"
    )
    max_batch_size: int = Field(16, ge=1, le=1024, description="max requests decoded together")
    max_model_len: int | None = Field(None, ge=16, description="context length; None: the model's")
    max_waiting: int = Field(1024, ge=1, description="queued requests beyond this get 503")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads; None: 1 for models under 50M parameters, else torch's default",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    vllm: VllmConfig = Field(default_factory=VllmConfig)

    @field_validator("max_batch_tokens", "max_model_len", mode="before")
    @classmethod
    def _human(cls, value: object) -> object:
        return human_int(value)

    @field_validator("served_model_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value
