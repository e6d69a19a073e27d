"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every tablesync
service runs a real CLI command, dependencies and mounts exist, the stack can scale its workers,
and Prometheus scrapes the ports the processes serve on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tablesync.config.settings import Settings, load_settings
from tablesync.console.cli import build_parser
from tablesync.console.demo import CONFIG
from tablesync.console.web.app import auth_from

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("build") == "."}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def test_the_stack_has_every_part() -> None:
    assert {"store-db", "redis", "migrate", "scheduler", "worker", "prometheus", "grafana", "erp-db", "crm-db",
            "demo-seed", "demo-traffic"} <= SERVICES.keys()
    assert {"migrate", "apply-config", "scheduler", "worker", "listen", "web", "demo-seed", "demo-traffic", "demo-odata-seed",
            "demo-odata-traffic"} <= OURS.keys()


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """The environment as compose hands it to the container: ${VAR:-default} → default, $$ → $."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)).replace("$$", "$") for k, v in service["environment"].items()}


@pytest.mark.parametrize("name", sorted(OURS))
def test_each_tablesync_service_runs_a_real_cli_command(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    command = OURS[name]["command"]
    args = build_parser().parse_args(command)  # argparse exits (a test failure) on an unknown command or flag
    assert callable(args.fn) and args.fn.__name__.startswith("cmd_")
    env = container_env(OURS[name])
    for key in [k for k in os.environ if k.startswith("TABLESYNC_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # validated as the container would at start
    if name == "web":  # the demo login the compose file documents works
        assert auth_from(settings).check("admin", "tablesync") == "admin"
    for config_file in ("tablesync.yaml", "tablesync-odata.yaml"):  # profile demo, profile demo-odata
        config = (ROOT / "compose" / config_file).read_text()
        for var in re.findall(r"\$\{(\w+)\}", config):
            assert var in env, f"{name}: {config_file} needs ${var}"


def test_the_demos_are_profiles_the_stack_runs_without() -> None:
    """`docker compose up` without `--profile demo` (or demo-odata) starts no demo service and needs
    none: a service outside the profiles may wait for a demo service only with `required: false`."""
    profiles = {p: {name for name, s in SERVICES.items() if p in s.get("profiles", [])} for p in ("demo", "demo-odata")}
    assert profiles["demo"] == {"erp-db", "crm-db", "demo-seed", "demo-traffic"}
    assert profiles["demo-odata"] == {"erp-db", "crm-odata", "demo-odata-seed", "demo-odata-traffic"}
    demo = profiles["demo"] | profiles["demo-odata"]
    for name in demo:  # a demo service needs only services of its own profile or of the stack
        own = {p for p in profiles if name in profiles[p]}
        for dep, how in (SERVICES[name].get("depends_on") or {}).items():
            assert dep not in demo or own <= set(SERVICES[dep]["profiles"]) or how.get("required") is False, (name, dep)
    for name, service in SERVICES.items():
        if name in demo:
            continue
        assert not service.get("profiles"), name
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep not in demo or how.get("required") is False, f"{name} cannot start without the demo's {dep}"
    environment = SERVICES["scheduler"]["environment"]
    for var in ("ERP_DATABASE_URL", "CRM_DATABASE_URL"):  # your apps' URLs replace the demo's without editing the file
        assert environment[var].startswith("${" + var + ":-")
    assert any(v.startswith("${TABLESYNC_CONFIG_FILE:-./compose/tablesync.yaml}:") for v in SERVICES["scheduler"]["volumes"])


def test_dependencies_exist_and_one_shot_services_do_not_restart() -> None:
    for name, service in SERVICES.items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            assert how["condition"] in CONDITIONS
            if how["condition"] == "service_completed_successfully":
                assert SERVICES[dep]["restart"] == "no", dep
            if how["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy, which has no healthcheck"


def test_long_running_services_have_healthchecks_and_named_volumes_are_declared() -> None:
    for name, service in SERVICES.items():
        if service["restart"] != "no" and not name.endswith("-traffic"):  # the simulated users serve nothing to check
            assert "healthcheck" in service, name
        for volume in service.get("volumes", []):
            source = re.sub(r"^\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")[0]  # ${VAR:-default} → default
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"


def test_workers_scale_and_prometheus_scrapes_the_served_ports() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N needs both absent
    prometheus = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    defaults = Settings()
    sd = jobs["tablesync-worker"]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == defaults.worker_metrics_port
    assert jobs["tablesync-scheduler"]["static_configs"][0]["targets"] == [f"scheduler:{defaults.scheduler_metrics_port}"]
    assert jobs["tablesync-web"]["static_configs"][0]["targets"] == ["web:8080"] and "--port" in SERVICES["web"]["command"]
    assert jobs["tablesync-listen"]["static_configs"][0]["targets"] == [f"listen:{defaults.listen_metrics_port}"]
    assert f":{defaults.listen_metrics_port}/metrics" in str(SERVICES["listen"]["healthcheck"])
    assert SERVICES["web"]["command"][SERVICES["web"]["command"].index("--port") + 1] == "8080"
    grafana = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert grafana.endswith("/tablesync.json") and (ROOT / "dashboards" / "grafana" / "dashboards" / "tablesync.json").exists()


def test_compose_config_is_the_demos_and_the_image_holds_every_package() -> None:
    config = (ROOT / "compose" / "tablesync.yaml").read_text()
    assert config.split("\n", 1)[1] == CONFIG.format(erp="${ERP_DATABASE_URL}", crm="${CRM_DATABASE_URL}")
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)  # type: ignore[union-attr]
    for package in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {package} {package}" in dockerfile, package
    assert 'ENTRYPOINT ["tablesync"]' in dockerfile


def test_the_odata_demo_crm_builds_from_its_lock_file_and_runs_the_tested_model() -> None:
    """compose/odata-crm: built with `npm ci` from a lock file that pins what the tests run (the test
    CRM's lock), copying the model the integration test serves; the seed and traffic speak OData."""
    crm = ROOT / "compose" / "odata-crm"
    assert SERVICES["crm-odata"]["build"] == "./compose/odata-crm"
    dockerfile = (crm / "Dockerfile").read_text()
    assert "npm ci --omit=dev" in dockerfile and "COPY package.json package-lock.json ./" in dockerfile
    for source in re.findall(r"^COPY (\S+) \S+$", dockerfile, re.M):
        assert (crm / source).exists(), f"the Dockerfile copies {source}, which is not in compose/odata-crm"
    assert (crm / "db" / "data" / "crm-leads.csv").exists() and "Licence" in (crm / "README.md").read_text()
    ours, tested = (json.loads(p.read_text()) for p in (crm / "package-lock.json", ROOT / "tests" / "odata_crm" / "package-lock.json"))
    assert {k: v["version"] for k, v in ours["packages"].items() if k} == {k: v["version"] for k, v in tested["packages"].items() if k}
    assert json.loads((crm / "package.json").read_text())["dependencies"] == ours["packages"][""]["dependencies"]
    port = re.search(r"PORT=(\d+)", dockerfile).group(1)  # type: ignore[union-attr]
    url = container_env(SERVICES["worker"])["CRM_ODATA_URL"]
    assert url == f"http://crm-odata:{port}/odata/v4/crm/" and f":{port}/odata/v4/crm/" in str(SERVICES["crm-odata"]["healthcheck"])
    assert "/odata/v4/crm" in (crm / "srv" / "service.cds").read_text()
    for name in ("demo-odata-seed", "demo-odata-traffic"):
        assert "--odata" in OURS[name]["command"]
