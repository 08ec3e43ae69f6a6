"""GPU telemetry: the collector against the NVML simulation (every scenario), against a sidecar
process, without NVML, with two workers, and against the real NVML when a GPU is present."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.procs import ManagedProcess, custos_cmd, free_port, wait_http
from custos.errors import ConfigError
from gpu.collector import GpuCollector
from gpu.sim import SCENARIO_DIR, SimulatedNvml, load_scenario

from .promtext import Scrape, scrape


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def collector_at(scenario: str, times: list[float], names: str = "custos") -> tuple[GpuCollector, Scrape]:
    clock = Clock()
    sim = SimulatedNvml(load_scenario(scenario), clock=clock)
    c = GpuCollector(sim, source="simulation", names=names)
    for t in times:
        clock.t = 1000.0 + t
        c.sample()
    return c, Scrape(c.exposition().decode())


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_scenario_loads_and_samples(path: Path):
    _, m = collector_at(str(path), [0, 10, 50, 100])
    sc = load_scenario(path)
    assert m.get("custos_gpu_collector_up", source="simulation") == (1 if sc.nvml_present else 0)
    assert m.get("custos_gpu_count") == len(sc.gpus)


def test_thermal_spike_ramps_throttles_and_recovers():
    _, m = collector_at("thermal-spike", [0])
    assert m.get("custos_gpu_utilization_ratio", gpu="0") == pytest.approx(0.20)
    assert m.get("custos_gpu_power_watts", gpu="0") == pytest.approx(150)
    _, m = collector_at("thermal-spike", [15])
    assert m.get("custos_gpu_utilization_ratio", gpu="0") == pytest.approx(0.59)  # halfway up the ramp
    _, m = collector_at("thermal-spike", [50])
    assert m.get("custos_gpu_temperature_celsius", gpu="0") == 93
    assert m.get("custos_gpu_memory_temperature_celsius", gpu="0") == 99
    assert m.get("custos_gpu_clock_event_reason", reason="hw_thermal_slowdown") == 1
    assert m.get("custos_gpu_clock_event_reasons_mask") == 0x20 | 0x40
    assert m.get("custos_gpu_sm_clock_hertz") == 1410e6
    _, m = collector_at("thermal-spike", [80])
    assert m.get("custos_gpu_temperature_celsius", gpu="0") == 78
    assert m.get("custos_gpu_clock_event_reason", reason="hw_thermal_slowdown") == 0
    assert m.get("custos_gpu_utilization_ratio", gpu="0") == pytest.approx(0.98)


def test_energy_counter_integrates_power():
    _, m = collector_at("thermal-spike", [0, 10])
    # 10 s ramping 150 W -> 326.67 W (linear): trapezoid = 2383.3 J
    assert m.get("custos_gpu_energy_joules_total") == pytest.approx(2383.3, rel=0.01)


def test_xid_ecc_retired_and_remapped():
    c, m = collector_at("xid-and-ecc", [5, 25])
    assert m.get("custos_gpu_ecc_errors_total", gpu="0", error="single_bit", counter="volatile") == 17
    assert m.get("custos_gpu_ecc_errors_total", gpu="0", error="double_bit") == 0
    assert m.get("custos_gpu_pcie_replay_errors_total", gpu="0") == 3
    assert not m.has("custos_gpu_xid_errors_total")
    for t in (32, 40, 50):  # the XID event is delivered once, not once per sample
        c.nvml.clock.t = 1000.0 + t
        c.sample()
    m = Scrape(c.exposition().decode())
    assert m.get("custos_gpu_xid_errors_total", gpu="0", xid="48") == 1
    assert m.get("custos_gpu_last_xid", gpu="0") == 48
    assert m.get("custos_gpu_last_xid", gpu="1") == 0
    assert m.get("custos_gpu_ecc_errors_total", gpu="0", error="double_bit", counter="aggregate") == 1
    assert m.get("custos_gpu_retired_pages", gpu="0", cause="double_bit") == 1
    assert m.get("custos_gpu_remapped_rows", gpu="0", kind="uncorrectable") == 1
    assert m.get("custos_gpu_row_remap_pending", gpu="0") == 1
    assert m.get("custos_gpu_ecc_errors_total", gpu="1") == 0


def test_gpu_lost_is_reported_once_and_the_other_gpu_goes_on(caplog):
    caplog.set_level(logging.INFO, logger="custos.gpu")
    c, m = collector_at("gpu-lost", [0, 10])
    assert m.get("custos_gpu_lost", gpu="1") == 0
    for t in (22, 25, 30, 40):
        c.nvml.clock.t = 1000.0 + t
        c.sample()
    m = Scrape(c.exposition().decode())
    assert m.get("custos_gpu_lost", gpu="1") == 1
    assert m.get("custos_gpu_lost", gpu="0") == 0
    assert m.get("custos_gpu_collector_up") == 1
    assert m.has("custos_gpu_utilization_ratio", gpu="0")
    assert not m.has("custos_gpu_utilization_ratio", gpu="1"), "a lost GPU's readings stop"
    assert m.get("custos_gpu_xid_errors_total", gpu="1", xid="79") == 1, "the XID that explains it stays"
    assert m.get("custos_gpu_fan_speed_ratio", gpu="0") == pytest.approx(0.45)
    lost_logs = [r for r in caplog.records if "is lost" in r.getMessage()]
    assert len(lost_logs) == 1 and lost_logs[0].levelno == logging.ERROR


def test_no_nvml_reports_once_and_exports_up_zero(caplog):
    caplog.set_level(logging.INFO, logger="custos.gpu")
    _, m = collector_at("no-nvml", [0, 5, 10, 100])
    assert m.get("custos_gpu_collector_up", source="simulation") == 0
    assert m.get("custos_gpu_count") == 0
    warnings = [r for r in caplog.records if "GPU telemetry unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_pynvml_missing_is_reported_not_raised(caplog):
    caplog.set_level(logging.INFO, logger="custos.gpu")
    c = GpuCollector(None, source="nvml")
    c.sample()
    m = Scrape(c.exposition().decode())
    assert m.get("custos_gpu_collector_up", source="nvml") == 0
    assert "nvidia-ml-py" in caplog.text


def test_mig_instances_and_per_process_memory():
    _, m = collector_at("mig", [0])
    migs = {s["mig"] for s in m.series("custos_gpu_memory_total_bytes")}
    assert migs == {"", "1", "2", "3"}
    assert m.get("custos_gpu_memory_total_bytes", mig="1") == 40 * 2**30
    assert m.get("custos_gpu_memory_used_bytes", mig="2") == 5 * 2**30
    _, m = collector_at("steady", [0])
    assert m.get("custos_gpu_process_memory_bytes", gpu="0", pid="4242", process="vllm") == 70 * 2**30


def test_dcgm_names_and_units():
    _, m = collector_at("thermal-spike", [50], names="dcgm")
    assert not m.has("custos_gpu_utilization_ratio")
    assert m.get("DCGM_FI_DEV_GPU_UTIL", gpu="0", device="nvidia0") == 98
    assert m.get("DCGM_FI_DEV_FB_USED", gpu="0") == 60 * 1024  # MiB
    assert m.get("DCGM_FI_DEV_GPU_TEMP") == 93
    assert m.get("DCGM_FI_DEV_POWER_USAGE") == pytest.approx(680)
    assert m.get("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS") == 0x60
    labels = m.series("DCGM_FI_DEV_GPU_UTIL")[0]
    assert set(labels) == {"gpu", "UUID", "device", "modelName"}
    _, both = collector_at("thermal-spike", [50], names="both")
    assert both.has("custos_gpu_utilization_ratio") and both.has("DCGM_FI_DEV_GPU_UTIL")


def test_scenario_errors_name_the_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"gpus": [{"name": "x"}], "events": [{"at": 1, "set": {"temprature": 90}}]})
    )
    with pytest.raises(ConfigError, match=r"events\[0\]\.set\.temprature: unknown parameter"):
        load_scenario(bad)
    bad.write_text(yaml.safe_dump({"gpus": [{"name": "x"}], "events": [{"at": 1, "gpu": 3, "xid": 79}]}))
    with pytest.raises(ConfigError, match=r"events\[0\]\.gpu: 3 is not a GPU index"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_scenario(tmp_path / "missing.yaml")


def test_background_thread_samples_and_stops():
    sim = SimulatedNvml(load_scenario("steady"))
    c = GpuCollector(sim, source="simulation", interval_s=0.1)
    c.start()
    deadline = time.monotonic() + 10
    while c.samples < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    c.stop()
    assert c.samples >= 3
    n = c.samples
    time.sleep(0.3)
    assert c.samples == n, "stopped collectors do not sample"
    assert not c._thread.is_alive()


def test_one_sampler_among_workers_sharing_a_directory(tmp_path: Path):
    """Two collectors on one multiprocess directory: one samples (holds the lock), the other serves
    the sampler's text, so NVML is read once per host and every worker exports the same."""
    a = GpuCollector(SimulatedNvml(load_scenario("steady")), source="simulation", shared_dir=str(tmp_path))
    b = GpuCollector(SimulatedNvml(load_scenario("steady")), source="simulation", shared_dir=str(tmp_path))
    assert a._is_sampler() is True
    assert b._is_sampler() is False
    a.sample()
    b._read_shared()
    assert b.exposition() == a.exposition() != b""
    assert b.samples == 0
    a.stop()  # the sampler goes away: the lock is free for the other one
    assert b._is_sampler() is True


