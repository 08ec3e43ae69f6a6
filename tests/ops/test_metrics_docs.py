"""docs/metrics.md does not drift from a real sidecar's ``/metrics``: every documented metric name is
exposed, every documented label name is on the samples of its metric, and the documented label values
that a request can produce (entity types, auth failure reasons, status classes) are the real ones.

The sidecar runs for real (``custos serve``), in front of the recording upstream, with the GPU
simulation on (DCGM names too), and is sent requests that produce the series the labels live on."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bench.stack import Sidecar, mint_token
from bench.upstream import RecordingUpstream
from sidecar.redaction.detectors import ENTITY_TYPES

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
PER_GPU = ("gpu", "uuid", "name", "mig")
# Series that exist only once something happened, as the document says; the simulated steady GPU
# has no fan, no XID event and no failing NVML call.
CONDITIONAL = {
    "custos_gpu_fan_speed_ratio": "only on boards with a fan",
    "DCGM_FI_DEV_FAN_SPEED": "only on boards with a fan",
    "custos_gpu_xid_errors_total": "from the first XID event",
    "custos_gpu_collector_errors_total": "from the first failed NVML call",
}
_NAME = re.compile(r"`((?:custos|DCGM)_[A-Za-z0-9_]+)`")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


# -- what the document says ---------------------------------------------------------------------------
def _section(title: str) -> str:
    return DOC.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def _names(cell: str) -> list[str]:
    """``custos_gpu_memory_used_bytes` / `_free_bytes`` -> the full names (suffix shorthand expanded)."""
    names = _NAME.findall(cell)
    for suffix in re.findall(r"`(_[a-z_]+)`", cell):
        parts = names[0].split("_")
        names.append("_".join(parts[: -len(suffix.strip("_").split("_"))]) + suffix)
    return names


def _label_names(cell: str) -> list[str]:
    """``route, model`` / ``reason (`gpu_idle`, ...)`` / ``(none)`` -> label names."""
    cell = re.sub(r"\([^)]*\)", "", cell)
    return [w for w in re.split(r"[,\s]+", cell.replace("`", "")) if re.fullmatch(r"[a-z_]+", w)]


def documented() -> dict[str, list[str]]:
    """Metric name -> documented label names, from the request and GPU tables and the list of other
    features' metrics (``name{label}``)."""
    out: dict[str, list[str]] = {}
    for row in _table_rows(_section("Request metrics")):
        for name in _names(row[0]):
            out[name] = _label_names(row[2])
    for name, labels in re.findall(r"`(custos_[a-z_]+)(?:\{([a-z_,]+)\})?`", _section("Request metrics")):
        out.setdefault(name, labels.split(",") if labels else [])
    for row in _table_rows(_section("GPU metrics")):
        for name in _names(row[0]):
            wide = row[2].startswith("collector-wide")
            out[name] = [*([] if wide else PER_GPU), *_label_names(row[2].removeprefix("collector-wide"))]
    dcgm = _section("GPU metrics").split("### DCGM-exporter names", 1)[1]
    for name in re.findall(r"`(DCGM_FI_DEV_[A-Z_]+)`", dcgm):
        out.setdefault(name, ["gpu", "UUID", "device", "modelName"])
    return out


def test_the_document_is_read() -> None:
    docs = documented()
    assert docs["custos_requests_total"] == ["route", "model", "status_class", "role"]
    assert docs["custos_redactions_total"] == ["entity_type"]
    assert docs["custos_audit_refused_total"] == ["reason"]
    assert "custos_gpu_memory_free_bytes" in docs and "custos_gpu_memory_total_bytes" in docs
    assert docs["custos_gpu_ecc_errors_total"] == [*PER_GPU, "error", "counter"]
    assert "DCGM_FI_DEV_GPU_UTIL" in docs and len(docs) > 60


# -- what a real sidecar serves -----------------------------------------------------------------------
def parse_exposition(text: str) -> tuple[set[str], dict[str, list[dict[str, str]]]]:
    """(every metric name, including the ``# TYPE`` names of families without samples yet; samples
    by name -> their label sets)."""
    names: set[str] = set()
    samples: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
            continue
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            name = m.group(1)
            names.add(name)
            samples.setdefault(name, []).append(dict(_LABEL.findall(m.group(2) or "")))
    return names, samples


