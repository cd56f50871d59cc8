"""W3 (docs/performance.md), as plugins/service_stats in Rust: grouped by
the manifest's ``key = "/service"``, per group the number of events, the
sum of ``duration_ms`` and the number of errors."""

from wasmpipe import reduce


def merge(a, b):
    return {
        "count": a["count"] + b["count"],
        "sum_ms": a["sum_ms"] + b["sum_ms"],
        "errors": a["errors"] + b["errors"],
    }


@reduce(initial={"count": 0, "sum_ms": 0.0, "errors": 0}, combine=merge)
def service_stats(acc, event, ctx):
    return {
        "count": acc["count"] + 1,
        "sum_ms": acc["sum_ms"] + event["duration_ms"],
        "errors": acc["errors"] + (1 if event["level"] == "error" else 0),
    }
