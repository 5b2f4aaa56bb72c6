"""deploy/compose: the compose file is valid against the Compose Specification's JSON schema
(vendored in tests/deploy/compose-spec, with its source and license), and it wires what
deploy/README.md says: a one-shot ceremony, four authorities that each advertise their own
service name, Prometheus scraping all four, Grafana provisioned with the dashboard's data
source. `docker compose config` runs too where Compose is installed (skipped otherwise: no
Docker here). The ceremony script itself runs against the real command line below."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from .tools import DEPLOY, load_yaml_documents, tool, unknown_iomtnode_variables

COMPOSE = DEPLOY / "compose"
SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"
NODES = ["node1", "node2", "node3", "node4"]
BIN = Path(sys.executable).parent


def compose() -> dict:
    [doc] = load_yaml_documents(COMPOSE / "compose.yaml")
    return doc


def schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_the_compose_file_is_valid_against_the_compose_specification():
    assert schema_errors(compose()) == []


def test_the_schema_rejects_what_compose_would(tmp_path: Path):
    doc = compose()
    typo = copy.deepcopy(doc)
    typo["services"]["node1"]["depends_onn"] = typo["services"]["node1"].pop("depends_on")
    wrong = copy.deepcopy(doc)
    wrong["services"]["node2"]["depends_on"]["ceremony"]["condition"] = "service_finished"
    for bad in (typo, wrong):
        assert schema_errors(bad)


def test_four_authorities_start_after_the_ceremony_each_advertising_its_name():
    services = compose()["services"]
    assert set(services) == {"ceremony", *NODES, "prometheus", "grafana"}
    ceremony = services["ceremony"]
    assert ceremony["entrypoint"] == ["/bin/sh", "/ceremony.sh"]
    assert "./ceremony.sh:/ceremony.sh:ro" in ceremony["volumes"]
    assert ceremony["environment"]["NODES"].split() == NODES
    assert ceremony["image"] == services["node1"]["image"]  # the same image
    for name in NODES:
        node = services[name]
        assert node["depends_on"] == {
            "ceremony": {"condition": "service_completed_successfully"}}
        assert node["environment"]["IOMTNODE_ADVERTISE_ADDRESS"] == f"{name}:7546"
        assert node["environment"]["IOMTNODE_BOOTNODES"].split(",") == [
            f"{other}:7546" for other in NODES if other != name]
        [volume] = node["volumes"]
        # each node sees its own directory of the ceremony's volume, and nothing else
        assert volume == {"type": "volume", "source": "homes", "target": "/var/lib/iomtnode",
                          "volume": {"subpath": name}}
        assert unknown_iomtnode_variables(node["environment"]) == set()
        assert node["healthcheck"]["test"] == ["CMD", "iomtnode", "status", "--ready"]
        assert node["read_only"] is True and node["cap_drop"] == ["ALL"]
    published = [p for name in NODES for p in services[name].get("ports", [])]
    assert published == ["127.0.0.1:7545:7545"]  # plain ws:// API: on loopback only


def test_prometheus_scrapes_every_node_and_grafana_has_the_dashboards_data_source():
    services = compose()["services"]
    [prometheus] = load_yaml_documents(COMPOSE / "prometheus.yml")
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"{name}:9464" for name in NODES]}]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in (
        services["prometheus"]["volumes"])

    provisioning = DEPLOY / "grafana" / "provisioning"
    [sources] = [doc for path in sorted((provisioning / "datasources").glob("*.yaml"))
                 for doc in load_yaml_documents(path)]
    [source] = sources["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (
        "prometheus", "prometheus", "http://prometheus:9090")
    [providers] = [doc for path in sorted((provisioning / "dashboards").glob("*.yaml"))
                   for doc in load_yaml_documents(path)]
    [provider] = providers["providers"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"]
                  if v.startswith("."))
    assert mounts == {"../grafana/provisioning": "/etc/grafana/provisioning",
                      "../grafana/dashboards": provider["options"]["path"]}


def test_every_file_a_service_mounts_is_in_the_repository():
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and volume.startswith("."):
                source = COMPOSE / volume.split(":", 1)[0]
                assert source.exists() or source.name == "dashboards", f"{name}: {volume}"


def test_the_dashboard_names_only_the_provisioned_data_source():
    dashboard = DEPLOY / "grafana" / "dashboards" / "iomtnode.json"
    uids = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            source = value.get("datasource")
            if isinstance(source, dict) and "uid" in source:
                uids.add(source["uid"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(dashboard.read_text()))
    assert uids <= {"prometheus", "${datasource}", "${DS_PROMETHEUS}", "-- Grafana --"}


def docker_compose_available() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not docker_compose_available(), reason="docker compose is not installed")
def test_docker_compose_config_accepts_it():
    result = subprocess.run(["docker", "compose", "--file", str(COMPOSE / "compose.yaml"),
                             "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_the_ceremony_script_makes_four_homes_of_one_genesis(tmp_path: Path):
    script = COMPOSE / "ceremony.sh"
    lint = subprocess.run([tool("shellcheck"), "--shell=sh", "--severity=style", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "CEREMONY_ROOT": str(tmp_path), "NODES": " ".join(NODES)}
    for _ in range(2):  # the second run finds it done and changes nothing
        run = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True,
                             text=True, timeout=150)
        assert run.returncode == 0, run.stderr
    assert "was made before" in run.stdout
    genesis = (tmp_path / "ceremony" / "genesis.json").read_bytes()
    for name in NODES:
        home = tmp_path / name / "node"
        assert (home / "genesis.json").read_bytes() == genesis
        config = tomllib.loads((home / "config.toml").read_text())
        assert config["advertise_address"] == f"{name}:7546"
        assert sorted(config["bootnodes"]) == [f"{o}:7546" for o in NODES if o != name]
    assert len(json.loads(genesis)["authorities"]) == len(NODES)