def _family(name: str, samples: dict[str, list[dict[str, str]]]) -> list[dict[str, str]]:
    """The samples of a documented metric (a histogram's documented name has ``_bucket`` etc.)."""
    out = []
    for suffix in ("", "_bucket", "_count", "_sum"):
        out += samples.get(name + suffix, [])
    return out


@pytest.fixture
def live(upstream: RecordingUpstream, start_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return start_sidecar(upstream.url, {"gpu": {"simulation": "steady", "names": "both", "interval_s": 0.5}})


def _traffic(sc: Sidecar) -> None:
    with httpx.Client(base_url=sc.url, timeout=30) as client:
        chat = {"model": "custos-tiny", "messages": [{"role": "user", "content": "mail me: ann@example.com"}]}
        assert client.post("/v1/chat/completions", json=chat, headers=sc.headers).status_code == 200
        assert client.get("/v1/models", headers=sc.headers).status_code == 200
        assert client.post("/v1/chat/completions", json=chat).status_code == 401  # missing_token
        bad = {"Authorization": "Bearer " + mint_token(ttl_s=-60)}
        assert client.post("/v1/chat/completions", json=chat, headers=bad).status_code == 401  # expired
        nobody = {"Authorization": "Bearer " + mint_token("eve", ["nobody"])}
        assert client.post("/v1/chat/completions", json=chat, headers=nobody).status_code == 403


def _scrape(sc: Sidecar, ready: Callable[[set[str]], bool], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(sc.url + "/metrics", headers=sc.headers, timeout=10).text
        if ready(parse_exposition(text)[0]) or time.monotonic() > deadline:
            return text
        time.sleep(0.3)


def test_documented_metrics_and_labels_exist_on_metrics(live: Sidecar) -> None:
    _traffic(live)
    text = _scrape(live, lambda names: {"custos_gpu_count", "DCGM_FI_DEV_GPU_UTIL"} <= names)
    names, samples = parse_exposition(text)
    docs = documented()

    missing = sorted(n for n in docs if n not in names and n not in CONDITIONAL)
    assert not missing, f"docs/metrics.md documents metrics that /metrics does not expose: {missing}"

    wrong: list[str] = []
    for name, labels in docs.items():
        family = _family(name, samples)
        for label in labels:
            if family and not any(label in s for s in family):
                have = sorted({k for s in family for k in s if k != "le"})
                wrong.append(f"{name}: no label {label!r} (its labels: {have})")
    assert not wrong, "docs/metrics.md names labels the samples do not have:\n" + "\n".join(wrong)

    # The metrics the traffic above produced have samples, so their labels were really checked.
    for name in (
        "custos_requests_total",
        "custos_request_duration_seconds",
        "custos_input_tokens_total",
        "custos_errors_total",
        "custos_auth_failures_total",
        "custos_rbac_denials_total",
        "custos_redactions_total",
        "custos_gpu_utilization_ratio",
        "custos_gpu_clock_event_reason",
        "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert _family(name, samples), f"{name}: no samples after the test traffic"


def _values(row_text: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z0-9_]+)`", row_text))


def test_documented_label_values_are_the_real_ones(live: Sidecar) -> None:
    _traffic(live)
    _, samples = parse_exposition(_scrape(live, lambda names: "custos_redactions_total" in names))
    request_rows = {row[0]: row for row in _table_rows(_section("Request metrics"))}

    # Entity types: every one the document names is a real entity type, and the one the request
    # carried is counted under the documented name.
    entities = _values(request_rows["`custos_redactions_total`"][3]) - {"custos_redactions_total"}
    assert entities, "no entity types documented"
    assert entities <= set(ENTITY_TYPES), f"not entity types: {sorted(entities - set(ENTITY_TYPES))}"
    counted = {s["entity_type"] for s in samples.get("custos_redactions_total", [])}
    assert "EMAIL" in counted and "EMAIL" in entities, counted

    # Auth failure reasons named in the document include the ones produced, under those names.
    reasons = _values(request_rows["`custos_auth_failures_total`"][3])
    produced = {s["reason"] for s in samples.get("custos_auth_failures_total", [])}
    assert {"missing_token", "expired"} <= produced <= reasons | {"other"}
    assert {"missing_token", "expired"} <= reasons

    # status_class values of the label table cover what was served.
    label_rows = {row[0]: row for row in _table_rows(_section("Label values"))}
    classes = _values(label_rows["`status_class`"][1])
    served = {s["status_class"] for s in samples.get("custos_requests_total", [])}
    assert served and served <= classes, f"status classes not documented: {sorted(served - classes)}"
