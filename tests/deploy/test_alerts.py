"""The alert rules (deploy/prometheus/alerts.yml) and the shipped Prometheus configs, by promtool.

- ``promtool check config`` passes on every Prometheus config file deploy/ ships (a YAML file
  with ``scrape_configs``), and each loads the alert rules;
- ``promtool check rules`` passes on the rules, and ``promtool test rules`` on their unit tests
  (deploy/prometheus/alerts-test.yml), which test every alert;
- every alert is explained in docs/monitoring.md, and the Kubernetes ConfigMap and the compose
  stack carry the same file.

(Their expressions run against a live exporter in test_prometheus_loop.py.)
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from tests.deploy.kustomize import render
from tests.deploy.stack import DEPLOY, ROOT, compose
from tests.support.prometheus import promtool

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts-test.yml"
K8S_VERSION = "1.30.0"


def prometheus_configs() -> list[Path]:
    """Every Prometheus config file deploy/ ships."""
    found = []
    for path in sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]):
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        if any(isinstance(d, dict) and "scrape_configs" in d for d in docs):
            found.append(path)
    return found


def alert_names() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r["alert"] for g in rules["groups"] for r in g["rules"]]


def test_promtool_checks_every_shipped_prometheus_config() -> None:
    configs = prometheus_configs()
    assert configs == [DEPLOY / "prometheus" / "prometheus.yml"]
    for config in configs:
        done = promtool("check", "config", config)
        assert done.returncode == 0, done.stdout + done.stderr
        rule_files = yaml.safe_load(config.read_text(encoding="utf-8"))["rule_files"]
        assert [(config.parent / f).resolve() for f in rule_files] == [ALERTS.resolve()]


def test_promtool_checks_the_prometheus_alert_rules() -> None:
    done = promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_promtool_unit_tests_of_the_prometheus_alert_rules_pass() -> None:
    done = promtool("test", "rules", ALERT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it_and_a_section_in_the_docs() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    docs = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    for name in alert_names():
        assert name in fired, f"{name}: no unit test expects it to fire"
        assert f"`{name}`" in docs, f"{name}: not explained in docs/monitoring.md"


def test_compose_and_kubernetes_carry_the_prometheus_alert_rules() -> None:
    volumes = compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    (config_map,) = render(DEPLOY / "k8s" / "prometheus")
    kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)
    assert config_map["data"]["alerts.yml"] == ALERTS.read_text(encoding="utf-8")
