"""The vLLM launcher: command construction from validated config (pure), the CLI around it, and a real
vLLM start when vllm and an NVIDIA GPU are present."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port, wait_http
from custos.errors import ConfigError
from inference.config import InferenceConfig
from inference.vllm import build_vllm_command, exit_status
from sidecar.config import load_config


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_minimal_command_binds_loopback() -> None:
    cmd = build_vllm_command(InferenceConfig(engine="vllm", model=Path("/models/qwen")))
    assert cmd[:3] == ["vllm", "serve", "/models/qwen"]
    assert flag(cmd, "--host") == "127.0.0.1"
    assert flag(cmd, "--port") == "8000"
    assert flag(cmd, "--served-model-name") == "qwen"
    assert flag(cmd, "--dtype") == "auto"
    assert "--enable-lora" not in cmd and "--quantization" not in cmd
    assert "--tensor-parallel-size" not in cmd


def test_full_command_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "custos.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inference": {
                    "engine": "vllm",
                    "model": "/models/deepseek-7b-awq",
                    "served_model_name": "deepseek",
                    "port": 8100,
                    "vllm": {
                        "dtype": "float16",
                        "quantization": "awq",
                        "tensor_parallel_size": 2,
                        "max_model_len": "16K",
                        "max_num_batched_tokens": 8192,
                        "max_num_seqs": 128,
                        "gpu_memory_utilization": 0.85,
                        "lora_modules": {"legal": "/adapters/legal", "support": "/adapters/support"},
                        "max_loras": 2,
                        "max_lora_rank": 64,
                        "enable_prefix_caching": True,
                        "extra_args": ["--seed", "7"],
                    },
                }
            }
        )
    )
    config = load_config(path, environ={}).inference
    cmd = build_vllm_command(config)
    assert cmd[:3] == ["vllm", "serve", "/models/deepseek-7b-awq"]
    assert flag(cmd, "--served-model-name") == "deepseek"
    assert flag(cmd, "--port") == "8100"
    assert flag(cmd, "--dtype") == "float16"
    assert flag(cmd, "--quantization") == "awq"
    assert flag(cmd, "--tensor-parallel-size") == "2"
    assert flag(cmd, "--max-model-len") == "16384"
    assert flag(cmd, "--max-num-batched-tokens") == "8192"
    assert flag(cmd, "--max-num-seqs") == "128"
    assert flag(cmd, "--gpu-memory-utilization") == "0.85"
    assert "--enable-lora" in cmd and "--enable-prefix-caching" in cmd
    i = cmd.index("--lora-modules")
    assert cmd[i + 1 : i + 3] == ["legal=/adapters/legal", "support=/adapters/support"]
    assert flag(cmd, "--max-loras") == "2" and flag(cmd, "--max-lora-rank") == "64"
    assert cmd[-2:] == ["--seed", "7"]


@pytest.mark.parametrize("method", ["gptq", "awq", "bitsandbytes", "fp8"])
def test_quantization_methods(method: str) -> None:
    cmd = build_vllm_command(InferenceConfig(model=Path("/m"), vllm={"quantization": method}))
    assert flag(cmd, "--quantization") == method
    assert ("--load-format" in cmd) == (method == "bitsandbytes")


def test_human_sizes_follow_vllm() -> None:
    assert InferenceConfig(vllm={"max_model_len": "16K"}).vllm.max_model_len == 16384
    assert InferenceConfig(vllm={"max_model_len": "16k"}).vllm.max_model_len == 16000
    assert InferenceConfig(max_batch_tokens="8K").max_batch_tokens == 8192


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CUSTOS_INFERENCE__VLLM__GPU_MEMORY_UTILIZATION": "1.5"}, "inference.vllm.gpu_memory_utilization"),
        ({"CUSTOS_INFERENCE__VLLM__QUANTIZATION": "int3"}, "inference.vllm.quantization"),
        ({"CUSTOS_INFERENCE__VLLM__TENSOR_PARALLEL_SIZE": "0"}, "inference.vllm.tensor_parallel_size"),
        ({"CUSTOS_INFERENCE__VLLM__MAX_MODEL_LEN": "lots"}, "inference.vllm.max_model_len"),
        ({"CUSTOS_INFERENCE__ENGINE": "llamacpp"}, "inference.engine"),
        ({"CUSTOS_INFERENCE__MAX_BATCH_TOKENS": "0"}, "inference.max_batch_tokens"),
        ({"CUSTOS_INFERENCE__VLLM__NUM_GPUS": "2"}, "inference.vllm.num_gpus"),
    ],
)
def test_bad_config_names_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=env)
    assert field in str(info.value)


def test_lora_name_validated() -> None:
    with pytest.raises(ValueError, match="adapter name"):
        InferenceConfig(vllm={"lora_modules": {"a=b": "/x"}})


def test_exit_status_of_a_signalled_child() -> None:
    assert exit_status(-signal.SIGTERM) == 143
    assert exit_status(3) == 3


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(custos_cmd(*args), capture_output=True, text=True, timeout=120)


def test_cli_print_command_merges_config_and_flags(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "custos.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "inference": {
                    "engine": "vllm",
                    "model": str(tiny_model_dir),
                    "port": 8100,
                    "vllm": {"max_num_seqs": 64, "quantization": "gptq"},
                }
            }
        )
    )
    res = run_cli(
        "inference",
        "serve",
        "--config",
        str(path),
        "--port",
        "9000",
        "--max-model-len",
        "16K",
        "--lora-modules",
        "sql=/adapters/sql",
        "--tensor-parallel-size",
        "4",
        "--print-command",
    )
    assert res.returncode == 0, res.stderr
    cmd = shlex.split(res.stdout.strip())
    assert cmd[1:3] == ["serve", str(tiny_model_dir.resolve())]
    assert flag(cmd, "--port") == "9000"  # the flag wins over the file
    assert flag(cmd, "--max-num-seqs") == "64"  # the file fills in the rest
    assert flag(cmd, "--quantization") == "gptq"
    assert flag(cmd, "--max-model-len") == "16384"
    assert flag(cmd, "--tensor-parallel-size") == "4"
    assert flag(cmd, "--lora-modules") == "sql=/adapters/sql" and "--enable-lora" in cmd


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--engine", "vllm", "--model", "/no/such/dir"], "does not exist"),
        (["--engine", "vllm", "--model", "{tmp}"], "no config.json"),
        (
            ["--engine", "vllm", "--model", "{tiny}", "--gpu-memory-utilization", "2"],
            "--gpu-memory-utilization",
        ),
        (["--engine", "vllm", "--model", "{tiny}", "--quantization", "int3"], "--quantization"),
        (["--engine", "vllm", "--model", "{tiny}", "--lora-modules", "noequals"], "--lora-modules"),
        (
            ["--engine", "vllm", "--model", "{tiny}", "--vllm-executable", "vllm-not-here-xyz"],
            "vLLM is not installed",
        ),
        (["--model", "/no/such/dir"], "does not exist"),
        (["--port", "70000"], "--port"),
        (["--max-batch-tokens", "lots"], "--max-batch-tokens"),
    ],
)
def test_cli_errors_are_one_line_exit_2(
    args: list[str], needle: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)).replace("{tiny}", str(tiny_model_dir)) for a in args]
    res = run_cli("inference", "serve", *args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert needle in res.stderr
    assert res.stderr.strip().count("\n") == 0  # one line


def _gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (custos[vllm])")
@pytest.mark.skipif(not _gpu_present(), reason="no NVIDIA GPU (nvidia-smi -L fails or is missing)")
def test_real_vllm_serves_the_tiny_model(tiny_model_dir: Path) -> None:
    port = free_port()
    proc = ManagedProcess(
        "vllm",
        custos_cmd(
            "inference",
            "serve",
            "--engine",
            "vllm",
            "--model",
            str(tiny_model_dir),
            "--served-model-name",
            "tiny",
            "--port",
            str(port),
            "--max-model-len",
            "1024",
            "--gpu-memory-utilization",
            "0.3",
            "--enforce-eager",
        ),
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=900, proc=proc.proc)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            timeout=120,
            json={"model": "tiny", "prompt": "Hello", "max_tokens": 5, "ignore_eos": True},
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 5
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "vllm:num_requests_running" in metrics
    finally:
        proc.signal(signal.SIGTERM)
        code = proc.proc.wait(120)
        proc.stop()
    assert code in (0, 143), proc.log()[-3000:]
