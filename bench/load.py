"""A STOMP load tool with a low client cost: raw sockets, minimal framing, one process per
producer and per consumer, every message checked (no loss, no duplicate, per-producer order).

A message body starts with "<producer>,<seq>,<monotonic ns>;" and is padded to its size;
CLOCK_MONOTONIC is system-wide on Linux, so a consumer in another process measures latency
against the producer's stamp directly.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import socket
import time
from dataclasses import dataclass, field

CONTENT_LENGTH = re.compile(rb"\ncontent-length:(\d+)")
RECEIPT_ID = re.compile(rb"\nreceipt-id:([^\n]*)")
ACK_ID = re.compile(rb"\nack:([^\n]*)")


@dataclass
class Scenario:
    name: str
    title: str
    dest: str = "/queue/bench"
    count: int = 20000               # messages per producer
    producers: int = 1
    consumers: int = 1
    body: int = 1024
    persistent: bool = True
    receipt_every: int = 0           # 0: none (one at the very end), 1: every send, ...
    ack: str = "auto"
    rate: int = 0                    # msgs/s per producer, 0: as fast as possible
    backlog: bool = False            # fill with no consumer first, then drain
    unit: str = "msgs/s"
    extra: dict = field(default_factory=dict)


SCENARIOS = {
    "A": Scenario("A", "persistent queue, 1P/1C, no receipts"),
    "B": Scenario("B", "persistent queue, receipt on every send", count=3000, receipt_every=1),
    "C": Scenario("C", "persistent queue, receipt every 100", receipt_every=100),
    "D": Scenario("D", "non-persistent queue", count=50000, persistent=False),
    "E": Scenario("E", "persistent queue, 4P/4C, client-individual, receipt every 50",
                  count=5000, producers=4, consumers=4, ack="client-individual",
                  receipt_every=50),
    "F": Scenario("F", "topic, 1P/4 subscribers, non-persistent (deliveries/s)",
                  dest="/topic/bench", consumers=4, persistent=False, unit="deliveries/s"),
    "G": Scenario("G", "latency: 256 B at 1,000 msgs/s, persistent", count=5000, body=256,
                  rate=1000, unit="ms"),
    "H": Scenario("H", "persistent 1 MiB bodies", count=200, body=1024 * 1024, unit="MiB/s",
                  receipt_every=10),
    "I": Scenario("I", "backlog: 100k persistent, no consumer (receipt every 500), then drain",
                  count=100000, receipt_every=500, backlog=True),
}


def scaled(scenario: Scenario, factor: float) -> Scenario:
    import dataclasses
    count = max(int(scenario.count * factor), 10)
    if scenario.receipt_every > 1:
        count = max(count // scenario.receipt_every, 1) * scenario.receipt_every
    return dataclasses.replace(scenario, count=count)


# -- wire helpers -------------------------------------------------------------------------

def _connect(port, host="127.0.0.1"):
    sock = socket.create_connection((host, port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\x00")
    buf = bytearray()
    while b"\x00" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before CONNECTED")
        buf += data
    if not buf.lstrip(b"\n").startswith(b"CONNECTED"):
        raise ConnectionError(buf.decode(errors="replace"))
    return sock, bytearray(buf[buf.index(b"\x00") + 1:])


class FrameReader:
    """Minimal STOMP frame splitter: (command, header bytes, body memoryview-able bytes)."""

    def __init__(self, sock, buf=None):
        self.sock = sock
        self.buf = buf or bytearray()
        self.pos = 0
        self.pushed_back = []

    def frames(self):
        """Frames parsed from what is buffered now (reads once if nothing is complete)."""
        out, self.pushed_back = self.pushed_back, []
        while True:
            frame = self._next()
            if frame is None:
                if out:
                    return out
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("broker closed the connection")
                if self.pos:
                    del self.buf[:self.pos]
                    self.pos = 0
                self.buf += data
                continue
            out.append(frame)

    def _next(self):
        buf, pos = self.buf, self.pos
        while pos < len(buf) and buf[pos] in (10, 13):
            pos += 1
        self.pos = pos
        end_headers = buf.find(b"\n\n", pos)
        if end_headers < 0:
            return None
        head = bytes(buf[pos:end_headers + 1])
        m = CONTENT_LENGTH.search(head)
        start = end_headers + 2
        if m:
            end = start + int(m.group(1))
            if end >= len(buf):
                return None
        else:
            end = buf.find(b"\x00", start)
            if end < 0:
                return None
        body = bytes(buf[start:end])
        self.pos = end + 1
        command = head[:head.index(b"\n")]
        return command, head, body


# -- producer -----------------------------------------------------------------------------

def producer_main(port, sc: Scenario, index, start, results, ready=None):
    try:
        results.put(("producer", index, _produce(port, sc, index, start, ready)))
    except Exception as e:  # reported by the runner
        results.put(("error", index, "producer %d: %r" % (index, e)))


def _produce(port, sc: Scenario, index, start, ready=None):
    sock, rest = _connect(port)
    if ready is not None:
        ready.release()  # connected: the clock starts once every producer is
    reader = FrameReader(sock, rest)
    head = b"SEND\ndestination:%s\n%scontent-length:%d\n" % (
        sc.dest.encode(), b"persistent:true\n" if sc.persistent else b"", sc.body)
    pad = b"x" * sc.body
    start.wait()
    t0 = time.monotonic()
    interval = 1.0 / sc.rate if sc.rate else 0.0
    pending = []
    pending_bytes = 0
    for seq in range(1, sc.count + 1):
        stamp = b"%d,%d,%d;" % (index, seq, time.monotonic_ns())
        body = stamp + pad[len(stamp):]
        if sc.receipt_every and seq % sc.receipt_every == 0:
            frame = b"%sreceipt:%d\n\n%s\x00" % (head, seq, body)
        else:
            frame = b"%s\n%s\x00" % (head, body)
        pending.append(frame)
        pending_bytes += len(frame)
        wait_receipt = sc.receipt_every and seq % sc.receipt_every == 0
        if wait_receipt or pending_bytes >= 65536 or interval or seq == sc.count:
            sock.sendall(b"".join(pending))
            pending, pending_bytes = [], 0
        if wait_receipt:
            _await_receipt(reader, b"%d" % seq)
        if interval:
            due = t0 + seq * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    # everything accepted: a DISCONNECT receipt comes after every earlier frame
    sock.sendall(b"DISCONNECT\nreceipt:bye\n\n\x00")
    _await_receipt(reader, b"bye")
    elapsed = time.monotonic() - t0
    sock.close()
    return {"sent": sc.count, "seconds": elapsed}


def _await_receipt(reader, receipt_id):
    while True:
        frames = reader.frames()
        for i, (command, head, body) in enumerate(frames):
            if command == b"RECEIPT":
                m = RECEIPT_ID.search(head)
                if m and m.group(1) == receipt_id:
                    reader.pushed_back = frames[i + 1:]  # messages right behind it
                    return
            elif command == b"ERROR":
                raise RuntimeError("ERROR: %s %s" % (head.decode(errors="replace"),
                                                    body[:200].decode(errors="replace")))


# -- consumer -----------------------------------------------------------------------------

def consumer_main(port, sc: Scenario, index, expected, received, subscribed, stop, results):
    try:
        results.put(("consumer", index, _consume(port, sc, expected, received, subscribed, stop)))
    except Exception as e:
        subscribed.release()
        results.put(("error", index, "consumer %d: %r" % (index, e)))


def _consume(port, sc: Scenario, expected, received, subscribed, stop):
    sock, rest = _connect(port)
    reader = FrameReader(sock, rest)
    sock.sendall(b"SUBSCRIBE\ndestination:%s\nid:1\nack:%s\nactivemq.prefetchSize:1000\n"
                 b"receipt:sub\n\n\x00" % (sc.dest.encode(), sc.ack.encode()))
    _await_receipt(reader, b"sub")
    subscribed.release()
    sock.settimeout(0.2)
    seqs: dict[int, list[int]] = {}
    latencies = []
    count = 0
    first = last = None
    individual = sc.ack == "client-individual"
    acks = []
    while not stop.is_set():
        try:
            frames = reader.frames()
        except socket.timeout:
            if expected and received.value >= expected:
                break
            continue
        now = time.monotonic_ns()
        batch = 0
        for command, head, body in frames:
            if command != b"MESSAGE":
                if command == b"ERROR":
                    raise RuntimeError(head.decode(errors="replace"))
                continue
            stamp = body[:body.index(b";")]
            p, s, t = stamp.split(b",")
            seqs.setdefault(int(p), []).append(int(s))
            latencies.append(now - int(t))
            if individual:
                acks.append(b"ACK\nid:%s\n\n\x00" % ACK_ID.search(head).group(1))
            count += 1
            batch += 1
            if first is None:
                first = time.monotonic()
        if acks:
            sock.sendall(b"".join(acks))
            acks = []
        last = time.monotonic()
        with received.get_lock():
            received.value += batch
        if expected and received.value >= expected:
            break
    sock.settimeout(10)
    sock.sendall(b"DISCONNECT\nreceipt:bye\n\n\x00")
    try:
        _await_receipt(reader, b"bye")
    except Exception:
        pass
    sock.close()
    return {"count": count, "seqs": seqs, "latencies": latencies,
            "first": first, "last": last}


# -- one run of one scenario ----------------------------------------------------------------

def proc_stat(pid):
    """(cpu seconds used, VmRSS MiB, VmHWM MiB) of a process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = hwm = 0.0
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024.0
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024.0
        return cpu, rss, hwm
    except OSError:
        return 0.0, 0.0, 0.0


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


