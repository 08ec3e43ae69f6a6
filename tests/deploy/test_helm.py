"""The Helm chart (and the plain manifests rendered from it): valid against the Kubernetes schemas and
the Prometheus Operator's types, shaped as the sidecar pattern, and its custos.yaml + container
environment accepted by the real config loader for every values file we ship."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import load_config

from .tools import (
    CHART,
    DEPLOY,
    KUBE_VERSION,
    container,
    container_environ,
    find,
    helm_template,
    render,
    run,
    tools,
)

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
VALUE_SETS: list[tuple[str, list[Path]]] = [
    ("defaults", []),
    *[(p.stem, [p]) for p in CI_VALUES],
    ("plain-manifests", [DEPLOY / "k8s" / "values.yaml"]),  # what deploy/k8s/custos.yaml is rendered with
]
IDS = [name for name, _ in VALUE_SETS]


def _values(files: list[Path], tmp_path: Path) -> list[Path]:
    """Values files; a production file's placeholder policy is replaced by the repository's real one."""
    out = []
    for f in files:
        doc = yaml.safe_load(f.read_text())
        if "rbac.yaml" in doc.get("policies", {}):
            doc["policies"]["rbac.yaml"] = (CHART.parents[2] / "policies" / "rbac.yaml").read_text()
            f = tmp_path / f.name
            f.write_text(yaml.safe_dump(doc))
        out.append(f)
    return out


@pytest.fixture(params=VALUE_SETS, ids=IDS)
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, list[dict[str, Any]], Path]:
    name, files = request.param
    files = _values(files, tmp_path)
    out = helm_template(values=files).stdout
    path = tmp_path / f"{name}.yaml"
    path.write_text(out)
    return name, [d for d in yaml.safe_load_all(out) if d], path


def test_helm_lint() -> None:
    for _, files in VALUE_SETS:
        args = [tools()["HELM"], "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
        for f in files:
            args += ["--values", str(f)]
        run(args)


def test_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]], Path]) -> None:
    _, objs, path = rendered
    proc = run(
        [tools()["KUBERNETES_VALIDATE"], "--strict", "-k", KUBE_VERSION, "--no-warn", str(path)], check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    core = [o for o in objs if not o["apiVersion"].startswith("monitoring.coreos.com")]
    assert proc.stdout.count("passed") == len(core)


def test_prometheus_operator_objects(rendered: tuple[str, list[dict[str, Any]], Path]) -> None:
    name, objs, path = rendered
    out = run([tools()["VALIDATE"], "operator", str(path)]).stdout
    wanted = sum(o["apiVersion"].startswith("monitoring.coreos.com") for o in objs)
    assert f"{wanted} Prometheus Operator objects valid" in out
    if name == "defaults":
        assert wanted == 2  # ServiceMonitor + PrometheusRule


def test_service_monitor_scrapes_with_the_token_secret() -> None:
    """/metrics needs a token granting metrics:read: both endpoints send the one in the Secret the
    values name; without a Secret name no token is sent (for metrics.require_token: false)."""
    sm = find(render(), "ServiceMonitor")
    assert [e["path"] for e in sm["spec"]["endpoints"]] == ["/metrics", "/metrics/upstream"]
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": "custos-prometheus-token", "key": "token"},
        }
    sm = find(render("--set", "serviceMonitor.tokenSecret.name="), "ServiceMonitor")
    assert all("authorization" not in e for e in sm["spec"]["endpoints"])


def test_tls_secret_serves_https_with_renewals_and_https_probes(tmp_path: Path) -> None:
    """sidecar.tls.secretName: the config names the mounted files (a directory mount, so renewals
    reach the sidecar), the probes and the ServiceMonitor speak HTTPS; the config loads for real."""
    objs = render("--set", "sidecar.tls.secretName=custos-tls", "--set", "sidecar.tls.clientCAKey=ca.crt")
    sidecar = container(find(objs, "Deployment"), "sidecar")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert sidecar[probe]["httpGet"]["scheme"] == "HTTPS"
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "tls")
    assert mount["mountPath"] == "/etc/custos/tls" and "subPath" not in mount
    volume = next(
        v for v in find(objs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"
    )
    assert volume["secret"]["secretName"] == "custos-tls"
    for endpoint in find(objs, "ServiceMonitor")["spec"]["endpoints"]:
        assert endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"]["ca"] == {"secret": {"name": "custos-tls", "key": "ca.crt"}}
    # The rendered config, with the Secret's files where the Pod mounts them.
    from sidecar.commands.tls import make_dev_pki

    pki = make_dev_pki(tmp_path / "pki", ["custos"], days=1)
    text = find(objs, "ConfigMap", "-config")["data"]["custos.yaml"]
    text = text.replace("/etc/custos/tls/tls.crt", str(pki.server_cert))
    text = text.replace("/etc/custos/tls/tls.key", str(pki.server_key))
    text = text.replace("/etc/custos/tls/ca.crt", str(pki.ca_cert))
    cfg_file = tmp_path / "custos.yaml"
    cfg_file.write_text(text)
    tls = load_config(cfg_file, environ={}).server.tls
    assert tls.enabled and tls.min_version == "1.3" and tls.client_ca_file == pki.ca_cert
    # Without the value: plain HTTP probes, no TLS section.
    plain = container(find(render(), "Deployment"), "sidecar")
    assert "scheme" not in plain["livenessProbe"]["httpGet"]


def test_schema_validation_is_live(tmp_path: Path) -> None:
    """A misspelt field fails both validators (strict mode really rejects unknown keys)."""
    objs = render()
    dep = find(objs, "Deployment")
    container(dep, "sidecar")["livenessProbe"]["initialDelaySecond"] = 30
    sm = find(objs, "ServiceMonitor")
    sm["spec"]["endpoints"][0]["intervall"] = "15s"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([dep, sm]))
    proc = run([tools()["KUBERNETES_VALIDATE"], "--strict", "-k", KUBE_VERSION, str(bad)], check=False)
    assert proc.returncode != 0 and "initialDelaySecond" in proc.stdout + proc.stderr
    proc = run([tools()["VALIDATE"], "operator", str(bad)], check=False)
    assert proc.returncode == 1 and "intervall" in proc.stderr


def test_config_loads_with_the_real_loader(
    rendered: tuple[str, list[dict[str, Any]], Path], tmp_path: Path
) -> None:
    """custos.yaml from the ConfigMap + the sidecar container's environment = what the pod loads."""
    name, objs, _ = rendered
    cm = find(objs, "ConfigMap", "-config")
    cfg_file = tmp_path / "custos.yaml"
    cfg_file.write_text(cm["data"]["custos.yaml"])
    env = container_environ(container(find(objs, "Deployment"), "sidecar"))
    assert env.pop("CUSTOS_CONFIG") == "/etc/custos/custos.yaml"
    cfg = load_config(cfg_file, environ=env)
    assert cfg.server.port == 8080 and cfg.server.host == "0.0.0.0"
    assert str(cfg.upstream.url).rstrip("/") == "http://127.0.0.1:8000"
    assert cfg.auth.dev_key is False
    if name == "production-values":
        assert cfg.audit.elasticsearch.hosts == ["https://es.logging.svc:9200"]
        assert cfg.audit.elasticsearch.password.get_secret_value().startswith("secret-custos-es-")
        assert str(cfg.audit.signing_key) == "/etc/custos/secrets/audit-signing.key"
        assert [k.path.name for k in cfg.auth.keys] == ["jwt-public.pem"]
        assert {r.name for r in cfg.alerting.receivers} == {"ops", "pager"}
        assert cfg.audit.fail_closed is True and cfg.server.workers == 2


