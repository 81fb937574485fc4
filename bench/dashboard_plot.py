#!/usr/bin/env python3
"""Plots the panels of deploy/grafana/sqsd.json from a real run of sqsd.

No Grafana server can be installed here, so this drives a run itself and
draws the same series with matplotlib:

- a worker application on loopback (standard library) that answers most
  POSTs in 2-40 ms, some with 500 (retried) and some with 422
  (dead-lettered);
- `sqsd local` (the embedded SQS endpoint and the daemon in one process),
  with a periodic task every 2 minutes (a task message is work too:
  more often, and protection would never go off) and the backlog read every second;
- a producer that sends in phases (steady, burst, pause, steady) through
  the embedded endpoint's JSON protocol;
- a scraper that reads /metrics every second;
- a stand-in for the ECS agent on loopback (`ECS_AGENT_URI`) that accepts
  every task-protection PUT, so the protection panel shows sqsd turning
  protection on with work and off after 30 s idle.

Each panel is computed from the scrapes the way its PromQL would be: rates
from consecutive counter samples over a 5 s window, quantiles from the
histogram buckets' increase. Usage:

    cargo build --release
    python3 -m venv /tmp/plot && /tmp/plot/bin/pip install matplotlib
    /tmp/plot/bin/python bench/dashboard_plot.py target/release/sqsd deploy/grafana/sqsd.png
"""

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = [  # (seconds, messages per second)
    (30, 150),
    (20, 600),
    (45, 0),
    (30, 200),
]
# After the last phase: scraping goes on until the queue and the daemon are
# empty and protection is off, then this long.
TAIL = 10
WINDOW = 5  # seconds, the rate window


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 20))
        time.sleep(random.lognormvariate(-4.5, 0.7))
        roll = random.random()
        status = 500 if roll < 0.03 else 422 if roll < 0.04 else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Agent(BaseHTTPRequestHandler):
    """Accepts every task-protection PUT, as the ECS agent does for a task
    of a service whose role may call UpdateTaskProtection."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 16))
        body = b'{"protection":{}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def sqs(endpoint, action, body):
    req = urllib.request.Request(
        endpoint,
        data=json.dumps(body).encode(),
        headers={
            "X-Amz-Target": f"AmazonSQS.{action}",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def produce(endpoint, queue_url, stop):
    n = 0
    for seconds, rate in PHASES:
        end = time.time() + seconds
        while time.time() < end and not stop.is_set():
            tick = time.time()
            for _ in range(0, rate, 10):
                entries = [{"Id": str(i), "MessageBody": f'{{"job":{n + i}}}'} for i in range(10)]
                sqs(endpoint, "SendMessageBatch", {"QueueUrl": queue_url, "Entries": entries})
                n += 10
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(admin, samples, stop):
    while not stop.is_set():
        t = time.time()
        try:
            with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as r:
                samples.append((t, parse(r.read().decode())))
        except OSError:
            pass
        time.sleep(max(0.0, 1.0 - (time.time() - t)))


def series(samples, name, group=None, where=None):
    """{legend: [(t, value)]} of a gauge, summed by the label `group`."""
    out = {}
    for t, s in samples:
        acc = {}
        for (n, labels), v in s.items():
            d = dict(labels)
            if n != name or (where and any(d.get(k) != w for k, w in where.items())):
                continue
            key = d.get(group, "") if group else ""
            acc[key] = acc.get(key, 0.0) + v
        for k, v in acc.items():
            out.setdefault(k, []).append((t, v))
    return out


def rate(points):
    """Per-second increase over WINDOW seconds, like rate()."""
    out = []
    for i, (t, v) in enumerate(points):
        j = i
        while j > 0 and t - points[j - 1][0] <= WINDOW + 0.5:
            j -= 1
        if j < i:
            out.append((t, max(0.0, v - points[j][1]) / (t - points[j][0])))
    return out


def quantile(samples, q):
    """histogram_quantile over the buckets' increase in each window."""
    buckets = series(samples, "sqsd_post_duration_seconds_bucket", group="le")
    les = sorted(buckets, key=lambda le: float("inf") if le == "+Inf" else float(le))
    rates = {le: dict(rate(buckets[le])) for le in les}
    out = []
    for t in sorted(rates[les[-1]]):
        counts = [(le, rates[le].get(t, 0.0)) for le in les]
        total = counts[-1][1]
        if total <= 0:
            continue
        rank, prev_le, prev_c = q * total, 0.0, 0.0
        for le, c in counts:
            bound = float("inf") if le == "+Inf" else float(le)
            if c >= rank:
                if bound == float("inf"):
                    out.append((t, prev_le))
                else:
                    frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
                    out.append((t, prev_le + (bound - prev_le) * frac))
                break
            prev_le, prev_c = bound, c
    return out