class Sampler:
    """Polls the broker's RSS while a scenario runs (peak RSS of that scenario)."""

    def __init__(self, pid):
        import threading
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, proc_stat(self.pid)[1])

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_stat(self.pid)[1])
        return self.peak


def run(port, broker_pid, sc: Scenario, dest_suffix="", timeout=300.0):
    """Run one scenario; -> dict of figures, with 'errors' listing any check that failed."""
    import dataclasses
    sc = dataclasses.replace(sc, dest=sc.dest + "." + dest_suffix if dest_suffix else sc.dest)
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    start = ctx.Event()
    stop = ctx.Event()
    subscribed = ctx.Semaphore(0)
    received = ctx.Value("q", 0)
    per_consumer = sc.producers * sc.count
    expected = per_consumer * (sc.consumers if sc.dest.startswith("/topic/") else 1)
    cpu0 = proc_stat(broker_pid)[0]
    sampler = Sampler(broker_pid)
    out = {"scenario": sc.name, "errors": []}
    procs = []

    def start_consumers():
        for i in range(sc.consumers):
            p = ctx.Process(target=consumer_main, args=(port, sc, i, expected, received,
                                                        subscribed, stop, results))
            p.start()
            procs.append(p)
        for _ in range(sc.consumers):
            subscribed.acquire(timeout=60)

    if not sc.backlog:
        start_consumers()
    connected = ctx.Semaphore(0)
    for i in range(sc.producers):
        p = ctx.Process(target=producer_main, args=(port, sc, i, start, results, connected))
        p.start()
        procs.append(p)
    for _ in range(sc.producers):
        # not timed: starting a process and connecting is not the broker's throughput (a
        # producer that fails to connect reports so through `results`)
        connected.acquire(timeout=60)
    t0 = time.monotonic()
    start.set()
    producer_results, consumer_results = [], []
    deadline = time.monotonic() + timeout
    waiting_for = sc.producers + (0 if sc.backlog else sc.consumers)
    fill_seconds = None

    def collect(n):
        while n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                out["errors"].append("timed out")
                return
            try:
                kind, index, value = results.get(timeout=remaining)
            except Exception:
                out["errors"].append("timed out")
                return
            n -= 1
            if kind == "producer":
                producer_results.append(value)
            elif kind == "consumer":
                consumer_results.append(value)
            else:
                out["errors"].append(value)
    if sc.backlog:
        collect(sc.producers)
        fill_seconds = time.monotonic() - t0
        out["fill"] = expected / fill_seconds
        t0 = time.monotonic()
        start_consumers()
        collect(sc.consumers)
    else:
        collect(waiting_for)
    elapsed = time.monotonic() - t0
    stop.set()
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    out["rss_peak"] = sampler.stop()
    cpu1 = proc_stat(broker_pid)[0]
    # checks: every message once, in order per producer (per consumer)
    total = sum(r["count"] for r in consumer_results)
    out["received"] = total
    copies = sc.consumers if sc.dest.startswith("/topic/") else 1
    for p in range(sc.producers):
        merged = []
        for r in consumer_results:
            got = r["seqs"].get(p, [])
            if got != sorted(got):
                out["errors"].append("producer %d: out of order at a consumer" % p)
            merged.extend(got)
        if len(merged) != sc.count * copies or len(set(merged)) != sc.count:
            dup = len(merged) - len(set(merged)) - (sc.count * (copies - 1))
            out["errors"].append("producer %d: %d of %d received, %d lost, %d duplicated"
                                 % (p, len(merged), sc.count * copies,
                                    sc.count - len(set(merged)), max(dup, 0)))
    firsts = [r["first"] for r in consumer_results if r["first"]]
    lasts = [r["last"] for r in consumer_results if r["last"]]
    span = (max(lasts) - t0) if lasts else elapsed
    if sc.backlog:
        out["drain"] = total / span if span > 0 else 0.0
        out["rate"] = out["fill"]
    else:
        out["rate"] = total / span if span > 0 else 0.0
    out["mib_s"] = out["rate"] * sc.body / (1024.0 * 1024.0)
    lat = [v for r in consumer_results for v in r["latencies"]]
    if sc.rate and lat:
        # skip the first second (connection warm-up)
        lat = lat[min(len(lat) // 10, sc.rate):]
    out["p50_ms"] = percentile(lat, 50) / 1e6
    out["p99_ms"] = percentile(lat, 99) / 1e6
    out["max_ms"] = (max(lat) / 1e6) if lat else 0.0
    messages = sc.producers * sc.count
    out["cpu_us_per_msg"] = (cpu1 - cpu0) / messages * 1e6 if messages else 0.0
    out["cpu_s"] = cpu1 - cpu0
    out["seconds"] = elapsed
    del firsts
    return out


def fsync_rate(directory, seconds=1.0):
    """4 KiB write + fdatasync per iteration: the physical limit of one synchronous writer."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"x" * 4096
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            os.write(fd, block)
            os.fdatasync(fd)
            n += 1
        return n / (time.monotonic() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
