import threading

import pytest
import stomp

from support import BrokerProcess, RawStomp, unique


@pytest.fixture(scope="session")
def broker():
    """One real `twistd pybrokerd` for the tests that need no special options."""
    proc = BrokerProcess().start()
    yield proc
    proc.stop()


@pytest.fixture
def raw(broker):
    """Factory of raw-socket STOMP clients to the shared broker, closed after the test."""
    clients = []

    def make(version="1.2", connect=True, **headers):
        c = RawStomp(broker.port, version=version)
        clients.append(c)
        if connect:
            c.connect(version=version, **headers)
        return c
    yield make
    for c in clients:
        c.close()


class Collector(stomp.ConnectionListener):
    """stomp.py listener that lets a test wait for messages, receipts and errors."""

    def __init__(self):
        self.messages = []
        self.errors = []
        self.receipts = []
        self.cond = threading.Condition()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_error(self, frame):
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.append(frame.headers["receipt-id"])
            self.cond.notify_all()

    def wait(self, predicate, timeout=5.0):
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "timed out waiting"

    def wait_messages(self, n, timeout=5.0):
        self.wait(lambda: len(self.messages) >= n, timeout)
        return self.messages[:n]

    def wait_receipt(self, rid, timeout=5.0):
        self.wait(lambda: rid in self.receipts, timeout)


@pytest.fixture
def client(broker):
    """Factory of connected stomp.py clients (version 1.2 by default) with a Collector."""
    conns = []

    def make(version="1.2", port=None, **connect_headers):
        cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}[version]
        conn = cls([("127.0.0.1", port or broker.port)])
        listener = Collector()
        conn.set_listener("c", listener)
        conn.connect(wait=True, headers=connect_headers)
        conn.collector = listener
        conns.append(conn)
        return conn
    yield make
    for conn in conns:
        try:
            conn.disconnect()
        except Exception:
            pass


def send_with_receipt(conn, destination, body, **headers):
    rid = unique("r")
    conn.send(destination, body, headers=headers, receipt=rid)
    conn.collector.wait_receipt(rid)
