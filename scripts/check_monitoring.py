"""The Grafana dashboard and the Prometheus alert rules against the metrics the server exposes.

Run by scripts/check-deploy.sh with the check venv's Python (PyYAML). Prints one line per
check and exits non-zero when any fails:

- deploy/grafana/stateful-mcp.json is JSON and a usable dashboard: a Prometheus data
  source variable that every panel and query uses, unique panel ids, unique refIds in a
  panel, a query in every target, panels inside the 24-column grid;
- every `stateful_mcp_*` name the dashboard or deploy/prometheus/alerts.yml mentions
  (queries, legends, descriptions) is a sample listed in deploy/prometheus/metrics.txt,
  which tests/it/deploy_metrics.rs keeps equal to a real replica's /metrics;
- every label a query matches on, groups by, or a legend or annotation prints is one the
  metrics of that query carry (or a label Prometheus adds to every target);
- every alert rule has `for:`, a severity, a summary and a description.

promtool checks the rules' syntax and runs their unit tests; this script checks what
promtool cannot know: which metrics exist. With `--queries FILE` it also writes the
dashboard's queries as a rule file (Grafana's `$replica` and `$__rate_interval` replaced by
values), for `promtool check rules` to parse them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/stateful-mcp.json"
RULES = ROOT / "deploy/prometheus/alerts.yml"
LIST = ROOT / "deploy/prometheus/metrics.txt"

# Labels Prometheus (or the Prometheus operator's target relabelling) puts on every
# scraped series, beside the server's own.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
SEVERITIES = {"critical", "warning", "info"}

NAME = re.compile(r"(?<![A-Za-z0-9_:])stateful_mcp_[A-Za-z0-9_]+")
SELECTOR = re.compile(r"(stateful_mcp_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")

failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def read_list() -> dict[str, set[str]]:
    exposed: dict[str, set[str]] = {}
    for line in LIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, labels = line.partition(" ")
            exposed[name] = {label for label in labels.split(",") if label}
    return exposed


def names_in(text: str) -> set[str]:
    return set(NAME.findall(text))


def label_problems(expr: str, printed: set[str], exposed: dict[str, set[str]]) -> list[str]:
    """Labels `expr` matches on or groups by, and `printed` ones, that its metrics lack."""
    metrics = names_in(expr) & exposed.keys()
    carried = set().union(*(exposed[m] for m in metrics)) | TARGET_LABELS
    problems = []
    for name, matchers in SELECTOR.findall(expr):
        for label in MATCHER.findall(matchers):
            if name in exposed and label not in exposed[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    grouped = {g.strip() for group in GROUPING.findall(expr) for g in group.split(",") if g.strip()}
    for label in sorted((grouped | printed) - carried):
        problems.append(f"no metric of `{expr[:60]}…` carries {label}")
    return problems


def check_dashboard(exposed: dict[str, set[str]]) -> list[str]:
    """Checks the dashboard; returns its queries."""
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except ValueError as e:
        check(False, f"{DASHBOARD.relative_to(ROOT)} is JSON", str(e))
        return []
    check(True, f"{DASHBOARD.relative_to(ROOT)} is JSON")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    check(
        source.get("type") == "datasource" and source.get("query") == "prometheus",
        "dashboard: a Prometheus data source variable `datasource`",
    )
    check(bool(dashboard.get("uid")) and bool(dashboard.get("title")), "dashboard: uid and title")

    panels = dashboard.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)) and None not in ids, "dashboard: unique panel ids", f"{ids}")
    wrong_source, outside, no_query, refids, labels = [], [], [], [], []
    queries: list[str] = []
    for panel in panels:
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24 or not grid.get("h"):
            outside.append(panel.get("title"))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            wrong_source.append(panel.get("title"))
        targets = panel.get("targets", [])
        if not targets:
            no_query.append(panel.get("title"))
        ref_ids = [t.get("refId") for t in targets]
        if len(ref_ids) != len(set(ref_ids)):
            refids.append(panel.get("title"))
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                no_query.append(panel.get("title"))
            if target.get("datasource", {}).get("uid") != "${datasource}":
                wrong_source.append(panel.get("title"))
            queries.append(expr)
            printed = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
            labels += [f"{panel.get('title')}: {p}" for p in label_problems(expr, printed, exposed)]
    check(not wrong_source, "dashboard: every panel and query on ${datasource}", f"{wrong_source}")
    check(not outside, "dashboard: panels inside the 24-column grid", f"{outside}")
    check(not no_query, "dashboard: a query in every target of every panel", f"{no_query}")
    check(not refids, "dashboard: unique refIds in each panel", f"{refids}")
    check(not labels, "dashboard: labels the queried metrics carry", "; ".join(labels))

    named = names_in(DASHBOARD.read_text())
    unknown = sorted(named - exposed.keys())
    check(
        not unknown and len(named) >= 10,
        f"dashboard: the {len(named)} metrics it names are in {LIST.relative_to(ROOT)}",
        f"unknown: {unknown}",
    )
    print(f"     {len(panels)} panels, {len(queries)} queries")
    return queries


def write_queries(queries: list[str], path: Path) -> None:
    """`queries` as recording rules, with Grafana's variables given values."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$replica", ".*").replace("$__rate_interval", "1m")}
        for i, q in enumerate(queries)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))


def check_rules(exposed: dict[str, set[str]]) -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    incomplete, labels = [], []
    for rule in alerts:
        annotations = rule.get("annotations", {})
        if not (
            rule.get("for")
            and rule.get("labels", {}).get("severity") in SEVERITIES
            and annotations.get("summary")
            and annotations.get("description")
        ):
            incomplete.append(rule["alert"])
        printed = {label for text in annotations.values() for label in TEMPLATE_LABEL.findall(text)}
        labels += [f"{rule['alert']}: {p}" for p in label_problems(rule["expr"], printed, exposed)]
    check(
        bool(alerts) and not incomplete,
        f"alerts.yml: each of the {len(alerts)} alerts has for:, a severity, a summary and a description",
        f"{incomplete}",
    )
    check(not labels, "alerts.yml: labels the queried metrics carry", "; ".join(labels))
    named = names_in(RULES.read_text())
    unknown = sorted(named - exposed.keys())
    check(
        not unknown and len(named) >= 5,
        f"alerts.yml: the {len(named)} metrics it names are in {LIST.relative_to(ROOT)}",
        f"unknown: {unknown}",
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=Path, help="write the dashboard's queries there as rules")
    args = parser.parse_args()
    exposed = read_list()
    check(len(exposed) >= 10, f"{LIST.relative_to(ROOT)} lists {len(exposed)} samples")
    queries = check_dashboard(exposed)
    if args.queries:
        write_queries(queries, args.queries)
    check_rules(exposed)
    print(f"monitoring: {len(failures)} failed" if failures else "monitoring: all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
