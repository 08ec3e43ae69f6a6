"""The CPU engine serves LoRA adapters beside the base model, and vLLM's command comes from the same
config: adapters listed in /v1/models with their parent, selected per request by ``model``, batched
together with the base model, loaded and unloaded at run time (vLLM's routes and answers)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from bench.procs import custos_cmd
from bench.stack import TINY_MODEL_NAME, Engine, start_engine
from inference.config import InferenceConfig
from inference.vllm import build_vllm_command
from tests.inference.lora_support import ANSWER, TOPICS, chat_body, train_adapter, write_dataset

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    data = write_dataset(root / "train.jsonl", n=48, emails=0)
    train_adapter(tiny_model_dir, data, root / "helpdesk", epochs=8)
    return root / "helpdesk"


@pytest.fixture(scope="module")
def config_file(adapter_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One custos.yaml for both engines: the CPU engine serves it, vLLM's command is built from it."""
    path = tmp_path_factory.mktemp("cfg") / "custos.yaml"
    doc = {
        "inference": {"model": str(tiny_model_dir), "vllm": {"lora_modules": {"helpdesk": str(adapter_dir)}}}
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def lora_engine(tiny_model_dir: Path, config_file: Path) -> Iterator[Engine]:
    eng = start_engine(tiny_model_dir, "--config", str(config_file))
    yield eng
    eng.process.stop()


def chat(engine: Engine, body: dict) -> httpx.Response:
    return httpx.post(engine.url + "/v1/chat/completions", json=body, timeout=60)


def answer(engine: Engine, model: str, question: str = TOPICS[1], **extra) -> str:
    r = chat(engine, chat_body(model, question, **extra))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    return r.json()["choices"][0]["message"]["content"]


def test_models_lists_the_adapter_with_its_parent(lora_engine: Engine) -> None:
    cards = {c["id"]: c for c in httpx.get(lora_engine.url + "/v1/models", timeout=10).json()["data"]}
    assert list(cards) == [TINY_MODEL_NAME, "helpdesk"]
    assert cards["helpdesk"]["parent"] == TINY_MODEL_NAME and cards[TINY_MODEL_NAME]["parent"] is None
    assert cards["helpdesk"]["root"] == "helpdesk"  # a name, never the adapter's directory
    one = httpx.get(lora_engine.url + "/v1/models/helpdesk", timeout=10).json()
    assert one["id"] == "helpdesk" and one["parent"] == TINY_MODEL_NAME


def test_adapter_answers_differ_from_the_base_model(lora_engine: Engine) -> None:
    assert answer(lora_engine, "helpdesk").startswith(ANSWER[:20])
    assert not answer(lora_engine, TINY_MODEL_NAME).startswith(ANSWER[:20])
    sampled = {"temperature": 0.9, "seed": 1234, "max_tokens": 16}
    base = answer(lora_engine, TINY_MODEL_NAME, **sampled)
    tuned = answer(lora_engine, "helpdesk", **sampled)
    assert base != tuned
    assert answer(lora_engine, "helpdesk", **sampled) == tuned  # same seed, same adapter: same answer
    r = chat(lora_engine, chat_body("helpdesk-nope", "hi"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_base_and_adapter_requests_batch_together(lora_engine: Engine) -> None:
    jobs = [(TINY_MODEL_NAME if i % 2 else "helpdesk", TOPICS[i % len(TOPICS)]) for i in range(8)]
    alone = [answer(lora_engine, model, q, max_tokens=24, ignore_eos=True) for model, q in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda j: answer(lora_engine, *j, max_tokens=24, ignore_eos=True), jobs))
    assert together == alone
    metrics = httpx.get(lora_engine.url + "/metrics", timeout=10).text
    assert 'custos_engine_lora_adapters{model_name="custos-tiny"} 1.0' in metrics
    assert "vllm:lora_requests_info" in metrics


def test_load_and_unload_at_run_time(lora_engine: Engine, adapter_dir: Path) -> None:
    url = lora_engine.url
    r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "second", "lora_path": str(adapter_dir)})
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'second' added successfully."
    ids = [c["id"] for c in httpx.get(url + "/v1/models").json()["data"]]
    assert ids == [TINY_MODEL_NAME, "helpdesk", "second"]
    assert answer(lora_engine, "second") == answer(lora_engine, "helpdesk")

    again = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "second", "lora_path": str(adapter_dir)}
    )
    assert again.status_code == 400 and "already been loaded" in again.json()["error"]["message"]
    missing = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/no/such/adapter"}
    )
    assert missing.status_code == 404
    not_adapter = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": str(adapter_dir.parent)}
    )
    assert not_adapter.status_code == 400 and "adapter_config.json" in not_adapter.json()["error"]["message"]
    assert httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "x"}).status_code == 400
    base_name = httpx.post(
        url + "/v1/load_lora_adapter", json={"lora_name": TINY_MODEL_NAME, "lora_path": str(adapter_dir)}
    )
    assert base_name.status_code == 400

    r = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "second"})
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'second' removed successfully."
    assert chat(lora_engine, chat_body("second", "hi")).status_code == 404
    assert httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "second"}).status_code == 404
    assert [c["id"] for c in httpx.get(url + "/v1/models").json()["data"]] == [TINY_MODEL_NAME, "helpdesk"]
    assert answer(lora_engine, "helpdesk").startswith(ANSWER[:20])  # the other adapter is untouched


