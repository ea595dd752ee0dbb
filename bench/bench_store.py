"""Store benchmarks (issue: persistence adapters): throughput with group commit, a large backlog.

    python bench/bench_store.py throughput [--stores kahadb,lmdb,leveldb] [--seconds 5]
    python bench/bench_store.py backlog --store kahadb --count 1000000

Each run starts a real `twistd pybrokerd` on a fresh directory and talks STOMP over loopback.
`--amq` (throughput only) runs the same load against the reference ActiveMQ started by
../shared/anchors/activemq/start.sh, for a side-by-side figure.
"""

import argparse
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from support import BrokerProcess, RawStomp, free_port, unique, wait_until  # noqa: E402

from bench import load  # noqa: E402

BODY = b"x" * 1024


def rss_mib(pid, field="VmRSS"):
    """Resident memory of a process. RssAnon is the broker's own heap; VmRSS also counts
    file pages it has mapped (LMDB maps its whole database: those pages are page cache)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return 0.0
    return 0.0


def du_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / 1024.0 / 1024.0


def producer(port, dest, seconds, results):
    """Sends persistent 1 KiB messages, each waiting for its RECEIPT, with the load tool's
    minimal framing (bench/load.py): the client's own cost must not be what is measured."""
    sock, rest = load._connect(port)
    reader = load.FrameReader(sock, rest)
    head = b"SEND\ndestination:%s\npersistent:true\ncontent-length:%d\n" % (
        dest.encode(), len(BODY))
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        receipt = b"%d" % n
        sock.sendall(b"%sreceipt:%s\n\n%s\x00" % (head, receipt, BODY))
        load._await_receipt(reader, receipt)
    results.put(n)
    sock.close()


def consumer(port, dest, stop, results):
    """Acks each message by itself (client-individual), so every message is written."""
    sock, rest = load._connect(port)
    reader = load.FrameReader(sock, rest)
    sock.sendall(b"SUBSCRIBE\ndestination:%s\nid:1\nack:client-individual\nreceipt:sub\n\n\x00"
                 % dest.encode())
    load._await_receipt(reader, b"sub")
    sock.settimeout(0.5)
    n = 0
    while not stop.is_set():
        try:
            frames = reader.frames()
        except socket.timeout:
            continue
        acks = [b"ACK\nid:%s\n\n\x00" % load.ACK_ID.search(head).group(1)
                for command, head, _ in frames if command == b"MESSAGE"]
        if acks:
            sock.sendall(b"".join(acks))
            n += len(acks)
    results.put(n)
    sock.close()


def run_load(port, producers, seconds, consume=True):
    """Producers and the consumer each in their own process: the client side must not be
    what limits the figure (one Python process would serialise them on its GIL)."""
    dest = "/queue/" + unique("bench")
    ctx = multiprocessing.get_context("fork")
    produced, consumed, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    cons = ctx.Process(target=consumer, args=(port, dest, stop, consumed))
    if consume:
        cons.start()
    procs = [ctx.Process(target=producer, args=(port, dest, seconds, produced))
             for _ in range(producers)]
    started = time.monotonic()
    for p in procs:
        p.start()
    total = sum(produced.get() for _ in procs)
    elapsed = time.monotonic() - started
    for p in procs:
        p.join()
    stop.set()
    if consume:
        consumed.get()
        cons.join()
    return total / elapsed


def throughput(args):
    rows = []
    targets = [("pybrokerd/" + s, s) for s in args.stores.split(",")]
    if args.amq:
        targets.append(("ActiveMQ 5.17 (KahaDB)", None))
    for label, store in targets:
        if store is None:
            port, proc, tmp = start_activemq()
        else:
            tmp = tempfile.mkdtemp(prefix="bench-")
            proc = BrokerProcess("--store=%s" % store, directory=tmp).start()
            port = proc.port
        try:
            one = run_load(port, 1, args.seconds)
            four = run_load(port, 4, args.seconds)
            one_p = run_load(port, 1, args.seconds, consume=False)
            four_p = run_load(port, 4, args.seconds, consume=False)
        finally:
            if store:
                proc.stop()
                found = re.findall(r"group commits carried (\d+) operations \(([\d.]+) per commit\)",
                                   proc.log())
                per_commit = max(found, key=lambda f: int(f[0]))[1] if found else "?"
            else:
                stop_activemq(proc)
                per_commit = "-"
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append((label, one, four, one_p, four_p))
        print("%-24s with consumer: 1 producer %6.0f msg/s, 4 producers %6.0f (x%.1f) | "
              "producers only: 1 %6.0f, 4 %6.0f (x%.1f) | ops per group commit %s"
              % (label, one, four, four / one, one_p, four_p, four_p / one_p, per_commit),
              flush=True)
    return rows


