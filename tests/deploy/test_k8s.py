"""deploy/k8s: every manifest is valid for Kubernetes 1.33 (kubernetes-validate, strict:
an unknown field fails), and the StatefulSet keeps what deploy/README.md promises: one stable
DNS name per pod as its advertised address, keys from the Secret by pod name, genesis and
settings from ConfigMaps, readiness from `status --ready`, a quorum kept through disruptions,
non-root on a read-only root filesystem with no capabilities."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest

from iomtnode.core.block import quorum

from .tools import DEPLOY, load_yaml_documents, unknown_iomtnode_variables

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33.0"


def manifests() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml"))
            if path.name != "kustomization.yaml" for doc in load_yaml_documents(path)]


def find(kind: str, name: str | None = None) -> dict:
    [doc] = [d for _, d in manifests()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return doc


def container() -> dict:
    [c] = find("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def env() -> dict[str, dict]:
    return {e["name"]: e for e in container()["env"]}


@pytest.mark.parametrize(("path", "doc"), manifests(),
                         ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}"
                              for p, d in manifests()])
def test_every_manifest_is_valid_for_kubernetes_strictly(path: Path, doc: dict):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field():
    doc = copy.deepcopy(find("StatefulSet"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_applies_everything_but_the_examples():
    [kustomization] = load_yaml_documents(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in files if name.endswith(".example.yaml")}
    assert examples == {"genesis.example.yaml", "keys.example.yaml"}
    assert set(kustomization["resources"]) == files - examples
    assert kustomization["namespace"] == find("Namespace")["metadata"]["name"]


def test_each_pod_advertises_its_stable_name_from_the_headless_service():
    sts = find("StatefulSet")
    headless = find("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # peers find unready pods
    assert headless["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
    assert [p["port"] for p in headless["spec"]["ports"]] == [7546, 9464]  # p2p, metrics
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # one alone is never ready
    variables = env()
    assert variables["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["POD_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}}
    service = headless["metadata"]["name"]
    assert variables["IOMTNODE_ADVERTISE_ADDRESS"]["value"] == (
        f"$(POD_NAME).{service}.$(POD_NAMESPACE).svc.cluster.local:7546")
    bootnodes = variables["IOMTNODE_BOOTNODES"]["value"].replace(" ", "").split(",")
    assert bootnodes == [
        f"{sts['metadata']['name']}-{i}.{service}.$(POD_NAMESPACE).svc.cluster.local:7546"
        for i in range(sts["spec"]["replicas"])]
    assert sts["spec"]["replicas"] == 4


def test_keys_come_from_the_secret_by_pod_name_and_genesis_from_its_config_map():
    sts = find("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    variables = env()
    secret = find("Secret")
    assert volumes["keys"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert mounts["keys"]["readOnly"] is True
    assert variables["IOMTNODE_KEY_FILE"]["value"] == (
        f"{mounts['keys']['mountPath']}/$(POD_NAME)")
    assert set(secret["stringData"]) == {
        f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])}
    assert all("not a key" in value for value in secret["stringData"].values())
    genesis = find("ConfigMap", "iomtnode-genesis")
    assert volumes["genesis"]["configMap"]["name"] == genesis["metadata"]["name"]
    assert variables["IOMTNODE_GENESIS_FILE"]["value"] == (
        f"{mounts['genesis']['mountPath']}/genesis.json")
    assert set(genesis["data"]) == {"genesis.json"}
    [source] = container()["envFrom"]
    assert source["configMapRef"]["name"] == "iomtnode-config"
    # the home sits inside the volume claimed per pod, where the image keeps its data
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]]["mountPath"] == "/var/lib/iomtnode"
    assert variables["IOMTNODE_HOME"]["value"] == "/var/lib/iomtnode/node"


def test_every_iomtnode_variable_is_a_setting_or_the_entrypoints():
    config = find("ConfigMap", "iomtnode-config")["data"]
    assert unknown_iomtnode_variables([*config, *env()]) == set()
    assert unknown_iomtnode_variables(["IOMTNODE_P2P_LISTN"]) == {"IOMTNODE_P2P_LISTN"}
    assert config["IOMTNODE_P2P_LISTEN"] == "0.0.0.0:7546"
    assert config["IOMTNODE_METRICS_LISTEN"] == "0.0.0.0:9464"
    assert config["IOMTNODE_API_LISTEN"] == "0.0.0.0:7545"


def test_probes_resources_and_a_locked_down_container():
    c = container()
    assert c["readinessProbe"]["exec"]["command"] == ["iomtnode", "status", "--ready"]
    assert c["livenessProbe"]["exec"]["command"][:2] == ["iomtnode", "status"]
    assert "--ready" not in c["livenessProbe"]["exec"]["command"]  # alive without peers
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) & set(c["resources"]["limits"])
    security = c["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    pod = find("StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's fixed uid
    assert pod["enableServiceLinks"] is False  # no IOMTNODE_* variables from Services
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}  # writable scratch
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"api": 7545, "p2p": 7546, "metrics": 9464}
    api = find("Service", "iomtnode-api")
    assert {p["targetPort"] for p in api["spec"]["ports"]} == {"api"}


def test_prometheus_finds_every_pod_by_the_headless_service():
    """Metrics are per node: a scrape through a load-balanced Service reaches one pod at
    random (every pod's counters under one target, going up and down) and never a pod that is
    not ready, the one to watch. The headless Service names every pod, ready or not, with
    its metrics port, for Prometheus' endpoints discovery or static targets."""
    headless = find("Service", "iomtnode")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["targetPort"] for p in headless["spec"]["ports"]} == {
        "p2p": "p2p", "metrics": "metrics"}
    api = find("Service", "iomtnode-api")
    assert "metrics" not in {p["targetPort"] for p in api["spec"]["ports"]}


def test_disruptions_keep_a_quorum_of_authorities_up():
    sts, pdb = find("StatefulSet"), find("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == quorum(sts["spec"]["replicas"]) == 3
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
