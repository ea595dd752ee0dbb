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
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from bench_store import rss_mib  # noqa: E402
from support import BrokerProcess, RawStomp  # noqa: E402


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
        first_due = int(time.time() * 1000) + 3000 + args.burst // 5
        for i in range(args.burst):
            due = first_due + (i * 1000) // args.burst
            # the delay is computed as late as possible, just before the frame goes out
            p.send("SEND", {"destination": "/queue/burst", "due": str(due), "receipt": str(i),
                            "AMQ_SCHEDULED_DELAY": str(due - int(time.time() * 1000))}, b"")
        for _ in range(args.burst):
            assert p.recv(60).command == "RECEIPT"
        late = []
        for _ in range(args.burst):
            m = c.recv(60)
            late.append(time.time() * 1000 - int(m.headers["due"]))
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