def start_activemq():
    tmp = tempfile.mkdtemp(prefix="bench-amq-")
    port, ow = free_port(), free_port()
    script = os.path.join(HERE, "..", "..", "shared", "anchors", "activemq", "start.sh")
    proc = subprocess.Popen(["sh", script, tmp, str(port), str(ow)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    if not wait_until(up, timeout=120, interval=0.5):
        raise RuntimeError("ActiveMQ did not start")
    return port, proc, tmp


def stop_activemq(proc):
    os.killpg(proc.pid, 9)
    proc.wait()


def backlog(args):
    tmp = tempfile.mkdtemp(prefix="bench-backlog-")
    proc = BrokerProcess("--store=%s" % args.store, directory=tmp).start()
    peak = [0.0, 0.0]  # VmRSS, RssAnon
    watching = threading.Event()
    watching.set()

    def watch():
        while watching.is_set():
            peak[0] = max(peak[0], rss_mib(proc.proc.pid))
            peak[1] = max(peak[1], rss_mib(proc.proc.pid, "RssAnon"))
            time.sleep(0.2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    dest = "/queue/backlog"
    try:
        c = RawStomp(proc.port)
        c.connect()
        started = time.monotonic()
        window = 2000  # receipts outstanding at once
        for i in range(args.count):
            c.send("SEND", {"destination": dest, "persistent": "true", "receipt": str(i)}, BODY)
            if i >= window:
                c.recv(60)
        for _ in range(min(window, args.count)):
            c.recv(60)
        fill = time.monotonic() - started
        print("filled %d x 1 KiB persistent in %.1f s (%.0f msg/s); broker RSS now %.0f MiB, "
              "peak %.0f MiB; store on disk %.0f MiB" % (
                  args.count, fill, args.count / fill, rss_mib(proc.proc.pid), peak[0],
                  du_mib(os.path.join(tmp, "store"))), flush=True)
        proc.kill()
        restarted = time.monotonic()
        proc = proc.restarted()
        proc.start(timeout=600)
        recovery = time.monotonic() - restarted
        print("restart after kill -9: accepting connections after %.1f s" % recovery, flush=True)
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual"})
        started = time.monotonic()
        got = 0
        while got < args.count:
            m = c.recv(60)
            c.send("ACK", {"id": m.headers["ack"]})
            got += 1
        drain = time.monotonic() - started
        c.send("DISCONNECT", {"receipt": "bye"})
        c.recv(60)
        print("drained %d in %.1f s (%.0f msg/s); peak broker RSS over the whole run %.0f MiB "
              "(anonymous memory %.0f MiB)" % (got, drain, got / drain, peak[0], peak[1]),
              flush=True)
        # let a checkpoint and GC run
        wait_until(lambda: du_mib(os.path.join(tmp, "store")) < 70, timeout=60, interval=1)
        print("store on disk after the drain: %.1f MiB" % du_mib(os.path.join(tmp, "store")),
              flush=True)
    finally:
        watching.clear()
        proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--stores", default="kahadb,lmdb,leveldb")
    t.add_argument("--seconds", type=float, default=5)
    t.add_argument("--amq", action="store_true")
    b = sub.add_parser("backlog")
    b.add_argument("--store", default="kahadb")
    b.add_argument("--count", type=int, default=1000000)
    args = parser.parse_args()
    {"throughput": throughput, "backlog": backlog}[args.what](args)


if __name__ == "__main__":
    main()
