"""``/metrics`` is Prometheus' text format exactly (prometheus-client's parser and content
type are the reference); every counter and histogram docs/operations.md lists is there
from start-up at 0; HTTP answers are counted per route, method and status class."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from scripts.launch import ROOT, child_env
from tasks.metrics import HTTP_STATUS_CLASSES

ROW = re.compile(r"^\s*\| `(mia_\w+)` \| (counter|histogram) \| (.*) \|$", re.M)
LABEL = re.compile(r"by `(\w+)`: ([\w, ]+)")
SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}]*\})? ([-+0-9.e]+|[+-]Inf|NaN)$")
FRESH = """import sys
from web import create_app
answer = create_app().test_client().get("/metrics")
with open(sys.argv[1], "w") as out:
    out.write(answer.headers["Content-Type"] + "\\n" + answer.get_data(as_text=True))
"""


def documented() -> list[tuple[str, str, str, list[str]]]:
    """(name, type, label, values) of each row of the counters' table."""
    rows = []
    for name, kind, what in ROW.findall((ROOT / "docs" / "operations.md").read_text()):
        label = LABEL.search(what)
        values = [v.strip() for v in label.group(2).split(",")] if label else []
        rows.append((name, kind, label.group(1) if label else "", values))
    return rows


def exact(content_type: str, text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a body, after checking it is the text format, once per family."""
    assert content_type == CONTENT_TYPE_LATEST
    assert text.endswith("\n")
    types = re.findall(r"^# TYPE (\S+) ", text, flags=re.M)
    helps = re.findall(r"^# HELP (\S+) ", text, flags=re.M)
    assert len(types) == len(set(types)) and sorted(types) == sorted(helps)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert [line for line in lines if not SAMPLE.match(line)] == []
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("workers", [False, True], ids=["one process", "gunicorn workers"])
def test_every_documented_counter_and_histogram_is_there_from_start_up_at_0(
    settings, redis, app, tmp_path: Path, workers: bool
):
    env = child_env(settings)
    if workers:  # as make run: counters from files every worker writes
        (tmp_path / "prom").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
    out = tmp_path / "metrics.txt"
    subprocess.run([sys.executable, "-c", FRESH, str(out)], env=env, cwd=ROOT, check=True)
    content_type, text = out.read_text().split("\n", 1)
    found = exact(content_type, text)
    rows = documented()
    assert len(rows) >= 12
    for name, kind, label, values in rows:
        if kind == "histogram":
            assert found[(f"{name}_count", ())] == 0 and found[(f"{name}_sum", ())] == 0, name
        elif not values:
            assert any(k[0] == name for k in found) and all(
                v == 0 for k, v in found.items() if k[0] == name
            ), name
        for value in values:
            assert found[(name, ((label, value),))] == 0, (name, value)
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for status in HTTP_STATUS_CLASSES:
                key = (("method", method), ("route", rule.rule), ("status", status))
                assert rule.endpoint == "static" or found[("mia_http_requests_total", key)] == 0


def test_the_body_is_the_text_format_and_counts_answers_by_route(api):
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        answer = api.get(f"{api.base}/metrics", timeout=5)
        return exact(answer.headers["Content-Type"], answer.text)

    def count(route: str, method: str, status: str) -> float:
        key = (("method", method), ("route", route), ("status", status))
        return after.get(("mia_http_requests_total", key), 0) - before.get(
            ("mia_http_requests_total", key), 0
        )

    before = scrape()
    assert api.get(f"{api.base}/healthz").status_code == 200
    assert api.get(f"{api.base}/jobs/{'f' * 32}").status_code == 404
    assert api.get(f"{api.base}/no/such/page").status_code == 404
    assert api.request("BREW", f"{api.base}/healthz").status_code == 405
    after = scrape()
    assert count("/healthz", "GET", "2xx") == 1
    assert count("/jobs/<job_id>", "GET", "4xx") == 1
    assert count("unmatched", "GET", "4xx") == 1
    assert count("unmatched", "other", "4xx") == 1  # an odd method makes no new series
    assert count("/metrics", "GET", "2xx") == 1  # the first scrape