def test_policies_configmap_holds_the_policy_the_config_names(rendered, tmp_path: Path) -> None:
    _, objs, _ = rendered
    cfg = yaml.safe_load(find(objs, "ConfigMap", "-config")["data"]["custos.yaml"])
    policies = find(objs, "ConfigMap", "-policies").get("data") or {}
    policy_file = cfg.get("rbac", {}).get("policy_file")
    assert policy_file == "/etc/custos/policies/rbac.yaml"
    assert "rbac.yaml" in policies
    # The shipped policy is the repository's, byte for byte.
    repo_policy = (CHART.parents[2] / "policies" / "rbac.yaml").read_text()
    assert policies["rbac.yaml"].strip() == repo_policy.strip()


def test_sidecar_pattern(rendered) -> None:
    _, objs, _ = rendered
    dep = find(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    sidecar = container(dep, "sidecar")
    inference = container(dep, "inference")
    # Only the sidecar exposes a port: 8080.
    assert [p["containerPort"] for p in sidecar["ports"]] == [8080]
    assert "ports" not in inference
    assert "--host=127.0.0.1" in inference["args"]
    # The seed's liveness probe, readiness on /ready, startup probes.
    live = sidecar["livenessProbe"]
    assert live["httpGet"] == {"path": "/health", "port": 8080}
    assert (live["initialDelaySeconds"], live["periodSeconds"]) == (30, 10)
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "startupProbe" in sidecar and "startupProbe" in inference
    start = inference["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 1800, "model loading gets 30 minutes"
    # Non-root everywhere, no service account token.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for c in (sidecar, inference):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # Secrets and config are mounted, not baked.
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert {"/etc/custos/custos.yaml", "/etc/custos/policies", "/etc/custos/secrets"} <= mounts
    svc = find(objs, "Service")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_gpu_resources_and_model_args() -> None:
    gpu_values = CHART / "ci" / "gpu-values.yaml"
    dep = find(render(values=[gpu_values]), "Deployment")
    inference = container(dep, "inference")
    assert inference["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert inference["resources"]["requests"]["nvidia.com/gpu"] == 4
    args = inference["args"]
    assert args[0] == "/models/llama-3.1-70b-instruct-awq"
    assert {
        "--tensor-parallel-size=4",
        "--quantization=awq",
        "--served-model-name=llama-3.1-70b",
        "--max-model-len=16384",
        "--enable-prefix-caching",
    } <= set(args)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    claim = next(v for v in pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert claim["claimName"] == "models-ro"

    cpu = find(render(values=[CHART / "ci" / "cpu-values.yaml"]), "Deployment")
    res = container(cpu, "inference")["resources"]
    assert "nvidia.com/gpu" not in res.get("limits", {}) and "nvidia.com/gpu" not in res.get("requests", {})
    assert "nodeSelector" not in cpu["spec"]["template"]["spec"]


def test_failover_scheduling_and_availability() -> None:
    objs = render()
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    tolerations = {(t["key"], t["effect"]): t for t in pod["tolerations"]}
    assert ("nvidia.com/gpu", "NoSchedule") in tolerations
    # A pod on a failed node is evicted after 30 s (default 300 s) and rescheduled on a healthy node.
    for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"):
        assert tolerations[(key, "NoExecute")]["tolerationSeconds"] <= 60
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    hpa = find(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert "replicas" not in find(objs, "Deployment")["spec"], "the HPA owns the replica count"


def test_network_policy_admits_only_8080() -> None:
    for files in ([], [CHART / "ci" / "production-values.yaml"]):
        np = find(render(values=files), "NetworkPolicy")
        assert np["spec"]["policyTypes"] == ["Ingress"]
        ports = [p for rule in np["spec"]["ingress"] for p in rule["ports"]]
        assert ports == [{"port": 8080, "protocol": "TCP"}]
    np = find(render(values=[CHART / "ci" / "production-values.yaml"]), "NetworkPolicy")
    assert np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "gateway"
    }


def test_secrets() -> None:
    objs = render(
        "--set",
        "secrets.jwtPublicKey=PEM",
        "--set",
        "secrets.auditSigningKey=KEY",
        "--set",
        "elasticsearch.enabled=true",
        "--set",
        "elasticsearch.password=pw",
    )
    keys = find(objs, "Secret", "-keys")
    assert set(keys["stringData"]) == {"jwt-public.pem", "audit-signing.key"}
    es = find(objs, "Secret", "-elasticsearch")
    assert es["stringData"]["ES_PASSWORD"] == "pw"
    # Credentials never land in the ConfigMap.
    assert "pw" not in find(objs, "ConfigMap", "-config")["data"]["custos.yaml"].split()
    # An existing Secret is used instead of creating one.
    objs = render(values=[CHART / "ci" / "production-values.yaml"])
    assert not [o for o in objs if o["kind"] == "Secret"]
    vols = {v["name"]: v for v in find(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["keys"]["secret"]["secretName"] == "custos-keys"


def test_bad_values_fail_with_a_clear_message() -> None:
    proc = helm_template("--set", "inference.engine=tgi", check=False)
    assert proc.returncode != 0 and "/inference/engine" in proc.stderr and "vllm" in proc.stderr
    proc = helm_template("--set", "gpu.count=two", check=False)
    assert proc.returncode != 0 and "/gpu/count" in proc.stderr
    proc = helm_template("--set", "elasticsearch.enabled=true", check=False)
    assert proc.returncode != 0 and "elasticsearch.password is required" in proc.stderr


def test_dashboards_and_rules_ship_with_the_chart() -> None:
    objs = render()
    dashboards = [
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    shipped = sorted(
        p.name for p in (CHART.parents[2] / "dashboards" / "grafana" / "dashboards").glob("*.json")
    )
    assert sorted(next(iter(d["data"])) for d in dashboards) == shipped
    rule = find(objs, "PrometheusRule")
    rules_file = yaml.safe_load((CHART / "files" / "prometheus" / "custos-rules.yml").read_text())
    assert rule["spec"] == rules_file
    run([tools()["PROMTOOL"], "check", "rules", str(CHART / "files" / "prometheus" / "custos-rules.yml")])


def test_plain_manifests_are_the_rendered_chart() -> None:
    """deploy/k8s/custos.yaml is `helm template` of the chart with deploy/k8s/values.yaml (no drift)."""
    committed = (DEPLOY / "k8s" / "custos.yaml").read_text()
    fresh = helm_template(values=[DEPLOY / "k8s" / "values.yaml"], namespace="custos").stdout
    assert committed.split("\n", 3)[3] == fresh, "run deploy/tools/render-k8s.sh"
