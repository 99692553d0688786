"""Sentinel's Alertmanager intake and grouping pipeline against real Alertmanager, on the same stream and sink.

Both are driven by the Alertmanager peer benchmark (`/work/shared/bench-peers/alertmanager`): its
`webhook_sink.py` (started by `start-sink.sh`) receives every notification, its `start-alertmanager.sh`
starts a fresh Alertmanager per run, and its `bench.py` posts the stream to `POST /api/v2/alerts` in batches
of 1,000 from 2 threads (no `startsAt`, so both stamp the receipt time), waits until every group was notified
with all of its alerts, then counts notifications for 3 s more. Sentinel runs as a subprocess
(`python -m sentinel run -c <tmp config>`, no sources, webhook receiver on the same sink, same route and
inhibition rule), so its CPU is read from /proc exactly as Alertmanager's is.

Per run: CPU seconds (utime+stime of the server process over the run), notifications the sink received,
seconds from the first POST until every group was delivered complete, peak RSS (VmHWM). Every size runs
`--runs` times in both orders (Sentinel first, then Alertmanager first), back to back, each on a fresh
process; the table shows medians. The headline ratio is alerts per CPU-second, Sentinel / Alertmanager.

The machine is shared with other work: absolute times wander, the ratio from the same invocation less so.

    python bench/alert_pipeline.py                 # 10,000 and 100,000 alerts into 1,000 groups, 3 runs
    python bench/alert_pipeline.py --quick         # 2,000 alerts into 100 groups, 1 run: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

PEERS = Path(os.environ.get("AM_PEERS_DIR", "/work/shared/bench-peers/alertmanager"))

SENTINEL_CONFIG = """\
receivers:
  - name: webhook
    webhook: {{url: "http://127.0.0.1:{sink_port}/alerts", send_resolved: true, max_alerts: 0}}
