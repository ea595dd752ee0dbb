"""Soak: mixed load against a master/slave pair, the master SIGKILLed every --kill-every s.

    .venv/bin/python bench/soak.py --seconds 600 --kill-every 60 --svg docs/soak-rss.svg

Load, all through the failover client (duplicate suppression on):
  persistent queue traffic (receipted, client-individual acks); non-persistent topic traffic
  to a slow subscriber; transactions of 5 persistent sends; delayed (scheduled) messages;
  connection churn.
Checks at the end: every receipted persistent message, committed transaction message and
receipted scheduled message arrived (0 lost); duplicates are counted; the brokers' RSS is
sampled every second (printed, and drawn as an SVG with --svg).  Exit code 1 on any loss.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from pybrokerd.client import ClientError, TransactionInDoubt, connect  # noqa: E402
from support import shared_dir_brokers, start_master_and_slaves, unique  # noqa: E402


def rss_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Soak:
    def __init__(self, seconds, kill_every, workdir):
        self.seconds = seconds
        self.kill_every = kill_every
        self.brokers = start_master_and_slaves(shared_dir_brokers(_Path(workdir)))
        self.url = ("failover:(%s)?initialReconnectDelay=10&maxReconnectDelay=200"
                    "&randomize=false" % ",".join("tcp://127.0.0.1:%d" % b.fixed_port
                                                 for b in self.brokers))
        tag = unique("soak")
        self.queue, self.topic = "/queue/%s.q" % tag, "/topic/%s.t" % tag
        self.txq, self.schedq = "/queue/%s.tx" % tag, "/queue/%s.sched" % tag
        self.stop = threading.Event()
        self.done_producing = threading.Event()
        self.sent = {"queue": [], "tx": [], "sched": []}
        self.got = {"queue": [], "tx": [], "sched": []}
        self.topic_sent = self.topic_got = self.churned = self.rolled_back = self.kills = 0
        self.errors = []
        self.rss = []  # (seconds since start, MiB of the master)
        self.lock = threading.Lock()
        self.headers = {}  # body -> the headers of each delivery (to explain a duplicate)
        self.rolled_back_bodies: set = set()
        self.in_doubt: set = set()

    # -- load ----------------------------------------------------------------------------
    def _guard(self, fn):
        def run():
            try:
                fn()
            except Exception as e:  # a soak reports, it does not crash
                self.errors.append("%s: %r" % (fn.__name__, e))
        return threading.Thread(target=run, name=fn.__name__, daemon=True)

    def produce_queue(self):
        with connect(self.url) as c:
            i = 0
            while not self.done_producing.is_set():
                body = "q%07d" % i
                c.send(self.queue, body, persistent=True)  # returns after the RECEIPT
                self.sent["queue"].append(body)
                i += 1

    def produce_tx(self):
        with connect(self.url) as c:
            i = 0
            while not self.done_producing.is_set():
                bodies = ["t%07d" % (i + k) for k in range(5)]
                i += 5
                try:
                    tx = c.begin()
                    for body in bodies:
                        c.send(self.txq, body, persistent=True, transaction=tx)
                    c.commit(tx)
                    self.sent["tx"].extend(bodies)
                except TransactionInDoubt:
                    self.in_doubt.update(bodies)  # committed or not: may arrive, once at most
                except ClientError:
                    self.rolled_back += 1  # the failover rolled it back: none of it may arrive
                    self.rolled_back_bodies.update(bodies)
                time.sleep(0.02)


    def produce_sched(self):
        with connect(self.url) as c:
            i = 0
            while not self.done_producing.is_set():
                body = "s%07d" % i
                c.send(self.schedq, body, {"AMQ_SCHEDULED_DELAY": "300"}, persistent=True)
                self.sent["sched"].append(body)
                i += 1
                time.sleep(0.05)

    def produce_topic(self):
        with connect(self.url) as c:
            while not self.done_producing.is_set():
                c.send(self.topic, "x" * 512, receipt=False)
                self.topic_sent += 1
                if self.topic_sent % 100 == 0:
                    time.sleep(0.01)

    def consume(self, dest, key):
        with connect(self.url) as c:
            stream = c.subscribe(dest, ack="client-individual")
            while not self.stop.is_set():
                m = stream.receive(timeout=0.2)
                if m is not None:
                    self.got[key].append(m.text)
                    self.headers.setdefault(m.text, []).append(dict(m.headers))
                    m.ack()

    def consume_topic_slowly(self):
        with connect(self.url) as c:
            stream = c.subscribe(self.topic)
            while not self.stop.is_set():
                if stream.receive(timeout=0.2) is not None:
                    self.topic_got += 1
                    time.sleep(0.002)

    def churn(self):
        while not self.done_producing.is_set():
            try:
                with connect(self.url) as c:
                    c.send("/queue/%s.churn" % unique(), "hello", receipt=False)
                self.churned += 1
            except ClientError:
                pass
            time.sleep(0.1)

    # -- faults and sampling --------------------------------------------------------------
    def master(self):
        for b in self.brokers:
            if b.proc and b.proc.poll() is None and b.accepts():
                return b
        return None

    def killer(self):
        while not self.done_producing.wait(self.kill_every):
            master = self.master()
            if master is None:
                continue
            master.kill()
            self.kills += 1
            fresh = master.restarted()
            self.brokers[self.brokers.index(master)] = fresh
            fresh.start(wait=False)
            fresh.wait_for_log("slave: waiting|STOMP listening")

    def sampler(self, started):
        while not self.stop.wait(1.0):
            master = self.master()
            if master is not None:
                value = rss_mib(master.proc.pid)
                if value is not None:
                    self.rss.append((time.monotonic() - started, value))

    # -- run -----------------------------------------------------------------------------
    def run(self):
        started = time.monotonic()
        consumers = [self._guard(lambda: self.consume(self.queue, "queue")),
                     self._guard(lambda: self.consume(self.txq, "tx")),
                     self._guard(lambda: self.consume(self.schedq, "sched")),
                     self._guard(self.consume_topic_slowly)]
        for t in consumers:
            t.start()
        time.sleep(0.5)
        producers = [self._guard(f) for f in (self.produce_queue, self.produce_tx,
                                              self.produce_sched, self.produce_topic,
                                              self.churn)]
        side = [self._guard(self.killer), self._guard(lambda: self.sampler(started))]
        for t in producers + side:
            t.start()
        self.done_producing.wait(self.seconds)
        self.done_producing.set()
        for t in producers:
            t.join(60)
        # drain: everything confirmed must arrive
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                not set(self.sent[k]) <= set(self.got[k]) for k in self.sent):
            time.sleep(0.2)
        time.sleep(1.0)  # late duplicates, if any, show up now
        self.stop.set()
        for t in consumers + side:
            t.join(30)
        for b in self.brokers:
            b.kill()
        return self.report(time.monotonic() - started)

    def report(self, elapsed):
        lost_total = 0
        print("soak: %.0f s, %d master kills, %d churned connections, %d transactions rolled "
              "back by a failover, %d in doubt (COMMIT sent, connection lost before its "
              "receipt)" % (elapsed, self.kills, self.churned, self.rolled_back,
                            len(self.in_doubt) // 5))
        for key in ("queue", "tx", "sched"):
            sent, got = self.sent[key], self.got[key]
            lost = len(set(sent) - set(got))
            dups = len(got) - len(set(got))
            phantom = len(set(got) & self.rolled_back_bodies) if key == "tx" else 0
            lost_total += lost + phantom
            counts = collections.Counter(got)
            for body in sorted(b for b, n in counts.items() if n > 1)[:3]:
                print("  duplicate %s: %s" % (body, self.headers.get(body)))
            print("  %-6s confirmed %7d  received %7d  lost %d  duplicates %d%s" % (
                key, len(sent), len(set(got)), lost, dups,
                ("  from rolled-back transactions %d" % phantom) if key == "tx" else ""))
        print("  topic  sent %7d  delivered to the slow subscriber %d (the rest discarded by "
              "--topic-pending-limit or lost with a killed master: non-persistent)"
              % (self.topic_sent, self.topic_got))
        if self.rss:
            values = [v for _, v in self.rss]
            print("  master RSS MiB: first %.0f, max %.0f, last %.0f (%d samples)"
                  % (values[0], max(values), values[-1], len(values)))
        for e in self.errors:
            print("  error:", e)
        return 1 if lost_total or self.errors else 0


class _Path(str):
    """Enough of pathlib.Path for shared_dir_brokers."""

    def __truediv__(self, other):
        return _Path(os.path.join(self, other))

    def mkdir(self):
        os.makedirs(self, exist_ok=True)


def svg(samples, path, width=640, height=240):
    """RSS over time as a small standalone SVG line chart."""
    if not samples:
        return
    t_max = max(t for t, _ in samples) or 1.0
    v_max = max(v for _, v in samples) * 1.1 or 1.0
    points = " ".join("%.1f,%.1f" % (40 + (width - 50) * t / t_max,
                                     height - 30 - (height - 40) * v / v_max)
                      for t, v in samples)
    with open(path, "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
                'font-family="sans-serif" font-size="11">\n' % (width, height))
        f.write('<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="%s"/>\n' % points)
        f.write('<line x1="40" y1="%d" x2="%d" y2="%d" stroke="#888"/>\n'
                % (height - 30, width - 10, height - 30))
        f.write('<line x1="40" y1="10" x2="40" y2="%d" stroke="#888"/>\n' % (height - 30))
        f.write('<text x="42" y="20">%.0f MiB</text>\n' % v_max)
        f.write('<text x="%d" y="%d">%.0f s</text>\n' % (width - 60, height - 12, t_max))
        f.write('<text x="45" y="%d">master RSS over time (master killed periodically)</text>\n'
                % (height - 12))
        f.write("</svg>\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--kill-every", type=float, default=60)
    parser.add_argument("--svg", help="write the RSS chart here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pybrokerd-soak-") as work:
        soak = Soak(args.seconds, args.kill_every, work)
        code = soak.run()
    if args.svg:
        svg(soak.rss, args.svg)
    return code


if __name__ == "__main__":
    sys.exit(main())
