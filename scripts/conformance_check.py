"""Judges the conformance runs of scripts/conformance.sh from what the suites recorded.

    python3 scripts/conformance_check.py target/conformance

Reads RESULTS/runs.tsv (one line per run: name, command, milliseconds, exit status), each
run's console output RESULTS/<run>.log and every RESULTS/<run>/<scenario dir>/checks.json.
Prints per run its wall time and the count of checks by status, then every FAILURE,
WARNING and scenario that recorded no check. Exits 1 when a check failed, when a
scenario left no readable checks.json, or when a run recorded fewer scenarios than it
announced (none at all included), except in the scenarios of NOT_YET_REQUIRED (reported,
not failing). The suites' own exit status is shown but not used: a suite also exits 1 for
WARNINGs and for unscored checks, except 124 and 137: `timeout` stopped the run, a
failure.

Standard library only.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

# Scenarios whose failures are reported but do not fail the check, by name prefix. None
# today: every scenario the server is run against must pass.
NOT_YET_REQUIRED: tuple[str, ...] = ()

STATUSES = ("SUCCESS", "FAILURE", "WARNING", "INFO", "SKIPPED")
# <out>/server-<scenario>-<ISO timestamp with '-' for ':' and '.'>
SCENARIO_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")
# Exit statuses of a run that scripts/conformance.sh's time limit (`timeout`) stopped.
STOPPED_BY_TIME_LIMIT = ("124", "137")
# First line of a run's console output: "Running all suite (32 scenarios) against URL".
ANNOUNCED = re.compile(r"^Running .*\((\d+) scenarios\)", re.M)


def scenario_name(directory: Path) -> str:
    match = SCENARIO_DIR.match(directory.name)
    return match.group("name") if match else directory.name


def excused(scenario: str) -> bool:
    return scenario.startswith(NOT_YET_REQUIRED)


def describe(check: dict) -> str:
    text = f"{check.get('id', '?')}: {check.get('description', '')}"
    detail = check.get("errorMessage") or check.get("message")
    return f"{text} -- {detail}" if detail else text


def announced(console_log: Path) -> int | None:
    try:
        match = ANNOUNCED.search(console_log.read_text(errors="replace"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def judge_run(run_dir: Path):
    """Returns (status counts, scenarios, failures, excused failures, warnings, empty)."""
    counts, failures, not_required, warnings, empty = Counter(), [], [], [], []
    scenarios = sorted(d for d in run_dir.iterdir() if d.is_dir()) if run_dir.is_dir() else []
    expected = announced(run_dir.with_name(run_dir.name + ".log"))
    if not scenarios or (expected is not None and len(scenarios) < expected):
        failures.append(f"{expected if expected is not None else 'an unknown number of'} "
                        f"scenarios announced, {len(scenarios)} recorded results "
                        f"(see {run_dir.name}.log)")
    for directory in scenarios:
        scenario = scenario_name(directory)
        sink = not_required if excused(scenario) else failures
        try:
            checks = json.loads((directory / "checks.json").read_text())
        except (OSError, ValueError) as error:
            sink.append(f"{scenario}: no readable checks.json ({error})")
            continue
        if not checks:
            empty.append(scenario)
        for check in checks:
            status = check.get("status", "?")
            counts[status] += 1
            if status == "FAILURE":
                sink.append(f"{scenario}: {describe(check)}")
            elif status == "WARNING":
                warnings.append(f"{scenario}: {describe(check)}")
    return counts, len(scenarios), failures, not_required, warnings, empty


def main() -> int:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "target/conformance")
    try:
        runs = [line.split("\t") for line in (results / "runs.tsv").read_text().splitlines()]
    except OSError as error:
        print(f"conformance: no runs recorded ({error})")
        return 1
    failed = False
    total_ms = 0
    for name, command, millis, exit_status in runs:
        total_ms += int(millis)
        counts, scenarios, failures, not_required, warnings, empty = judge_run(results / name)
        if exit_status in STOPPED_BY_TIME_LIMIT:
            failures.insert(0, f"stopped by the run time limit after {int(millis) / 1000:.0f} s"
                               f" (see {name}.log)")
        figures = ", ".join(f"{counts[s]} {s.lower()}" for s in STATUSES if counts[s])
        others = sorted(set(counts) - set(STATUSES))
        if others:
            figures += ", " + ", ".join(f"{counts[s]} {s}" for s in others)
        verdict = "FAILED" if failures else "passed"
        print(f"=== {name} ({command}): {verdict}; {scenarios} scenarios, {figures or 'no checks'};"
              f" {int(millis) / 1000:.1f} s; suite exit status {exit_status}")
        for line in failures:
            print(f"  FAILURE {line}")
        for line in not_required:
            print(f"  failure, not yet required ({', '.join(NOT_YET_REQUIRED)}*) {line}")
        for line in warnings:
            print(f"  WARNING {line}")
        for scenario in empty:
            print(f"  no checks recorded: {scenario}")
        failed |= bool(failures)
    print(f"=== conformance {'FAILED' if failed else 'passed'}: {len(runs)} runs in {total_ms / 1000:.1f} s"
          f" (details: {results}/<run>.log and {results}/<run>/*/checks.json)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
