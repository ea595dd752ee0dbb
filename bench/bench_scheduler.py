"""Scheduler benchmark (issue: scheduler): many pending jobs, firing accuracy under load, restart.

    python bench/bench_scheduler.py --jobs 1000000 --burst 10000

1. schedule --jobs delayed messages (due in 1-2 hours, so none fires during the run): rate and
   broker RSS;
2. kill -9 and restart: time until the broker accepts connections again with them all pending;
3. schedule --burst jobs that all fall due within one second while a producer/consumer pair
   carries normal traffic on another queue: lateness of each delivery (p50, p99, max).
"""

import argparse
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from bench_store import rss_mib  # noqa: E402
from support import BrokerProcess, RawStomp  # noqa: E402
from load import FrameReader  # noqa: E402

DUE = re.compile(rb"\ndue:(\d+)")


def pipelined(c, frames, window=2000):
    for i, (command, headers, body) in enumerate(frames):
        c.send(command, dict(headers, receipt=str(i)), body)
        if i >= window:
            assert c.recv(60).command == "RECEIPT"
    for _ in range(min(window, len(frames))):
        assert c.recv(60).command == "RECEIPT"


def traffic(port, stop, counter):
    """Normal traffic on another queue, from its own process so that it does not share this
    process's GIL with the burst consumer whose timing we measure."""
    p, c = RawStomp(port), RawStomp(port)
    p.connect()
    c.connect()
    c.receipt("SUBSCRIBE", {"destination": "/queue/traffic", "id": "1"})
    n = 0
    while not stop.is_set():
        p.send("SEND", {"destination": "/queue/traffic", "persistent": "true"}, b"x" * 1024)
        c.recv(10)
        n += 1
    counter.put(n)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000000)
    parser.add_argument("--burst", type=int, default=10000)
    parser.add_argument("--store", default="kahadb")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-sched-")
    proc = BrokerProcess("--store=%s" % args.store, directory=tmp).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        started = time.monotonic()
        chunk = 50000
        for base in range(0, args.jobs, chunk):
            frames = [("SEND", {"destination": "/queue/later",
                                "AMQ_SCHEDULED_DELAY": str(3600000 + i)}, b"x" * 100)
                      for i in range(base, min(base + chunk, args.jobs))]
            pipelined(c, frames)
        took = time.monotonic() - started
        print("scheduled %d jobs in %.1f s (%.0f/s); broker RSS %.0f MiB"
              % (args.jobs, took, args.jobs / took, rss_mib(proc.proc.pid)), flush=True)
        proc.kill()
        started = time.monotonic()
        proc = proc.restarted()
        proc.start(timeout=900)
        print("restart after kill -9 with %d pending jobs: accepting connections after %.1f s;"
              " RSS %.0f MiB" % (args.jobs, time.monotonic() - started, rss_mib(proc.proc.pid)),
              flush=True)

        ctx = multiprocessing.get_context("fork")
        stop, moved = ctx.Event(), ctx.Queue()
        load = ctx.Process(target=traffic, args=(proc.port, stop, moved))
        load.start()
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": "/queue/burst", "id": "b"})
        p = RawStomp(proc.port)
        p.connect()
        load_started = time.monotonic()
        # A delay counts from when the broker takes the SEND (in ActiveMQ too), so the jobs go
        # out with a receipt and at most WINDOW unanswered: each delay is computed just
        # before its frame is written and reaches the broker within a few frames' time.
        # (Written all at once, the SENDs waited in the socket for up to a second before the
        # broker read them, and that wait was counted as lateness.)
        window = 10
        first_due = int(time.time() * 1000) + 3000 + args.burst  # sending takes < 1 ms each
        for i in range(args.burst):
            due = first_due + (i * 1000) // args.burst
            p.send_raw(b"SEND\ndestination:/queue/burst\ndue:%d\nreceipt:%d\n"
                       b"AMQ_SCHEDULED_DELAY:%d\n\n\x00"
                       % (due, i, due - int(time.time() * 1000)))
            if i >= window:
                assert p.recv(60).command == "RECEIPT"
        for _ in range(window):
            assert p.recv(60).command == "RECEIPT"
        if int(time.time() * 1000) >= first_due:
            raise SystemExit("scheduling the burst took longer than its lead time")
        # the burst consumer reads with the load tool's cheap frame splitter, so that its own
        # parsing does not add to the lateness it measures
        reader = FrameReader(c.sock)
        c.sock.settimeout(60)
        late = []
        while len(late) < args.burst:
            for command, head, _ in reader.frames():
                if command == b"MESSAGE":
                    late.append(time.time() * 1000 - int(DUE.search(head).group(1)))
        stop.set()
        carried = moved.get()
        load.join()
        load_seconds = time.monotonic() - load_started
        late.sort()
        print("%d jobs due within 1 s, with %d msg/s of other traffic: lateness p50 %.1f ms, "
              "p99 %.1f ms, max %.1f ms; broker RSS %.0f MiB"
              % (args.burst, carried / load_seconds, late[len(late) // 2],
                 late[int(len(late) * 0.99)], late[-1], rss_mib(proc.proc.pid)), flush=True)
    finally:
        proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
