"""The monitoring config in ``deploy/`` against what ``GET /metrics`` really exposes.

Every metric the Grafana dashboard and the Prometheus alert rules query must be one that
:func:`web.metrics.render` writes, with the labels they select on, group by and show: the names
are checked against the exposition of an overview read from a real Redis where a worker, a
subscriber and a producer ran (messages pushed, handled, retried, dead-lettered, published to
someone and to nobody, lost, a reconnect; the worker reporting a message in hand past its limit
and an abandoned handler). Neither promtool nor Grafana is needed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from consumers.subscriber import Subscriber
from consumers.worker import Worker
from loadtest.harness.waits import wait_for
from producer import Envelope, Producer, Settings, keys, make_client
from producer.observe.overview import read_overview
from producer.observe.stats import Stats
from producer.producer import QueueFull
from producer.store.envelope import encode, new
from tests.inhandkit import hands
from tests.inproc import running
from web.metrics import render

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "redis-bus.json"
BUILD = ROOT / "deploy" / "grafana" / "build.py"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
METRIC = re.compile(r"\b(bus_[A-Za-z0-9_:]*)")
SELECTOR = re.compile(r"\b(bus_[A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*(bus_[A-Za-z0-9_:]*)\s*,\s*([A-Za-z_]\w*)\s*\)")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
ALERT_LABEL = re.compile(r"\$labels\.([A-Za-z_]\w*)")
VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    config = load_yaml(PROMETHEUS)
    rules = []
    for name in config["rule_files"]:
        path = PROMETHEUS.parent / name  # Prometheus reads rule_files relative to the config
        assert path.is_file(), f"rule file {name} named in prometheus.yml is missing"
        for group in load_yaml(path)["groups"]:
            rules.extend(group["rules"])
    return rules


def queries() -> list[tuple[str, str, set[str]]]:
    """(where, PromQL, the label names it shows) for every query in deploy/."""
    out = []
    for panel in dashboard()["panels"]:
        for t in panel.get("targets", []):
            where = f"panel {panel['id']} ({panel['title']}) {t['refId']}"
            out.append((where, t["expr"], set(LEGEND.findall(t.get("legendFormat", "")))))
    for rule in alert_rules():
        shown = {
            label
            for text in rule.get("annotations", {}).values()
            for label in ALERT_LABEL.findall(text)
        }
        out.append((f"alert {rule['alert']}", rule["expr"], shown))
    return out


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(QUOTED.sub('""', expr)))


def label_uses(expr: str) -> tuple[list[tuple[str, str]], set[str]]:
    """([(metric, label) in its selector], labels grouped by) of one expression."""
    bare = QUOTED.sub('""', expr)
    selected = [
        (metric, label)
        for metric, body in SELECTOR.findall(bare)
        for label in MATCHER.findall(body)
    ]
    grouped = {label.strip() for labels in GROUPING.findall(bare) for label in labels.split(",")}
    return selected, grouped - {""}


# --- the real exposition ----------------------------------------------------------------------


def scrape(r: redis.Redis, settings: Settings) -> dict[str, set[str]]:
    """What /metrics would say now: sample name -> the label names its samples carry."""
    text = render(read_overview(r, settings)).decode()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, set()).update(s.labels)
    return samples


def declared(r: redis.Redis, settings: Settings) -> set[str]:
    """Every sample name the exposition's families can have, samples or not (a counter
    ``x``: ``x_total``; a histogram: ``_bucket``, ``_sum``, ``_count``; a gauge: its name)."""
    text = render(read_overview(r, settings)).decode()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes[family.type]
    }


def used_metrics() -> set[str]:
    names = {name for _, expr, _ in queries() for name in metric_names(expr)}
    for var in dashboard()["templating"]["list"]:
        names |= metric_names(var.get("definition", ""))
    return names


def test_every_metric_deploy_queries_is_exposed_with_its_labels(
    settings: Settings, r: redis.Redis
) -> None:
    settings = settings.replace(
        queues=("default", "backlog"), channels=("default", "nowhere"), max_attempts=2
    )
    web = Stats("web", "deploy-test", {"name": "web-deploy-test"})
    producer = Producer(make_client(settings, "producer"), stats=web)
    small = Producer(make_client(settings, "producer"), stats=web, max_queue_depth=2)
    handled: list[Envelope] = []

    def handler(env: Envelope) -> None:
        if env.payload == "poison":
            raise ValueError("poison")
        handled.append(env)

    worker = Worker(settings, "default", "w1", handler)
    # What its handlers hold, as the worker reports it (tests/inhandkit.py until it does).
    worker.stats.set_state(**hands(8, 1, oldest_age_ms=5_000, limit_ms=1_000, abandoned=1))
    subscriber = Subscriber(settings, ["default"], [], "s1", lambda env: None)
    used = used_metrics()
    unknown = sorted(used - declared(r, settings))
    assert not unknown, f"deploy/ queries metrics that /metrics does not expose: {unknown}"
    with running(worker), running(subscriber):

        def numsub() -> int:
            return int(r.pubsub_numsub(keys.channel("default"))[0][1])

        wait_for(lambda: numsub() == 1, 5, "the subscriber subscribed")
        r.client_kill_filter(_type="pubsub")
        wait_for(lambda: subscriber.stats.get("reconnects") >= 1, 5, "a reconnect")
        wait_for(lambda: numsub() == 1, 5, "the subscriber subscribed again")

        producer.push_many(list(range(10)))
        producer.push("poison")  # fails twice (max_attempts 2): retried, then dead-lettered
        small.push_many(["waits", "waits"], "backlog")  # no worker: depth and oldest age
        with pytest.raises(QueueFull):
            small.push("refused", "backlog")
        producer.publish_many(list(range(5)))
        producer.publish("to nobody", "nowhere")
        for seq in (1, 4):  # a producer of its own whose seq 2 and 3 never arrive: 2 lost
            gap = new("gap", src="deploy-gap", seq=seq, mode="pubsub")
            r.publish(keys.channel("default"), encode(gap))
        for counter in ("rejected", "unavailable", "unconfirmed"):
            web.incr(counter)  # what the web app counts on a 4xx, a 503 and a lost reply
        pipe = r.pipeline(transaction=False)
        web.flush(pipe, settings.stats_ttl_s, settings.stats_interval_s)
        pipe.execute()
        wait_for(lambda: subscriber.stats.get("lost") == 2, 5, "2 lost")

        deadline = time.monotonic() + 10
        while True:  # until the workers' and subscriber's next stats writes landed
            samples = scrape(r, settings)
            missing = sorted(used - set(samples))
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(handled) == 10
    assert not missing, f"no sample of these after a real run (labels unchecked): {missing}"

    wrong: list[str] = []
    for where, expr, shown in queries():
        known = set(TARGET_LABELS).union(*(samples.get(m, set()) for m in metric_names(expr)))
        selected, grouped = label_uses(expr)
        for m, label in selected:
            if label not in samples.get(m, set()) | TARGET_LABELS:
                wrong.append(f"{where}: {m} has no label {label}")
        for label in sorted(grouped - known):
            wrong.append(f"{where}: grouped by {label}, which none of its metrics has")
        for label in sorted(shown - (grouped or known)):
            wrong.append(f"{where}: shows {label}, which its result lacks")
    for var in dashboard()["templating"]["list"]:
        for metric, label in LABEL_VALUES.findall(var.get("definition", "")):
            if label not in samples.get(metric, set()):
                wrong.append(f"variable {var['name']}: {metric} has no label {label}")
    assert not wrong, "\n".join(wrong)


# --- the files themselves ---------------------------------------------------------------------


def test_prometheus_scrapes_the_web_app_and_loads_the_rules() -> None:
    config = load_yaml(PROMETHEUS)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "redis-bus"
    assert job["metrics_path"] == "/metrics"
    assert job["scrape_interval"] == "5s"
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["127.0.0.1:8000"]
    rules = alert_rules()  # every rule file exists and parses
    exprs = {rule["expr"]: rule for rule in rules}
    assert exprs["bus_queue_workers_alive == 0"]["for"] == "1m"
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        assert rule["expr"].strip() and rule["labels"]["severity"], rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert DURATION.match(rule.get("for", "0s")), f"{rule['alert']}: for {rule.get('for')}"


def test_every_query_is_well_formed() -> None:
    for where, expr, _ in queries():
        bare = QUOTED.sub('""', expr)
        for opening, closing in ("()", "{}", "[]"):
            assert bare.count(opening) == bare.count(closing), f"{where}: {expr}"
        for window in re.findall(r"\[([^\]]*)\]", bare):
            assert DURATION.match(window), f"{where}: range [{window}]"


def test_dashboard_panels_targets_and_variables() -> None:
    board = dashboard()
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert {"queue", "channel"} <= set(variables)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    cells: dict[tuple[int, int], int] = {}
    for panel in board["panels"]:
        assert panel["datasource"] == DS, panel["title"]
        targets = panel.get("targets", [])
        assert any(t.get("expr", "").strip() for t in targets), f"{panel['title']}: no expr"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        for t in targets:
            assert t["datasource"] == DS and t["expr"].strip(), panel["title"]
            for var in VARIABLE.findall(t["expr"]):
                assert var in variables, f"{panel['title']}: ${var} is no dashboard variable"
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"


def test_dashboard_json_is_what_build_py_writes() -> None:
    spec = importlib.util.spec_from_file_location("deploy_grafana_build", BUILD)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.render() == DASHBOARD.read_text(encoding="utf-8"), (
        "deploy/grafana/redis-bus.json differs from build.py's output: edit build.py and run "
        "`.venv/bin/python deploy/grafana/build.py`"
    )
