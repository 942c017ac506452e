"""deploy/compose.yaml and the Dockerfile match the service: every T2A_ variable they set is a
setting, every service has a health check, the roles are the README's."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from helpers import ROOT

from api.config import ServiceConfig


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return data


def settings_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_every_t2a_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = {f"T2A_{name.upper()}" for name in ServiceConfig.model_fields}
    used = {k for s in compose["services"].values() for k in settings_of(s) if k.startswith("T2A")}
    assert used and used <= known, used - known
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Scale-out", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(T2A_[A-Z0-9_]+)", section))
    assert named and named <= known, named - known


def test_the_topology_and_its_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(services)
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    api, worker = settings_of(services["api"]), settings_of(services["worker"])
    assert api["T2A_RUN_WORKER_IN_PROCESS"] == "false" and services["api"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"] and worker["T2A_HEALTH_PORT"]
    for role in (api, worker):  # one database, one queue, one output volume for all
        assert role["T2A_DATABASE_URL"].startswith("postgresql+psycopg://text2art:")
        assert role["T2A_QUEUE_URL"] == "redis://redis:6379/0"
        assert role["T2A_AUTO_MIGRATE"] == "false"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("api", "worker"):
        assert "outputs:/outputs" in services[name]["volumes"]
        waits = services[name]["depends_on"]
        assert waits["migrate"]["condition"] == "service_completed_successfully"
        assert waits["postgres"]["condition"] == "service_healthy"


def test_the_image_serves_either_role_and_checks_its_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'pip install ".[redis,postgres,s3]"' in dockerfile
    check = dockerfile.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert "T2A_HEALTH_PORT" in check and "T2A_PORT" in check and "/healthz" in check
