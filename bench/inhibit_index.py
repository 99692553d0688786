"""Inhibition lookups: Sentinel's index on the `equal` label values against Alertmanager's scan of every
source alert (inhibit.go before its index), measured in the same invocation on the same alerts.

N firing `SourceDown`-like source alerts, each with its own `source` label, and 1,000 target label sets
spread over those sources; the time is for asking "is this target inhibited?" for every target. Medians of
`--runs` runs. The machine is shared with other work: absolute times wander, the ratio less so.

    python bench/inhibit_index.py                  # N = 100, 1,000, 10,000; 3 runs (~3 CPU-min, the scan)
    python bench/inhibit_index.py --quick          # N = 100, 1,000; 1 run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sentinel.alerting.alert import Alert
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.matchers import matches_all
from sentinel.config import InhibitRuleConfig

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
RULE = InhibitRuleConfig.model_validate(
    {"source_matchers": ['alertname="SourceDown"'], "target_matchers": ['alertname!="SourceDown"'], "equal": ["source"]}
)


def scan_baseline(inh: Inhibitor) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    """Alertmanager's original algorithm over the same cache: every source alert, every equal label."""
    rule = inh.rules[0]
    # Label dicts prepared once, as Go's alerts carry a map: the baseline pays for the scan, not for copying.
    sources = [(alert, alert.label_map, t) for bucket in rule.index.values() for alert, t in bucket.values()]

    def inhibited_by(labels: Mapping[str, str]) -> tuple[str, ...]:
        if not matches_all(rule.target, labels):
            return ()
        two_sided = matches_all(rule.source, labels)
        out = []
        for a, al, source_is_target in sources:
            if a.resolved_at(NOW):
                continue
            if any(al.get(n, "") != labels.get(n, "") for n in rule.equal):
                continue
            if two_sided and source_is_target:
                continue
            out.append(a.fingerprint)
        return tuple(sorted(out))

    return inhibited_by


def timed(fn: Callable[[Mapping[str, str]], tuple[str, ...]], targets: list[dict[str, str]]) -> tuple[float, int]:
    t = time.perf_counter()
    hits = sum(1 for labels in targets if fn(labels))
    return time.perf_counter() - t, hits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    sizes = [100, 1_000] if args.quick else [100, 1_000, 10_000]
    runs = 1 if args.quick else args.runs
    print(f"{'sources':>8} {'scan ms':>10} {'index ms':>10} {'index/scan':>11}   (1,000 lookups, median of {runs})")
    for n in sizes:
        inh = Inhibitor([RULE])
        inh.observe([Alert.of({"alertname": "SourceDown", "source": f"s{i}"}) for i in range(n)], NOW)
        targets = [{"alertname": "PipelineFailed", "source": f"s{(i * 7) % (2 * n)}"} for i in range(1_000)]
        scan = scan_baseline(inh)
        index: Callable[[Mapping[str, str]], tuple[str, ...]] = lambda labels, inh=inh: inh.inhibited_by(labels, NOW)  # noqa: E731
        assert [scan(t) for t in targets] == [index(t) for t in targets]  # same answers
        s_times, i_times = [], []
        for _ in range(runs):
            s_times.append(timed(scan, targets)[0])
            i_times.append(timed(index, targets)[0])
        s, i = statistics.median(s_times), statistics.median(i_times)
        print(f"{n:>8} {s * 1e3:>10.2f} {i * 1e3:>10.2f} {i / s:>11.4f}")


if __name__ == "__main__":
    main()