def test_sidecar_with_gpu_sim_flag_and_two_workers(engine, tmp_path: Path):
    scenario = tmp_path / "fast.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "fast",
                "gpus": [{"name": "NVIDIA H100 80GB HBM3", "baseline": {"utilization": 40}}],
                "events": [{"at": 0, "xid": 63}, {"at": 0, "set": {"temperature": 88}}],
            }
        )
    )
    port = free_port()
    cfg = tmp_path / "sc.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port, "workers": 2},
                "upstream": {"url": engine.url},
                "state": {"dir": str(tmp_path / "state")},
                "auth": {"enabled": False},
                # Anonymous callers hold no metrics:read: this sidecar serves /metrics openly.
                "metrics": {"require_token": False},
                "gpu": {"interval_s": 0.2, "names": "both"},
            }
        )
    )
    proc = ManagedProcess(
        "sidecar-gpusim", custos_cmd("serve", "--config", str(cfg), "--gpu-sim", str(scenario))
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", timeout=60, proc=proc.proc)
        deadline = time.monotonic() + 20
        m = scrape(url)
        while not m.has("custos_gpu_xid_errors_total") and time.monotonic() < deadline:
            time.sleep(0.2)
            m = scrape(url)
        assert m.get("custos_gpu_collector_up", source="simulation") == 1
        assert m.get("custos_gpu_temperature_celsius", gpu="0") == 88
        assert m.get("DCGM_FI_DEV_GPU_TEMP", gpu="0") == 88
        assert m.get("custos_gpu_xid_errors_total", xid="63") == 1
        # both workers export the same single copy (no duplicated series from two samplers)
        assert m.text.count("\ncustos_gpu_count ") == 1
    finally:
        proc.stop()


def test_bad_gpu_sim_file_exits_2_with_one_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [{name: x}]\nevents: [{at: 1, lost: true, gpu: 7}]\n")
    out = subprocess.run(
        custos_cmd("serve", "--gpu-sim", str(bad), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"{bad}:2:35: events[0].gpu: 7 is not a GPU index" in out.stderr
    assert "Traceback" not in out.stderr
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"gpu": {"simulation": str(bad)}}))
    out = subprocess.run(
        custos_cmd("serve", "--config", str(cfg), "--port", str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"{bad}:2:35: events[0].gpu: 7 is not a GPU index" in out.stderr
    assert "Traceback" not in out.stderr


def test_sidecar_without_gpu_exports_collector_down(engine, start_sidecar):
    sidecar = start_sidecar(engine.url, {"gpu": {"interval_s": 0.2}})
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("a GPU with NVML is present here; covered by test_real_nvml")
    except Exception:
        pass
    deadline = time.monotonic() + 20
    m = scrape(sidecar.url, sidecar.headers)
    while not m.has("custos_gpu_collector_up") and time.monotonic() < deadline:
        time.sleep(0.2)
        m = scrape(sidecar.url, sidecar.headers)
    assert m.get("custos_gpu_collector_up", source="nvml") == 0
    # the proxy still works, and the problem is in the log exactly once
    assert scrape(sidecar.url, sidecar.headers).has("custos_build_info")
    time.sleep(0.6)
    assert sidecar.process.log().count("GPU telemetry unavailable") == 1


def _nvml_reason() -> str | None:
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"no NVIDIA GPU/driver on this machine (nvmlInit: {exc})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "NVML works but reports no GPU"
    finally:
        pynvml.nvmlShutdown()
    return None


@pytest.mark.gpu
def test_real_nvml():
    reason = _nvml_reason()
    if reason is not None:
        pytest.skip(f"real NVML test skipped: {reason}")
    import pynvml

    c = GpuCollector(pynvml, source="nvml", names="both")
    c.sample()
    time.sleep(0.2)
    c.sample()
    m = Scrape(c.exposition().decode())
    c.stop()
    assert m.get("custos_gpu_collector_up", source="nvml") == 1
    assert m.get("custos_gpu_count") >= 1
    assert m.has("custos_gpu_memory_total_bytes", gpu="0")
    assert m.has("custos_gpu_temperature_celsius", gpu="0")
    assert m.has("custos_gpu_power_watts", gpu="0")
    assert 0 <= m.get("custos_gpu_utilization_ratio", gpu="0") <= 1
    assert m.has("DCGM_FI_DEV_GPU_UTIL", gpu="0")
    assert m.get("custos_gpu_lost", gpu="0") == 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_cli_gpu_scenarios_and_sample():
    out = subprocess.run(custos_cmd("gpu", "scenarios"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    listed = {line.split()[0] for line in out.stdout.splitlines()}
    assert listed == {p.stem for p in SCENARIO_DIR.glob("*.yaml")}

    out = subprocess.run(
        custos_cmd("gpu", "sample", "--sim", "xid-and-ecc", "--at", "40", "--names", "both"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    m = Scrape(out.stdout)
    assert m.get("custos_gpu_xid_errors_total", gpu="0", xid="48") == 1
    assert m.get("DCGM_FI_DEV_XID_ERRORS", gpu="0") == 48
    # energy is integrated over the 40 s, not just the end points: 300 W and 290 W flat
    assert m.get("custos_gpu_energy_joules_total", gpu="0") == pytest.approx(300 * 40)

    out = subprocess.run(
        custos_cmd("gpu", "sample", "--sim", "no-nvml"), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert Scrape(out.stdout).get("custos_gpu_collector_up") == 0
    assert "GPU telemetry unavailable" in out.stderr

    out = subprocess.run(
        custos_cmd("gpu", "sample", "--sim", "steady", "--at", "-1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--at" in out.stderr and "Traceback" not in out.stderr