def test_vllm_command_from_the_same_config(
    config_file: Path, adapter_dir: Path, tiny_model_dir: Path
) -> None:
    from sidecar.config import load_config

    config = load_config(config_file, environ={}).inference.model_copy(update={"engine": "vllm"})
    cmd = build_vllm_command(config)
    assert "--enable-lora" in cmd
    assert cmd[cmd.index("--lora-modules") + 1] == f"helpdesk={adapter_dir}"

    # The CLI: --lora works for vLLM too, on top of the file's adapters.
    res = subprocess.run(
        custos_cmd(
            "inference", "serve", "--config", str(config_file), "--engine", "vllm",
            "--lora", f"legal={adapter_dir}", "--print-command",
        ),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    printed = shlex.split(res.stdout.strip())
    i = printed.index("--lora-modules")
    assert printed[i + 1 : i + 3] == [f"helpdesk={adapter_dir}", f"legal={adapter_dir}"]
    assert "--enable-lora" in printed
    assert build_vllm_command(InferenceConfig(model=Path("/m"))).count("--enable-lora") == 0


def test_vllm_runs_with_runtime_lora_updates(tmp_path: Path, config_file: Path) -> None:
    """A stand-in vllm records its argv and environment: the load/unload routes are switched on."""
    fake = tmp_path / "vllm"
    record = tmp_path / "record.json"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    argv = [
        "inference",
        "serve",
        "--config",
        str(config_file),
        "--engine",
        "vllm",
        "--vllm-executable",
        str(fake),
    ]

    def run(env: dict[str, str]) -> dict:
        res = subprocess.run(custos_cmd(*argv), capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0, res.stderr
        return json.loads(record.read_text())

    # An operator's explicit setting wins (here: empty); without one, custos turns the routes on.
    seen = run({**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": ""})
    assert "--enable-lora" in seen["argv"] and "--lora-modules" in seen["argv"]
    assert seen["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == ""
    seen = run({k: v for k, v in os.environ.items() if k != "VLLM_ALLOW_RUNTIME_LORA_UPDATING"})
    assert seen["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_bad_lora_flag_is_one_line_exit_2(tiny_model_dir: Path, tmp_path: Path) -> None:
    for spec, needle in (("noequals", "--lora"), (f"x={tmp_path}", "adapter_config.json")):
        res = subprocess.run(
            custos_cmd("inference", "serve", "--model", str(tiny_model_dir), "--lora", spec, "--port", "1"),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr and needle in res.stderr
