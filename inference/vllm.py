"""Launch vLLM, the production engine, from validated config.

``build_vllm_command`` is a pure function (config in, argv out) so tests check it without a GPU.
``run_vllm`` runs that command as a child in its own process group, waits for ``/health``, forwards
SIGINT/SIGTERM once and exits with vLLM's status.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from .config import InferenceConfig

log = logging.getLogger("custos.inference.vllm")


class VllmNotInstalled(RuntimeError):
    pass


def served_name(config: InferenceConfig) -> str:
    if config.served_model_name:
        return config.served_model_name
    from .tiny import default_served_name

    return default_served_name(config.model) if config.model else "model"


def build_vllm_command(config: InferenceConfig, executable: str | None = None) -> list[str]:
    """The ``vllm serve`` argv for ``config`` (``executable`` defaults to ``config.vllm.executable``)."""
    if config.model is None:
        raise ValueError("inference.model: the vLLM engine needs a model directory")
    v = config.vllm
    cmd = [executable or v.executable, "serve", str(config.model)]
    cmd += ["--served-model-name", served_name(config)]
    cmd += ["--host", config.host, "--port", str(config.port)]
    cmd += ["--dtype", v.dtype]
    if v.quantization:
        cmd += ["--quantization", v.quantization]
        if v.quantization == "bitsandbytes":
            # Older vLLM releases also need the load format spelled out; newer ones accept it.
            cmd += ["--load-format", "bitsandbytes"]
    if v.tensor_parallel_size != 1:
        cmd += ["--tensor-parallel-size", str(v.tensor_parallel_size)]
    if v.pipeline_parallel_size != 1:
        cmd += ["--pipeline-parallel-size", str(v.pipeline_parallel_size)]
    if v.max_model_len is not None:
        cmd += ["--max-model-len", str(v.max_model_len)]
    if v.max_num_batched_tokens is not None:
        cmd += ["--max-num-batched-tokens", str(v.max_num_batched_tokens)]
    if v.max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(v.max_num_seqs)]
    cmd += ["--gpu-memory-utilization", f"{v.gpu_memory_utilization:g}"]
    if v.enable_prefix_caching is True:
        cmd.append("--enable-prefix-caching")
    elif v.enable_prefix_caching is False:
        cmd.append("--no-enable-prefix-caching")
    if v.enforce_eager:
        cmd.append("--enforce-eager")
    if v.kv_cache_dtype != "auto":
        cmd += ["--kv-cache-dtype", v.kv_cache_dtype]
    if v.trust_remote_code:
        cmd.append("--trust-remote-code")
    if v.enable_lora or v.lora_modules:
        cmd.append("--enable-lora")
        if v.lora_modules:
            cmd += ["--lora-modules", *(f"{name}={path}" for name, path in v.lora_modules.items())]
        if v.max_loras is not None:
            cmd += ["--max-loras", str(v.max_loras)]
        if v.max_lora_rank is not None:
            cmd += ["--max-lora-rank", str(v.max_lora_rank)]
    cmd += list(v.extra_args)
    return cmd


def vllm_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: never reach a model hub, whatever the model path looks like."""
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def find_vllm(executable: str) -> str:
    """The vllm executable: an explicit path, next to this Python (same venv), or on PATH."""
    if os.sep in executable:
        if os.access(executable, os.X_OK):
            return executable
        raise VllmNotInstalled(f"inference.vllm.executable {executable!r} is not an executable file")
    beside = Path(sys.executable).parent / executable
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(executable)
    if found:
        return found
    raise VllmNotInstalled(
        "vLLM is not installed (no `vllm` command next to this Python or on PATH): install it with "
        "`pip install 'custos[vllm]'` on a machine with an NVIDIA GPU, or use --engine transformers"
    )


def check_model_dir(model: Path | None) -> Path:
    """A local model directory, or a clear error (we never download from a hub)."""
    if model is None:
        raise ValueError("inference.model: no model given; pass --model DIR (a local model directory)")
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(
            f"inference.model: {str(model)!r} does not exist (a local model directory is required)"
        )
    if not path.is_dir():
        raise ValueError(f"inference.model: {str(model)!r} is not a directory")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"inference.model: {str(model)!r} is not a Hugging Face model directory (no config.json in it)"
        )
    return path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def exit_status(returncode: int) -> int:
    """A shell-style exit code: a child killed by signal N exits 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def run_vllm(config: InferenceConfig, argv: list[str]) -> int:
    """Run vLLM until it exits; returns its exit status."""
    env = vllm_env()
    if config.vllm.enable_lora or config.vllm.lora_modules:
        # vLLM serves /v1/load_lora_adapter and /v1/unload_lora_adapter only with this set; the sidecar
        # requires the lora:manage permission for them (set it to False here to turn them off).
        env.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    log.info("started vLLM (pid %d): %s", proc.pid, " ".join(argv))
    forwarded: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The child is in its own session, so a terminal's Ctrl-C reaches it only through us, once.
        if proc.poll() is None:
            forwarded.append(signum)
            try:
                os.killpg(proc.pid, signum if len(forwarded) < 3 else signal.SIGKILL)
            except ProcessLookupError:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
        url = f"http://{host}:{config.port}/health"
        deadline = time.monotonic() + config.vllm.ready_timeout_s
        ready = timed_out = False
        while proc.poll() is None and not forwarded:
            if not ready and _ready(url):
                ready = True
                log.info("vLLM is ready: http://%s:%d/v1 serves %s", host, config.port, served_name(config))
            if not ready and time.monotonic() > deadline:
                log.error("vLLM did not become ready within %.0fs; stopping it", config.vllm.ready_timeout_s)
                os.killpg(proc.pid, signal.SIGTERM)
                timed_out = True
                break
            time.sleep(1.0 if not ready else 5.0)
        try:
            returncode = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log.warning("vLLM did not stop within 60s; killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status = exit_status(returncode)
    if timed_out and status == 0:
        status = 1  # vLLM stopped cleanly, but only because it never became ready
    log.info("vLLM exited with status %d", status)
    return status