def plot(samples, path, t0):
    dashboard = json.load(open(os.path.join(REPO, "deploy/grafana/sqsd.json")))
    titles = [p["title"] for p in dashboard["panels"]]
    panels = {
        "Delivery rate by outcome": {
            o: rate(p) for o, p in series(samples, "sqsd_messages_delivered_total", "outcome").items()
        },
        "POST latency p50 / p99": {
            "p50": quantile(samples, 0.5),
            "p99": quantile(samples, 0.99),
        },
        "In flight": {
            "POSTs in flight": series(samples, "sqsd_messages_in_flight").get("", []),
            "messages held": series(samples, "sqsd_messages_held").get("", []),
        },
        "SQS calls and errors by action": {
            **{a: rate(p) for a, p in series(samples, "sqsd_sqs_requests_total", "action", {"result": "ok"}).items()},
            **{
                f"{a} errors": rate(p)
                for a, p in series(samples, "sqsd_sqs_requests_total", "action", {"result": "error"}).items()
            },
        },
        "Queue backlog": series(samples, "sqsd_queue_messages", "state"),
        "Lease renewals and dead-lettering": {
            "lease renewals": rate(series(samples, "sqsd_lease_renewals_total").get("", [])),
            "renewal failures": rate(series(samples, "sqsd_lease_renewal_failures_total").get("", [])),
            **{
                f"dead-lettered ({s})": rate(p)
                for s, p in series(samples, "sqsd_messages_dead_lettered_total", "status").items()
            },
        },
        "Application available": series(samples, "sqsd_app_available"),
        "Periodic tasks": {
            t: rate(p) for t, p in series(samples, "sqsd_periodic_tasks_enqueued_total", "task").items()
        },
        "Received, deleted, released": {
            "received": rate(series(samples, "sqsd_messages_received_total").get("", [])),
            "deleted": rate(series(samples, "sqsd_messages_deleted_total").get("", [])),
            "released": rate(series(samples, "sqsd_messages_released_total").get("", [])),
        },
        "ECS task scale-in protection": {
            "tasks protected": series(samples, "sqsd_ecs_task_protected").get("", []),
            "agent failures": rate(series(samples, "sqsd_ecs_protection_failures_total").get("", [])),
        },
    }
    missing = [t for t in titles if t not in panels]
    if missing:
        sys.exit(f"no plot for panels {missing}")
    rows = (len(titles) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.1 * rows), facecolor="#111217")
    for ax, title in zip(axes.flat, titles):
        ax.set_facecolor("#181b1f")
        ax.set_title(title, color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.5)
        for legend, points in sorted(panels[title].items()):
            if points:
                ax.plot([t - t0 for t, _ in points], [v for _, v in points], label=legend or title, linewidth=1.2)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right", facecolor="#181b1f", labelcolor="#d8d9da", edgecolor="#2c3235")
        ax.set_xlabel("seconds", color="#8e8e8e", fontsize=8)
    for ax in list(axes.flat)[len(titles):]:
        ax.set_visible(False)
    fig.suptitle("sqsd dashboard (deploy/grafana/sqsd.json), drawn from a real run", color="#d8d9da")
    fig.tight_layout()
    fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())


def main():
    binary, out = sys.argv[1], sys.argv[2]
    app = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    agent = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    sqs_port, admin = free_port(), f"127.0.0.1:{free_port()}"
    cron = os.path.join(os.path.dirname(os.path.abspath(out)), ".dashboard-cron.yaml")
    with open(cron, "w") as f:
        f.write('version: 1\ncron:\n  - name: report\n    url: /tasks/report\n    schedule: "0 */2 * * * *"\n')
    daemon = subprocess.Popen(
        [binary, "local", "--worker-url", f"http://127.0.0.1:{app.server_port}",
         "--sqs-listen", f"127.0.0.1:{sqs_port}", "--admin-addr", admin,
         "--http-connections", "16", "--queue-metrics-interval", "1s",
         "--dead-letter-codes", "422", "--error-visibility-timeout", "2",
         "--cron-file", cron, "--ecs-task-protection", "true",
         "--ecs-task-protection-minutes", "1", "--log-level", "warn"],
        env={**os.environ, "ECS_AGENT_URI": f"http://127.0.0.1:{agent.server_port}/api/task"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{sqs_port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                queue_url = sqs(endpoint, "GetQueueUrl", {"QueueName": "worker-queue"})["QueueUrl"]
                urllib.request.urlopen(f"http://{admin}/metrics", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        stop = threading.Event()
        samples = []
        scraper = threading.Thread(target=scrape, args=(admin, samples, stop))
        t0 = time.time()
        scraper.start()
        produce(endpoint, queue_url, stop)
        idle_since, give_up = None, time.time() + 300
        while time.time() < give_up:
            time.sleep(1)
            last = samples[-1][1] if samples else {}
            visible = last.get(("sqsd_queue_messages", (("state", "visible"),)), 1)
            held = last.get(("sqsd_messages_held", ()), 1)
            protected = last.get(("sqsd_ecs_task_protected", ()), 1)
            if visible == 0 and held == 0 and protected == 0:
                idle_since = idle_since or time.time()
                if time.time() - idle_since >= TAIL:
                    break
            else:
                idle_since = None
        stop.set()
        scraper.join()
        plot(samples, out, t0)
        last = samples[-1][1]
        print(f"{len(samples)} scrapes; delivered:",
              {dict(k[1]).get("outcome"): v for k, v in last.items() if k[0] == "sqsd_messages_delivered_total"})
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
        os.remove(cron)
        app.shutdown()
        agent.shutdown()


if __name__ == "__main__":
    main()
