"""Crash tests: a real broker process killed with SIGKILL, restarted on the same directory."""

import socket
import threading
import time

import pytest

from support import BrokerProcess, RawStomp, unique

STORES = ["kahadb", "lmdb", "leveldb"]


def start(tmp_path, store):
    return BrokerProcess("--store=%s" % store, directory=str(tmp_path)).start()


def restart(proc):
    proc.kill()
    fresh = BrokerProcess(*proc.args, directory=proc.dir)
    return fresh.start()


def client(proc, **headers):
    c = RawStomp(proc.port)
    c.connect(**headers)
    return c


def send_all(c, dest, bodies, **headers):
    """Send with a receipt each, pipelined; return once every receipt is in."""
    for i, body in enumerate(bodies):
        c.send("SEND", dict(headers, destination=dest, receipt="s%d" % i), body)
    for i in range(len(bodies)):
        frame = c.recv(30)
        assert frame.command == "RECEIPT", frame


def drain(proc, dest, timeout=1.0):
    c = client(proc)
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "d"})
    got = []
    while True:
        frame = c.maybe_recv(timeout)
        if frame is None:
            break
        assert frame.command == "MESSAGE"
        got.append(frame.body)
    c.close()
    return got


@pytest.mark.parametrize("store", STORES)
def test_receipted_messages_survive_kill_9(tmp_path, store):
    proc = start(tmp_path, store)
    try:
        dest = "/queue/" + unique()
        c = client(proc)
        bodies = [b"m%04d" % i for i in range(2000)]
        send_all(c, dest, bodies, persistent="true")
        proc = restart(proc)
        assert drain(proc, dest) == bodies
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_non_persistent_messages_do_not_survive_restart(tmp_path, store):
    proc = start(tmp_path, store)
    try:
        dest = "/queue/" + unique()
        send_all(client(proc), dest, [b"np"] * 10)
        proc = restart(proc)
        assert drain(proc, dest, timeout=0.5) == []
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_kill_while_producing_and_consuming(tmp_path, store):
    proc = start(tmp_path, store)
    dest = "/queue/" + unique()
    receipted, acked, ack_sent = set(), set(), set()
    stop = threading.Event()

    def produce():
        c = client(proc)
        i = 0
        try:
            while not stop.is_set():
                body = b"p%06d" % i
                c.send("SEND", {"destination": dest, "persistent": "true", "receipt": body.decode()}, body)
                frame = c.recv(10)
                if frame.command == "RECEIPT":
                    receipted.add(frame.headers["receipt-id"].encode())
                i += 1
        except Exception:
            pass

    def consume():
        c = client(proc)
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual"})
        try:
            while not stop.is_set():
                m = c.recv(10)
                if m.command != "MESSAGE":
                    continue
                ack_sent.add(m.body)  # may be applied even if its receipt never arrives
                if c.receipt("ACK", {"id": m.headers["ack"]}, timeout=10).command == "RECEIPT":
                    acked.add(m.body)
        except Exception:
            pass

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    stop.set()
    for t in threads:
        t.join(15)
    try:
        assert len(acked) >= 200, "the load did not get going"
        proc = restart(proc)
        left = set(drain(proc, dest))
        assert not (left & acked), "acked and receipted messages came back"
        assert receipted - ack_sent <= left, "receipted messages were lost"
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_transaction_is_all_or_nothing_across_kill(tmp_path, store):
    proc = start(tmp_path, store)
    try:
        dest_open, dest_done, dest_racing = ("/queue/" + unique() for _ in range(3))
        c = client(proc)
        c.receipt("BEGIN", {"transaction": "open"})
        for i in range(50):
            c.send("SEND", {"destination": dest_open, "transaction": "open", "persistent": "true"}, b"x")
        c.receipt("BEGIN", {"transaction": "done"})
        for i in range(50):
            c.send("SEND", {"destination": dest_done, "transaction": "done", "persistent": "true"}, b"y")
        assert c.receipt("COMMIT", {"transaction": "done"}).command == "RECEIPT"
        c.receipt("BEGIN", {"transaction": "racing"})
        for i in range(500):
            c.send("SEND", {"destination": dest_racing, "transaction": "racing", "persistent": "true"}, b"z")
        c.send("COMMIT", {"transaction": "racing"})  # and kill without waiting for it
        proc = restart(proc)
        assert drain(proc, dest_open, timeout=0.5) == []
        assert len(drain(proc, dest_done)) == 50
        assert len(drain(proc, dest_racing, timeout=0.5)) in (0, 500)
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_durable_subscription_survives_kill_9(tmp_path, store):
    proc = start(tmp_path, store)
    try:
        topic, cid = "/topic/" + unique(), unique("cid")
        c = client(proc, **{"client-id": cid})
        c.receipt("SUBSCRIBE", {"destination": topic, "id": "1", "activemq.subscriptionName": "s"})
        c.receipt("UNSUBSCRIBE", {"id": "1"})
        send_all(client(proc), topic, [b"a", b"b"], persistent="true")
        proc = restart(proc)
        c = client(proc, **{"client-id": cid})
        c.receipt("SUBSCRIBE", {"destination": topic, "id": "1", "activemq.subscriptionName": "s"})
        assert [c.recv_command("MESSAGE").body for _ in range(2)] == [b"a", b"b"]
    finally:
        proc.kill()


