import json
import re
from pathlib import Path

from gateway.metrics import ConversationStats, Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "config" / "grafana-dashboard.json"


def exported_names() -> set[str]:
    m = Metrics()
    m.add_conversation("c", "*", lambda: ConversationStats(last_turn_latency_seconds=0.5))
    names = set()
    for family in m.registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    # Labelled families without a sample yet still expose their sample names when used.
    for family in m.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_dashboard_is_valid_and_queries_only_real_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\borga_gateway_[a-z_]+", e)}
    unknown = used - exported_names()
    assert not unknown, f"dashboard queries metrics nobody exports: {sorted(unknown)}"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("calls", "setup", "turn latency", "loss", "jitter", "underruns",
                  "orga api errors", "security rejections"):
        assert topic in titles, topic
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
