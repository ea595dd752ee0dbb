"""Test support: real broker processes and a raw-socket STOMP client.

Everything here waits on events (a log line, a frame, a closed socket) with a deadline; there are
no fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from pybrokerd.protocols.stomp.codec import FrameParser, serialize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unique(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


class BrokerProcess:
    """A `twistd -n pybrokerd` subprocess on an ephemeral STOMP port."""

    def __init__(self, *args, directory=None, port=0, store_dir=None):
        self.args = list(args)
        self.dir = directory or tempfile.mkdtemp(prefix="pybrokerd-test-")
        self.store_dir = store_dir or os.path.join(self.dir, "store")
        self.fixed_port = port
        self.logfile = os.path.join(self.dir, "broker-%s.log" % uuid.uuid4().hex[:6])
        self.proc = None
        self.port = None

    def start(self, timeout=30.0, wait=True):
        cmd = [TWISTD, "-n", "--pidfile=", "--logfile=%s" % self.logfile, "pybrokerd",
               "--dir=%s" % self.store_dir,
               "--stomp=tcp:%d:interface=127.0.0.1" % self.fixed_port]
        if not any(a.startswith("--amqp") for a in self.args):
            cmd.append("--amqp=tcp:0:interface=127.0.0.1")  # never the shared 5672
        if not any(a.startswith("--admin=") for a in self.args):
            cmd.append("--admin=tcp:0:interface=127.0.0.1")  # nor 8161
        if not any(a.startswith("--openwire") for a in self.args):
            cmd.append("--openwire=tcp:0:interface=127.0.0.1")  # nor 61616
        cmd += self.args
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        if wait:
            self.wait_listening(timeout)
        return self

    def log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern, timeout=30.0):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            m = regex.search(self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError("broker exited with %s\n%s\n%s" % (self.proc.returncode, out, self.log()))
            time.sleep(0.02)
        raise TimeoutError("no %r in broker log within %ss:\n%s" % (pattern, timeout, self.log()))

    def admin_port(self, timeout=30.0):
        """The admin HTTP port (it opens before the lock: a slave has one too)."""
        m = self.wait_for_log(r"admin HTTP listening on [\d.]+:(\d+)", timeout)
        return int(m.group(1))

    def wait_listening(self, timeout=30.0):
        m = self.wait_for_log(r"STOMP listening on [\d.]+:(\d+)", timeout)
        self.port = int(m.group(1))
        self.amqp_port = None
        if not any(a.startswith("--amqp=none") for a in self.args):
            m = self.wait_for_log(r"AMQP listening on [\d.]+:(\d+)", timeout)
            self.amqp_port = int(m.group(1))
        self.openwire_port = None
        if not any(a.startswith("--openwire=none") for a in self.args):
            m = self.wait_for_log(r"OpenWire listening on [\d.]+:(\d+)", timeout)
            self.openwire_port = int(m.group(1))

    def stop(self, timeout=15.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restarted(self):
        """A fresh process with the same arguments, directory and port (not yet started)."""
        return BrokerProcess(*self.args, directory=self.dir, port=self.fixed_port,
                             store_dir=self.store_dir)

    def accepts(self) -> bool:
        """Does the STOMP port accept a connection right now?"""
        try:
            socket.create_connection(("127.0.0.1", self.fixed_port or self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def broker_with_users(directory, users, extra=""):
    """A started broker whose --config holds these users ({name: (password, [groups])}) and
    any further INI text (an [authorization] section)."""
    from pybrokerd.security import hash_password
    groups = {}
    lines = ["[pybrokerd]", "[users]"]
    for name, (password, member_of) in users.items():
        lines.append("%s = %s" % (name, hash_password(password)))
        for group in member_of:
            groups.setdefault(group, []).append(name)
    lines.append("[groups]")
    lines += ["%s = %s" % (group, ", ".join(names)) for group, names in groups.items()]
    config = os.path.join(str(directory), "broker.ini")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n" + extra)
    return BrokerProcess("--config=%s" % config, directory=str(directory)).start()


def shared_dir_brokers(tmp_path, *args, n=2):
    """n brokers (b0, b1, ...) on one shared store directory, each with its own port and
    working directory; the keep-alive check is fast (0.2 s) so lock loss shows quickly."""
    shared = str(tmp_path / "shared")
    brokers = []
    for i in range(n):
        work = tmp_path / ("b%d" % i)
        work.mkdir()
        brokers.append(BrokerProcess("--broker-name=b%d" % i, "--lock-check=0.2", *args,
                                     directory=str(work), port=free_port(), store_dir=shared))
    return brokers


def start_master_and_slaves(brokers):
    """Start the first as master, then the others, each waiting as a slave."""
    try:
        brokers[0].start()
        for b in brokers[1:]:
            b.start(wait=False)
            b.wait_for_log("slave: waiting")
    except BaseException:
        for b in brokers:
            b.kill()
        raise
    return brokers


class RawStomp:
    """A wire-level STOMP client over a plain socket."""

    def __init__(self, port, host="127.0.0.1", version="1.2"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.parser = FrameParser()
        self.parser.version = version
        self.version = version
        self.backlog = []  # frames read while waiting for a receipt, handed out by recv()
        self.closed = False

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, command, headers=None, body=b""):
        if isinstance(body, str):
            body = body.encode()
        self.sock.sendall(serialize(command, headers or {}, body, self.version).rstrip(b"\n"))

    def connect(self, version="1.2", **headers):
        h = {"accept-version": version, "host": "localhost"} if version else {}
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        self.send("CONNECT", h)
        frame = self.recv()
        assert frame.command == "CONNECTED", frame
        return frame

    def _fill(self, deadline):
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.parser.feed(data)
        return True

    def recv(self, timeout=5.0):
        if self.backlog:
            return self.backlog.pop(0)
        return self._recv_wire(timeout)

    def _recv_wire(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                return frame
            if self.closed or time.monotonic() >= deadline:
                raise TimeoutError("no frame within %ss (closed=%s)" % (timeout, self.closed))
            self._fill(deadline)

    def recv_command(self, command, timeout=5.0):
        frame = self.recv(timeout)
        assert frame.command == command, "expected %s, got %r" % (command, frame)
        return frame

    def maybe_recv(self, timeout=0.3):
        try:
            return self.recv(timeout)
        except TimeoutError:
            return None

    def until_quiet(self, quiet=1.0) -> list:
        """Every frame that arrives until none has for `quiet` seconds (what is left)."""
        frames = []
        while True:
            frame = self.maybe_recv(quiet)
            if frame is None:
                return frames
            frames.append(frame)

    def wait_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            if self.parser.next_frame() is not None:
                continue
            self._fill(deadline)
        return self.closed

    def receipt(self, command, headers=None, body=b"", timeout=5.0):
        """Send a frame with a receipt and return the RECEIPT (or ERROR) that answers it."""
        rid = unique("r")
        headers = dict(headers or {}, receipt=rid)
        self.send(command, headers, body)
        deadline = time.monotonic() + timeout
        while True:
            frame = self._recv_wire(max(deadline - time.monotonic(), 0.001))
            if frame.command in ("RECEIPT", "ERROR") and frame.headers.get("receipt-id") == rid:
                return frame
            self.backlog.append(frame)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# -- in-process helpers for tests that drive the broker core without a socket ---------------

class CollectingSession:
    """The consumer side of a protocol session, collecting what it is given."""
    writable = True

    def __init__(self):
        self.got = []
        self._n = 0

    def next_ack_id(self):
        self._n += 1
        return str(self._n)

    def deliver(self, consumer, message, ack_id):
        self.got.append((message, ack_id))


def until_in_reactor(predicate, timeout=5.0):
    """A Deferred firing once predicate() holds (polled from the running reactor)."""
    from twisted.internet import defer, reactor, task

    @defer.inlineCallbacks
    def poll():
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        assert predicate()
    return poll()