def test_acked_messages_stay_acked_after_restart(tmp_path):
    proc = start(tmp_path, "kahadb")
    try:
        dest = "/queue/" + unique()
        send_all(client(proc), dest, [b"%d" % i for i in range(10)], persistent="true")
        c = client(proc)
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client"})
        msgs = [c.recv_command("MESSAGE") for _ in range(10)]
        assert c.receipt("ACK", {"id": msgs[5].headers["ack"]}).command == "RECEIPT"
        proc = restart(proc)
        assert drain(proc, dest) == [b"%d" % i for i in range(6, 10)]
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_auto_acked_messages_do_not_come_back(tmp_path, store):
    proc = start(tmp_path, store)
    try:
        dest = "/queue/" + unique()
        c = client(proc)
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        send_all(client(proc), dest, [b"%d" % i for i in range(100)], persistent="true")
        got = [c.recv_command("MESSAGE").body for _ in range(100)]
        assert len(got) == 100
        # the last auto-ack's removal is group-committed right behind the dispatch: a DISCONNECT
        # receipt comes after every earlier receipt, so wait on that before the kill
        c.send("DISCONNECT", {"receipt": "bye"})
        c.recv_command("RECEIPT")
        proc = restart(proc)
        assert drain(proc, dest, timeout=0.5) == []
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_unacked_messages_come_back_redelivered_after_a_crash(tmp_path, store):
    proc = start(tmp_path, store)
    try:
        dest = "/queue/" + unique()
        send_all(client(proc), dest, [b"seen", b"unseen"], persistent="true")
        c = client(proc)
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client",
                                "activemq.prefetchSize": "1"})
        assert c.recv_command("MESSAGE").body == b"seen"
        # a delivery still unacked after mark_delay (0.2 s) is remembered by a store write
        # (earlier acks cancel it: no write at all); the store writes in order, so once a
        # later persistent send is receipted, that write is on disk.  The time is what is
        # being tested here, hence the sleep (with a wide margin for a loaded machine).
        time.sleep(1.0)
        c.receipt("SEND", {"destination": "/queue/" + unique(), "persistent": "true"}, b"sync")
        proc = restart(proc)  # kill -9 with "seen" delivered and unacked
        c = client(proc)
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
        first, second = c.recv_command("MESSAGE"), c.recv_command("MESSAGE")
        assert (first.body, first.headers.get("redelivered")) == (b"seen", "true")
        assert (second.body, second.headers.get("redelivered")) == (b"unseen", None)
    finally:
        proc.kill()


@pytest.mark.parametrize("store", STORES)
def test_streaming_with_fast_acks_loses_nothing_receipted(tmp_path, store):
    """A producer streams persistent messages (a RECEIPT every 50) to a consumer that acks
    each as it comes but every 7th: the acked ones are mostly never written (their writes
    wait for the ack, which comes first: docs/stores.md), the unacked ones are, before their
    RECEIPTs; after kill -9 exactly the unacked ones are back."""
    count, every = 1400, 7
    proc = BrokerProcess("--store=%s" % store, "--ack-wait=50", directory=str(tmp_path)).start()
    try:
        dest = "/queue/" + unique()
        consumer = client(proc)
        # (frames leave at once: with Nagle's algorithm one may wait for the broker's
        # delayed TCP ack, 40 ms, and the acks are then too slow for a wait to pay)
        consumer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        consumer.receipt("SUBSCRIBE", {"destination": dest, "id": "1",
                                       "ack": "client-individual",
                                       "activemq.prefetchSize": str(count)})
        unacked = set()
        failed = []

        def consume():
            try:
                for _ in range(count):
                    m = consumer.recv_command("MESSAGE", 30)
                    n = int(m.body[1:])
                    if n % every == 0:
                        unacked.add(m.body)
                    elif n < count - 1:
                        consumer.send("ACK", {"id": m.headers["ack"]})
                    else:  # the last with a RECEIPT: frames are taken in order, so every
                        # ACK is in, and stored, once it comes
                        assert consumer.receipt("ACK", {"id": m.headers["ack"]},
                                                timeout=30).command == "RECEIPT"
            except Exception as e:
                failed.append(e)

        thread = threading.Thread(target=consume)
        thread.start()
        producer = client(proc)
        producer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for first in range(0, count, 50):
            for i in range(first, first + 50):
                headers = {"destination": dest, "persistent": "true"}
                if i == first + 49:
                    headers["receipt"] = "r%d" % i
                producer.send("SEND", headers, b"m%05d" % i)
            producer.recv_command("RECEIPT", 30)
        thread.join(60)
        assert not failed, failed
        assert len(unacked) == len(range(0, count, every))
        proc = restart(proc)
        assert sorted(drain(proc, dest)) == sorted(unacked)
    finally:
        proc.kill()
