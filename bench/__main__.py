"""Side-by-side benchmark: pybrokerd (each store) and ActiveMQ 5.17, same client, same run.

    python -m bench                      # all scenarios, 3 rounds, kahadb+lmdb+leveldb+ActiveMQ
    python -m bench --quick              # small counts, 1 round (what CI may run)
    python -m bench --scenarios A,B,G --brokers kahadb,activemq --rounds 3

Brokers are started on free loopback ports, one at a time, alternating round by round; each
first runs a short unmeasured warm-up (ActiveMQ's JIT), then every scenario on fresh
destinations.  The table shows medians and the ratio of each
pybrokerd store to ActiveMQ.  See docs/performance.md.
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from bench import load  # noqa: E402
from support import BrokerProcess, free_port  # noqa: E402

AMQ_START = os.path.join(ROOT, "..", "shared", "anchors", "activemq", "start.sh")


class ActiveMQ:
    name = "activemq"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bench-amq-")
        self.port = free_port()
        self.proc = None

    def start(self, timeout=120):
        self.proc = subprocess.Popen(["sh", AMQ_START, self.dir, str(self.port), str(free_port())],
                                     stdout=open(os.path.join(self.dir, "out.log"), "wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ActiveMQ exited: see %s/out.log" % self.dir)
            try:
                sock, _ = load._connect(self.port)
                sock.close()
                return self
            except OSError:
                time.sleep(0.5)
            except ConnectionError:
                time.sleep(0.5)
        raise RuntimeError("ActiveMQ did not open STOMP within %ss" % timeout)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def available():
        return os.path.exists("/usr/share/activemq/bin/activemq.jar") and os.path.exists(AMQ_START)


class Pybrokerd:
    def __init__(self, store):
        self.name = store
        self.broker = BrokerProcess("--store=%s" % store)

    def start(self):
        self.broker.start()
        self.port = self.broker.port
        return self

    @property
    def pid(self):
        return self.broker.proc.pid

    @property
    def dir(self):
        return self.broker.store_dir

    def stop(self):
        self.broker.stop()
        shutil.rmtree(self.broker.dir, ignore_errors=True)


def make(name):
    return ActiveMQ() if name == "activemq" else Pybrokerd(name)


# what each scenario reports: (label, key, higher is better)
METRICS = {
    "A": [("msgs/s", "rate", True)],
    "B": [("msgs/s", "rate", True), ("fsync/s", "fsync", True)],
    "C": [("msgs/s", "rate", True)],
    "D": [("msgs/s", "rate", True)],
    "E": [("msgs/s", "rate", True)],
    "F": [("deliveries/s", "rate", True)],
    "G": [("p50 ms", "p50_ms", False), ("p99 ms", "p99_ms", False), ("max ms", "max_ms", False)],
    "H": [("MiB/s", "mib_s", True)],
    "I": [("fill msgs/s", "fill", True), ("drain msgs/s", "drain", True),
          ("peak RSS MiB", "rss_peak", False)],
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(load.SCENARIOS))
    parser.add_argument("--brokers", default=None,
                        help="comma list of kahadb,lmdb,leveldb,memory,activemq "
                             "(default: kahadb,lmdb,leveldb and activemq if installed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, counts x0.05, kahadb (+activemq if installed)")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--no-warmup", action="store_true",
                        help="measure each broker from its first message (by default a short "
                             "unmeasured mix of A, D, E and F runs first: ActiveMQ's JIT "
                             "compiler needs it, and a subset of scenarios would otherwise "
                             "catch it cold)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.scale = 0.05
        if args.brokers is None:
            args.brokers = "kahadb" + (",activemq" if ActiveMQ.available() else "")
    if args.brokers is None:
        args.brokers = "kahadb,lmdb,leveldb" + (",activemq" if ActiveMQ.available() else "")
    brokers = args.brokers.split(",")
    if "activemq" in brokers and not ActiveMQ.available():
        parser.error("ActiveMQ is not installed (apt-get install -y activemq)")
    scenarios = [load.scaled(load.SCENARIOS[s], args.scale) for s in args.scenarios.split(",")]
    warmup = [] if args.no_warmup else [
        load.scaled(load.SCENARIOS[s], args.scale * factor)
        for s, factor in (("A", 0.25), ("D", 0.1), ("E", 0.25), ("F", 0.25))]
    runs: dict[tuple[str, str], list[dict]] = {}
    failures = []
    print("nproc=%d  scenarios=%s  brokers=%s  rounds=%d  scale=%g  warm-up=%s" % (
        os.cpu_count(), args.scenarios, args.brokers, args.rounds, args.scale,
        "+".join(sc.name for sc in warmup) or "none"), flush=True)
    for rnd in range(args.rounds):
        order = brokers if rnd % 2 == 0 else list(reversed(brokers))
        for name in order:
            broker = make(name).start()
            try:
                for sc in warmup:
                    figures = load.run(broker.port, broker.pid, sc, dest_suffix="w%d" % rnd)
                    if figures["errors"]:
                        failures.append(("warm-up " + sc.name, name, figures["errors"]))
                for sc in scenarios:
                    figures = load.run(broker.port, broker.pid, sc, dest_suffix="r%d" % rnd)
                    if sc.name == "B":
                        figures["fsync"] = load.fsync_rate(broker.dir)
                    runs.setdefault((sc.name, name), []).append(figures)
                    if figures["errors"]:
                        failures.append((sc.name, name, figures["errors"]))
                    print("round %d %-8s %s: %s%s" % (
                        rnd + 1, name, sc.name,
                        ", ".join("%s %s" % (label, _fmt(figures.get(key, 0)))
                                  for label, key, _ in METRICS[sc.name]),
                        "  CHECK FAILED: %s" % "; ".join(figures["errors"]) if figures["errors"] else ""),
                        flush=True)
            finally:
                broker.stop()
    print()
    print(table(scenarios, brokers, runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"%s/%s" % k: v for k, v in runs.items()}, f, indent=1, default=str)
    if failures:
        print("\nCHECKS FAILED:")
        for sc, name, errors in failures:
            print("  %s %s: %s" % (sc, name, "; ".join(errors)))
        return 1
    return 0


def _fmt(value):
    if isinstance(value, float) and value < 100:
        return "%.2f" % value
    return format(int(value), ",")


def table(scenarios, brokers, runs):
    pyb = [b for b in brokers if b != "activemq"]
    has_amq = "activemq" in brokers
    header = ["scenario", "metric"] + brokers + (["%s/amq" % b for b in pyb] if has_amq else [])
    rows = [header]
    for sc in scenarios:
        for label, key, higher in METRICS[sc.name]:
            medians = {}
            for b in brokers:
                values = [r.get(key, 0.0) for r in runs.get((sc.name, b), [])]
                medians[b] = statistics.median(values) if values else 0.0
            row = [sc.name, label] + [_fmt(medians[b]) for b in brokers]
            if has_amq:
                for b in pyb:
                    amq = medians["activemq"]
                    ratio = (medians[b] / amq if higher else amq / medians[b]) if amq and medians[b] else 0.0
                    row.append("%.2fx" % ratio)
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                       for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    note = ("(ratios: pybrokerd / ActiveMQ for rates, ActiveMQ / pybrokerd for latency and "
            "memory; above 1 means pybrokerd is better)") if has_amq else ""
    return "\n".join(lines) + ("\n" + note if note else "")


if __name__ == "__main__":
    sys.exit(main())
