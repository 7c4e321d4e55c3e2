"""The Kubernetes examples in infra/k8s: they parse, hang together, and follow the catalogue and the rules.

kubeconform is not available here, so this is parse + structure: every reference (ConfigMap, Secret,
port name, Strimzi cluster, Keeper and ClickHouse service names, Prometheus job) resolves, every
component has probes on /healthz and resources, every `its` flag exists, and the generated files
(KafkaTopics from schemas/topics.py, the PrometheusRule from its.rules.yml) are up to date.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.k8s import render
from schemas.topics import CATALOGUE

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
WORKLOADS = ("Deployment", "StatefulSet", "Job")
NO_HEALTHZ = {"sink-webhook"}  # serves no /healthz yet (documented in components.yaml)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _all() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.rglob("*.yaml")) for d in _docs(p)]


def _by_kind(kind: str) -> list[dict]:
    return [d for _, d in _all() if d["kind"] == kind]


def _one(kind: str) -> dict:
    found = _by_kind(kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_every_manifest_parses_and_is_namespaced() -> None:
    docs = _all()
    assert len(docs) >= 25
    kinds = {d["kind"] for _, d in docs}
    for kind in (
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "ClickHouseInstallation",
        "StatefulSet",
        "ServiceMonitor",
    ):
        assert kind in kinds, kind
    names = set()
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path
        meta = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]), (
            f"{path}: bad name {meta['name']}"
        )
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == "its", (
                f"{path}: {doc['kind']}/{meta['name']} has no namespace its"
            )
        key = (doc["kind"], meta["name"])
        assert key not in names, f"duplicate {key}"
        names.add(key)


def test_generated_files_are_up_to_date() -> None:
    for path, text in render.outputs().items():
        assert path.exists(), f"{path} missing: run `python -m infra.k8s.render`"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `python -m infra.k8s.render`"
    assert render.main(["--check"]) == 0


def test_every_catalogue_topic_is_a_kafka_topic_of_the_cluster() -> None:
    kafka = _one("Kafka")
    topics = {t["spec"]["topicName"]: t for t in _docs(K8S / "kafka" / "topics.yaml")}
    assert set(topics) == {spec.name for spec in CATALOGUE}
    for spec in CATALOGUE:
        topic = topics[spec.name]
        assert topic["kind"] == "KafkaTopic"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["spec"]["partitions"] == spec.partitions
        replicas = topic["spec"]["replicas"]
        assert replicas == 3
        config = topic["spec"]["config"]
        assert 1 < int(config["min.insync.replicas"]) < replicas + 1
        for key, value in spec.configs.items():
            if key != "min.insync.replicas":
                assert config[key] == value, (spec.name, key)
    # The renderer follows the catalogue: an extra topic appears, with its partitions.
    from schemas.topics import TopicSpec

    extra = render.kafka_topic(TopicSpec("its.extra.v1", 5, "its.X", "test", {"retention.ms": "1"}))
    assert extra["metadata"]["name"] == "its-extra-v1" and extra["spec"]["partitions"] == 5


def test_kafka_is_kraft_with_controller_and_broker_pools() -> None:
    kafka = _one("Kafka")
    annotations = kafka["metadata"]["annotations"]
    assert annotations["strimzi.io/kraft"] == "enabled" and annotations["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pools = _by_kind("KafkaNodePool")
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert controllers % 2 == 1, "a KRaft quorum needs an odd number of controllers"
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert int(config["message.max.bytes"]) >= 8 * 1024 * 1024  # frames topic allows 8 MiB records
    cm = next(d for d in _by_kind("ConfigMap") if d["metadata"]["name"] == "its-config")
    assert cm["data"]["ITS_KAFKA_BOOTSTRAP"] == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"


def test_clickhouse_installation_and_keeper_are_wired() -> None:
    chi = _one("ClickHouseInstallation")
    chk = _one("ClickHouseKeeperInstallation")
    nodes = chi["spec"]["configuration"]["zookeeper"]["nodes"]
    assert nodes[0]["host"] == f"keeper-{chk['metadata']['name']}"
    layout = chi["spec"]["configuration"]["clusters"][0]["layout"]
    assert layout["replicasCount"] >= 2
    cm = next(d for d in _by_kind("ConfigMap") if d["metadata"]["name"] == "its-config")
    assert cm["data"]["ITS_SINK__REPLICATED"] == "true"
    urls = {
        e["value"]
        for d in _by_kind("StatefulSet") + _by_kind("Job")
        for c in _containers(d)
        for e in c.get("env", [])
        if e["name"] == "ITS_CLICKHOUSE_URL"
    }
    assert urls == {f"http://its:$(CLICKHOUSE_PASSWORD)@clickhouse-{chi['metadata']['name']}:8123/its"}
    users = chi["spec"]["configuration"]["users"]
    secret_refs = [v for k, v in users.items() if k.endswith("/k8s_secret_password")]
    secrets = {d["metadata"]["name"]: d for d in _by_kind("Secret")}
    for ref in secret_refs:
        _ns, name, key = ref.split("/")
        assert key in secrets[name]["stringData"], ref


def test_components_have_probes_resources_and_resolvable_references() -> None:
    configmaps = {d["metadata"]["name"] for d in _by_kind("ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in _by_kind("Secret")}
    claims = {d["metadata"]["name"] for d in _by_kind("PersistentVolumeClaim")}
    workloads = [d for kind in WORKLOADS for d in _by_kind(kind)]
    its_workloads = [
        d for d in workloads if any(c["image"].startswith("its-camera-ai") for c in _containers(d))
    ]
    names = {d["metadata"]["name"] for d in its_workloads}
    assert {"inference", "analytics", "sink-clickhouse", "sink-webhook", "its-db-migrate"} <= names
    assert any(n.startswith("edge-") for n in names)
    for doc in workloads:
        name = doc["metadata"]["name"]
        spec = doc["spec"]
        if doc["kind"] != "Job":
            assert (
                spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
            ), name
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        volumes.update({c["metadata"]["name"]: c for c in spec.get("volumeClaimTemplates", [])})
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, name
        for c in _containers(doc):
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"], name
            for ref in c.get("envFrom", []):
                assert ref["configMapRef"]["name"] in configmaps, name
            defined: list[str] = []
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], (name, ref)
                for var in re.findall(r"\$\((\w+)\)", e.get("value", "")):
                    assert var in defined, f"{name}: {e['name']} uses $({var}) before it is defined"
                defined.append(e["name"])
            for var in re.findall(r"\$\((\w+)\)", " ".join(c.get("args", []))):
                assert var in defined, f"{name}: args use $({var}), not in env"
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, (name, m)
            if doc["kind"] == "Job" or not c["image"].startswith("its-camera-ai"):
                continue
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert "metrics" in ports, name
            if name in NO_HEALTHZ:
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                get = c[probe]["httpGet"]
                assert get["path"] == "/healthz" and get["port"] in ports, (name, probe)
            served = re.search(r"--metrics-port\s+(\d+)", " ".join(c["args"]))
            port = (
                int(served.group(1)) if served else 9104
            )  # the sink's port comes from ITS_SINK__METRICS_PORT
            assert port == ports["metrics"], f"{name} serves /metrics on {port}, declares {ports['metrics']}"


def test_its_flags_in_the_manifests_exist() -> None:
    from its.cli import app

    runner = CliRunner()
    for doc in [d for kind in WORKLOADS for d in _by_kind(kind)]:
        for c in _containers(doc):
            if not c["image"].startswith("its-camera-ai"):
                continue
            args = c["args"]
            words = [a for a in args if not a.startswith("-")]
            command = words[:2] if words[0] in ("edge", "process", "sink", "db") else words[:1]
            help_text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
            assert "Usage" in help_text, (command, help_text)
            for flag in (a for a in args if a.startswith("--")):
                assert flag in help_text, (
                    f"{doc['metadata']['name']}: `its {' '.join(command)}` has no {flag}"
                )


def test_service_monitor_scrapes_every_component_under_the_rule_jobs() -> None:
    sm = _one("ServiceMonitor")
    selector = sm["spec"]["selector"]["matchLabels"]
    port = sm["spec"]["endpoints"][0]["port"]
    services = [d for d in _by_kind("Service") if selector.items() <= d["metadata"]["labels"].items()]
    prom = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    statefulsets = {d["metadata"]["name"]: d for d in _by_kind("StatefulSet")}
    assert {s["metadata"]["name"] for s in services} == set(statefulsets)
    for svc in services:
        assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] in jobs
        assert port in {p["name"] for p in svc["spec"]["ports"]}
        sts = statefulsets[svc["metadata"]["name"]]
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
        assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_prometheus_rule_holds_the_project_rules() -> None:
    rule = _one("PrometheusRule")
    source = yaml.safe_load((ROOT / "infra" / "prometheus" / "rules" / "its.rules.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
