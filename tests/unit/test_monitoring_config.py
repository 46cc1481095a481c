"""The monitoring files (deploy/prometheus, deploy/alertmanager, deploy/grafana) and compose's
`monitoring` profile: checked by Debian's promtool and amtool, against the metrics app/metrics.py
defines, and against the services and ports docker-compose.yml gives the app.

tests/e2e/test_alerting.py runs them: a real Prometheus and Alertmanager on the app under gunicorn."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from app.config import default_host
from tests import prometheus_server
from tests.prometheus_server import ALERT_RULES, ALERTMANAGER_CONFIG, DASHBOARDS, PROMETHEUS_CONFIG
from tests.unit.test_deployment import APP_SERVICES, REPO, SERVICES, interpolate, published_ports, settings_of

MONITORING = ("prometheus", "alertmanager", "grafana")
# The app services that run gunicorn (the image's command): the others run a flask command.
SERVED = [name for name in APP_SERVICES if "command" not in SERVICES[name]]
ALERTS = {  # issue 13's list (the outbox lag's since issue 14), and the targets' own
    "StorefrontTargetDown",
    "StorefrontNoApiTarget",
    "StorefrontHighErrorRatio",
    "StorefrontHighLatencyP99",
    "StorefrontBreakerOpen",
    "StorefrontNotReady",
    "StorefrontStockHoldRefusalsSpiking",
    "StorefrontOutboxLagGrowing",
}
GRAFANA_FILES = {
    "./deploy/grafana/provisioning/datasources/prometheus.yml": "/etc/grafana/provisioning/datasources/prometheus.yml",
    "./deploy/grafana/provisioning/dashboards/storefront.yml": "/etc/grafana/provisioning/dashboards/storefront.yml",
    "./deploy/grafana/dashboards": "/etc/grafana/dashboards",
}
PROMETHEUS = yaml.safe_load(PROMETHEUS_CONFIG.read_text())


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def bind_mounts(name: str) -> dict[str, str]:
    """Repository files mounted into the service: {source: target}; each must be read-only."""
    mounts = {}
    for volume in SERVICES[name].get("volumes", []):
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], f"{name} mounts {source} writable"
            mounts[source] = target
    return mounts


def container_port(name: str) -> int:
    [(_, _, port)] = published_ports(name)
    return port


def test_promtool_accepts_the_scrape_config_and_its_rule_file():
    """Run where compose mounts them from: the rule file is named relative to the config."""
    checked = run(prometheus_server.promtool(), "check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


def test_promtool_accepts_the_alert_rules():
    checked = run(prometheus_server.promtool(), "check", "rules", str(ALERT_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_each_alert_fires_on_what_it_is_about():
    """promtool's rule unit tests (tests/unit/alerts_test.yml): series in, alerts and their
    rendered summaries out."""
    tested = run(prometheus_server.promtool(), "test", "rules", str(Path(__file__).with_name("alerts_test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_amtool_accepts_the_alertmanager_config():
    checked = run(prometheus_server.amtool(), "check-config", str(ALERTMANAGER_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_have_a_severity_a_summary_and_a_description():
    rules = prometheus_server.alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_the_breaker_alert_fires_on_the_first_scrape_that_sees_one_open():
    """No `for`: breakers flap open / half-open every BREAKER_RESET_SECONDS, and the highest
    state of the last minute keeps the alert up across a probe."""
    [rule] = [rule for rule in prometheus_server.alert_rules() if rule["alert"] == "StorefrontBreakerOpen"]
    assert "for" not in rule
    assert rule["expr"].startswith("max_over_time(storefront_circuit_breaker_state[")


@pytest.mark.parametrize("expression", prometheus_server.expressions())
def test_alerts_and_panels_name_only_metrics_the_app_exports(expression):
    names = prometheus_server.metric_names(expression)
    assert names, expression
    assert names <= prometheus_server.app_metric_names() | prometheus_server.BUILT_IN_METRICS


def test_the_dashboards_parse_with_unique_panels_on_the_provisioned_data_source():
    datasources = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    [datasource] = datasources["datasources"]
    assert urlsplit(datasource["url"]).hostname == "prometheus"
    assert urlsplit(datasource["url"]).port == container_port("prometheus")
    dashboards = prometheus_server.dashboards()
    assert dashboards
    for dashboard in dashboards.values():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["targets"], panel["title"]
                assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    assert len({dashboard["uid"] for dashboard in dashboards.values()}) == len(dashboards)


def test_grafana_loads_the_dashboards_from_where_compose_mounts_them():
    providers = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/storefront.yml").read_text())
    [provider] = providers["providers"]
    assert provider["options"]["path"] == GRAFANA_FILES["./deploy/grafana/dashboards"]
    assert bind_mounts("grafana") == GRAFANA_FILES
    assert (REPO / "deploy/grafana/dashboards") == DASHBOARDS


def test_prometheus_scrapes_every_served_app_service_on_its_metrics_port():
    """One job per compose service that runs gunicorn, each replica found by Docker's DNS; the
    port is the one compose gives the app, which each master serves on every interface."""
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert set(SERVED) == {"api", "products-service", "cart-service", "gateway"}
    for name in SERVED:
        [discovery] = jobs[name]["dns_sd_configs"]
        assert (discovery["names"], discovery["type"]) == ([name], "A")
        settings = settings_of(name)
        assert (
            discovery["port"]
            == settings.metrics_port
            == int(interpolate(SERVICES[name]["environment"]["METRICS_PORT"]))
        )
        assert (settings.metrics_host or default_host(settings)) == "0.0.0.0"  # noqa: S104
        assert not settings.metrics_on_public_port


def test_the_metrics_port_stays_on_the_compose_network():
    for name in SERVED:
        port = settings_of(name).metrics_port
        assert SERVICES[name]["expose"] == [str(port)], name
        assert port not in {container for _, _, container in published_ports(name)}, name
        assert port not in {host for _, host, _ in published_ports(name)}, name


def test_prometheus_alerts_the_compose_alertmanager():
    [alertmanagers] = PROMETHEUS["alerting"]["alertmanagers"]
    [targets] = alertmanagers["static_configs"]
    assert targets["targets"] == [f"alertmanager:{container_port('alertmanager')}"]
    assert PROMETHEUS["rule_files"] == [ALERT_RULES.name]


@pytest.mark.parametrize("name", MONITORING)
def test_monitoring_services_run_in_their_profile_on_the_host_loopback_only(name):
    """Pinned official images (test_deployment's IMAGES), their files present."""
    service = SERVICES[name]
    assert service["profiles"] == ["monitoring"]
    assert {address for address, _, _ in published_ports(name)} == {"127.0.0.1"}
    for source in bind_mounts(name):
        assert (REPO / source).exists(), source


def test_prometheus_and_alertmanager_mount_the_repositorys_files():
    assert bind_mounts("prometheus") == {
        "./deploy/prometheus/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./deploy/prometheus/alerts.yml": "/etc/prometheus/alerts.yml",
    }
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    assert bind_mounts("alertmanager") == {
        "./deploy/alertmanager/alertmanager.yml": "/etc/alertmanager/alertmanager.yml"
    }
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in SERVICES["alertmanager"]["command"]


@pytest.mark.parametrize(("password", "starts"), [("", False), ("a-grafana-password", True)])
def test_grafana_refuses_to_start_without_an_admin_password(password, starts):
    """No default in the repository, and no `:?` that every other profile's operator would have
    to answer: the container's entrypoint stops on a blank one."""
    grafana = SERVICES["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    shell, flag, script = grafana["entrypoint"]
    script = script.replace("$$", "$").replace("exec /run.sh", "echo grafana starts")  # compose's escape
    started = subprocess.run(
        [shell, flag, script],
        env={"PATH": "/usr/bin:/bin", "GF_SECURITY_ADMIN_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert (started.returncode == 0) is starts
    assert ("grafana starts" in started.stdout) is starts
    assert ("set GRAFANA_ADMIN_PASSWORD" in started.stderr) is not starts


def test_the_readme_says_what_each_alert_means():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Metrics, alerts and dashboards") : readme.index("## Deployment")]
    for alert in ALERTS:
        assert f"| `{alert}` |" in section, alert