route:
  receiver: webhook
  group_by: [alertname, group]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 1h
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname, group]
resolve_timeout: 5m
store: {{path: "{state}"}}
server: {{listen: "127.0.0.1:{port}"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout:.0f}s")
        time.sleep(0.1)


class Peers:
    """The peer benchmark's scripts, run with our own ports and run directory."""

    def __init__(self, run_dir: Path, group_wait: str, group_interval: str) -> None:
        self.run_dir = run_dir
        self.sink_port = free_port()
        self.am_port = free_port()
        self.env = {
            **os.environ,
            "PEERS_RUN_DIR": str(run_dir),
            "SINK_PORT": str(self.sink_port),
            "AM_PORT": str(self.am_port),
            "AM_GROUP_WAIT": group_wait,
            "AM_GROUP_INTERVAL": group_interval,
            "AM_REPEAT_INTERVAL": "1h",
            "PYTHON": sys.executable,
        }

    def script(self, name: str) -> None:
        subprocess.run([str(PEERS / name)], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def am_pid(self) -> int:
        return int((self.run_dir / "alertmanager.pid").read_text().strip())

    def bench(self, url: str, pid: int, alerts: int, groups: int, out: Path) -> dict[str, Any]:
        cmd = [
            sys.executable,
            str(PEERS / "bench.py"),
            "--am-url", url,
            "--am-pid", str(pid),
            "--sink-url", f"http://127.0.0.1:{self.sink_port}",
            "-n", str(alerts),
            "-g", str(groups),
            "--json-out", str(out),
        ]  # fmt: skip
        out.unlink(missing_ok=True)
        proc = subprocess.run(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not out.exists():
            raise RuntimeError(f"bench.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return dict(json.loads(out.read_text().splitlines()[-1]))


def run_alertmanager(peers: Peers, alerts: int, groups: int) -> dict[str, Any]:
    peers.script("start-alertmanager.sh")
    try:
        time.sleep(1)  # as run-bench.sh: let it idle so the baseline is steady
        url = f"http://127.0.0.1:{peers.am_port}"
        return peers.bench(url, peers.am_pid(), alerts, groups, peers.run_dir / "am.json")
    finally:
        peers.script("stop-alertmanager.sh")


def run_sentinel(peers: Peers, alerts: int, groups: int, group_wait: str, group_interval: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sentinel-bench-", dir=peers.run_dir))
    port = free_port()
    cfg = work / "sentinel.yaml"
    cfg.write_text(
        SENTINEL_CONFIG.format(
            sink_port=peers.sink_port,
            group_wait=group_wait,
            group_interval=group_interval,
            state=work / "state.db",
            port=port,
        )
    )
    log = (work / "sentinel.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel", "--log-level", "WARNING", "run", "-c", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/-/ready", proc)
        time.sleep(1)
        return peers.bench(url, proc.pid, alerts, groups, work / "result.json")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="alerts per run, comma separated")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3, help="runs per size and order")
    ap.add_argument("--group-wait", default="1s")
    ap.add_argument("--group-interval", default="1s")
    ap.add_argument("--only", choices=["sentinel", "alertmanager"], help="run one side (for profiling)")
    ap.add_argument("--quick", action="store_true", help="2,000 alerts into 100 groups, 1 run per order")
    ap.add_argument("--json-out", help="append every run as a JSON line to this file")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.groups, a.runs = "2000", 100, 1
    if shutil.which("prometheus-alertmanager") is None and shutil.which("alertmanager") is None:
        print("needs Alertmanager: apt-get install prometheus-alertmanager", file=sys.stderr)
        return 2
    sizes = [int(x) for x in a.sizes.split(",")]
    run_dir = Path(tempfile.mkdtemp(prefix="alert-pipeline-"))
    peers = Peers(run_dir, a.group_wait, a.group_interval)
    sides = {
        "sentinel": lambda n: run_sentinel(peers, n, a.groups, a.group_wait, a.group_interval),
        "alertmanager": lambda n: run_alertmanager(peers, n, a.groups),
    }
    orders = [("sentinel", "alertmanager"), ("alertmanager", "sentinel")]
    if a.only:
        orders = [(a.only,)]  # type: ignore[list-item]
    rows: list[dict[str, Any]] = []
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} (shared with other work)", file=sys.stderr)
    peers.script("start-sink.sh")
    try:
        for n in sizes:
            for run in range(a.runs):
                for order in orders:
                    for side in order:
                        r = sides[side](n)
                        row = {"side": side, "first": order[0], "run": run, **_summary(r)}
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr)
                        if a.json_out:
                            with open(a.json_out, "a") as f:
                                f.write(json.dumps({**row, "raw": r}) + "\n")
    finally:
        peers.script("stop-sink.sh")
        shutil.rmtree(run_dir, ignore_errors=True)
    _table(rows, sizes, a.groups)
    return 0 if all(r["complete"] for r in rows) else 1


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "alerts": r["alerts"],
        "groups": r["groups"],
        "complete": r["complete"],
        "post_errors": r["n_post_errors"],
        "cpu_s": r["am_cpu_s"],
        "notifications": r["notifications"],
        "all_delivered_s": r["all_delivered_s"],
        "ingest_s": r["ingest_s"],
        "rss_hwm_mib": r["am_rss_hwm_mib"],
        "load": r["loadavg_1m_at_start"],
    }


def _med(rows: list[dict[str, Any]], key: str) -> float:
    xs = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(xs) if xs else float("nan")


def _table(rows: list[dict[str, Any]], sizes: list[int], groups: int) -> None:
    head = (
        f"{'alerts':>7} {'side':>12} {'first':>12} {'runs':>4} {'cpu_s':>7} {'alerts/cpu_s':>12} "
        f"{'notifs':>7} {'all_deliv_s':>11} {'ingest_s':>8} {'rss_MiB':>8}"
    )
    print(f"\n{groups} groups; medians; cpu = utime+stime of the server process over the run")
    print(head)
    for n in sizes:
        for side in ("sentinel", "alertmanager"):
            for first in (None, "sentinel", "alertmanager"):
                sel = [r for r in rows if r["alerts"] == n and r["side"] == side and first in (None, r["first"])]
                if not sel:
                    continue
                cpu = _med(sel, "cpu_s")
                print(
                    f"{n:>7} {side:>12} {first or 'all':>12} {len(sel):>4} {cpu:>7.2f} {n / cpu:>12.0f} "
                    f"{_med(sel, 'notifications'):>7.0f} {_med(sel, 'all_delivered_s'):>11.2f} "
                    f"{_med(sel, 'ingest_s'):>8.2f} {_med(sel, 'rss_hwm_mib'):>8.1f}"
                )
    print()
    for n in sizes:
        s = [r for r in rows if r["alerts"] == n and r["side"] == "sentinel"]
        m = [r for r in rows if r["alerts"] == n and r["side"] == "alertmanager"]
        if s and m:
            ratio = _med(m, "cpu_s") / _med(s, "cpu_s")
            notif = _med(s, "notifications") / _med(m, "notifications")
            print(
                f"{n:>7} alerts: alerts per CPU-second Sentinel/Alertmanager = {ratio:.2f}x; "
                f"notifications Sentinel/Alertmanager = {notif:.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
