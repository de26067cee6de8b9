"""docker-compose.yml: valid for Compose, and the topology the cluster tests start by hand."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.processes import ProcessGroup

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_compose_file_mirrors_the_tested_topology() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    servers = [name for name, svc in services.items() if "serve" in (svc.get("command") or [])]
    assert len(servers) == 2
    for name in servers:
        env = services[name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "healthcheck" in services[name]
    assert {"redis", "postgres", "proxy", "migrate"} <= set(services)
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in nginx
    assert all(f"server {name}:8000" in nginx for name in servers)


def test_compose_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no docker-compose or docker compose plugin on this machine")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "LIVEMART_SECRET": "test"},
    )
    assert result.returncode == 0, result.stderr


def test_dashboard_queries_name_metrics_the_server_exports(livemart: ProcessGroup) -> None:
    server = livemart.start(module="tests.coreapp")
    exported = httpx.get(f"{server.url}/metrics").text
    names = {re.sub(r"_total$", "", name) for name in re.findall(r"^# TYPE (\S+) ", exported, re.MULTILINE)}
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    used = {
        re.sub(r"(_bucket|_total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"livemart_[a-z_]+", target["expr"])
    }
    missing = used - names
    assert not missing, f"dashboard uses metrics the server does not export: {missing}"
