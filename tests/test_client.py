"""The STOMP failover client (pybrokerd.client) against real brokers, and the broker's
duplicate suppression of re-sent producer sequences."""

import socket
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from pybrokerd.client import (BrokerErrorFrame, ConnectFailed, ConnectionLost,
                              FailoverTimeout, connect)
from pybrokerd.client.twisted_client import StompClient
from support import (BrokerProcess, RawStomp, free_port, shared_dir_brokers,
                     start_master_and_slaves, unique, wait_until)


def url_of(broker):
    return "tcp://127.0.0.1:%d" % broker.port


# -- blocking API -------------------------------------------------------------------------

def test_blocking_send_subscribe_ack(broker):
    dest = "/queue/" + unique()
    with connect(url_of(broker)) as c:
        for i in range(100):
            c.send(dest, "m%d" % i, persistent=True, wait=False, headers={"n": i})
        c.flush(10)
        assert c.unconfirmed == 0
        stream = c.subscribe(dest, ack="client-individual")
        got = []
        for message in stream:
            got.append((message.text, message.headers["n"]))
            message.ack()
            if len(got) == 100:
                break
        assert got == [("m%d" % i, str(i)) for i in range(100)]
        assert stream.receive(timeout=0.2) is None
    # acked: nothing left for a new consumer
    with connect(url_of(broker)) as c:
        c.send(dest, "marker", persistent=True)
        assert c.subscribe(dest).receive(timeout=5).text == "marker"


def test_blocking_nack_and_unacked_come_back(broker):
    dest = "/queue/" + unique()
    with connect(url_of(broker)) as c:
        c.send(dest, "keep", persistent=True)
        stream = c.subscribe(dest, ack="client-individual")
        first = stream.receive(timeout=5)
        assert first.text == "keep" and not first.redelivered
    # closed without an ack: redelivered to the next consumer
    with connect(url_of(broker)) as c:
        again = c.subscribe(dest, ack="client-individual").receive(timeout=5)
        assert again.text == "keep" and again.redelivered
        again.ack()


def test_blocking_transaction_commit_and_abort(broker):
    dest = "/queue/" + unique()
    with connect(url_of(broker)) as c:
        tx = c.begin()
        c.send(dest, "dropped", transaction=tx)
        c.abort(tx)
        tx = c.begin()
        c.send(dest, "kept", transaction=tx)
        c.commit(tx)
        stream = c.subscribe(dest)
        assert stream.receive(timeout=5).text == "kept"
        assert stream.receive(timeout=0.3) is None


def test_blocking_broker_error_is_raised_and_connection_stays_usable(broker):
    with connect(url_of(broker)) as c:
        with pytest.raises(BrokerErrorFrame) as e:
            c.subscribe("/queue/" + unique(), ack="client", headers={"selector": "a ="})
        assert "selector" in str(e.value).lower()
        dest = "/queue/" + unique()
        c.send(dest, "still fine", persistent=True)
        assert c.subscribe(dest).receive(timeout=5).text == "still fine"


def test_plain_url_to_a_closed_port_fails_fast_with_a_clear_error():
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as e:
        connect("tcp://127.0.0.1:%d" % port)
    assert time.monotonic() - started < 5
    assert "127.0.0.1:%d" % port in str(e.value)


def test_failover_startup_limit_gives_up_instead_of_hanging():
    ports = [free_port(), free_port()]
    url = ("failover:(tcp://127.0.0.1:%d,tcp://127.0.0.1:%d)?initialReconnectDelay=10"
           "&startupMaxReconnectAttempts=3" % tuple(ports))
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as e:
        connect(url)
    assert time.monotonic() - started < 5
    assert "4 attempt(s)" in str(e.value)


def test_failover_startup_timeout_option():
    url = "failover:(tcp://127.0.0.1:%d)?startupTimeout=300&maxReconnectDelay=50" % free_port()
    started = time.monotonic()
    with pytest.raises(ConnectFailed):
        connect(url)
    assert 0.25 < time.monotonic() - started < 5


def test_send_while_no_broker_fails_after_the_failover_timeout(tmp_path):
    b = BrokerProcess(directory=str(tmp_path), port=free_port()).start()
    try:
        c = connect("failover:(tcp://127.0.0.1:%d)?timeout=300&maxReconnectDelay=50"
                    % b.fixed_port)
        b.kill()
        assert wait_until(lambda: not c.connected, 5)
        started = time.monotonic()
        with pytest.raises(FailoverTimeout) as e:
            c.send("/queue/x", "lost?", persistent=True)
        assert "Failover timeout of 300 ms reached" in str(e.value)
        assert time.monotonic() - started < 3
        # the broker comes back: the client reconnects by itself and works again
        b2 = b.restarted().start()
        try:
            assert wait_until(lambda: c.connected, 10)
            c.send("/queue/x", "works", persistent=True)
            c.disconnect()
        finally:
            b2.stop()
    finally:
        b.kill()


def test_silent_broker_is_detected_by_client_heartbeats(broker):
    """A peer that stops talking (no data, no heart-beats) is dead: fail over."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []

    def silent():
        conn, _ = server.accept()
        accepted.append(conn)
        conn.recv(4096)
        conn.sendall(b"CONNECTED\nversion:1.2\nheart-beat:100,100\n\n\x00\n")
        # ...and then nothing, ever
    threading.Thread(target=silent, daemon=True).start()
    url = ("failover:(tcp://127.0.0.1:%d,tcp://127.0.0.1:%d)?randomize=false"
           % (server.getsockname()[1], broker.port))
    try:
        c = connect(url, heartbeats=(100, 100))
        assert c.endpoint.port == server.getsockname()[1]
        assert wait_until(lambda: c.failovers == 1 and c.connected, 5)
        assert c.endpoint.port == broker.port
        dest = "/queue/" + unique()
        c.send(dest, "after failover", persistent=True)
        assert c.subscribe(dest).receive(timeout=5).text == "after failover"
        c.disconnect()
    finally:
        server.close()
        for conn in accepted:
            conn.close()


def test_client_sends_heartbeats(broker):
    """The broker expects beats every 200 ms (x grace) from a client that offers them."""
    idle = RawStomp(broker.port)
    idle.connect(**{"heart-beat": "200,0"})
    idle.wait_closed(5)  # positive control: a client that offers beats and sends none dies
    with connect(url_of(broker), heartbeats=(200, 0)) as c:
        assert c.core.send_interval == pytest.approx(0.2)
        assert not wait_until(lambda: not c.connected or c.failovers, 1.5)
        dest = "/queue/" + unique()
        c.send(dest, "alive", persistent=True)
        assert c.failovers == 0


# -- Twisted API --------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_twisted_api_send_subscribe_ack(broker):
    dest = "/queue/" + unique()
    client = StompClient(url_of(broker))
    yield client.connect()
    got = []
    arrived = defer.Deferred()

    def on_message(message):
        got.append(message.text)
        message.ack()
        if len(got) == 50 and not arrived.called:
            arrived.callback(None)
    yield defer.gatherResults([client.send(dest, "t%d" % i, persistent=True) for i in range(50)])
    yield client.subscribe(dest, on_message, ack="client-individual")
    yield arrived
    assert got == ["t%d" % i for i in range(50)]
    with pytest.raises(BrokerErrorFrame):
        yield client.subscribe("/queue/" + unique(), on_message, headers={"selector": "("})
    yield client.disconnect()
    assert not client.connected


@pytest_twisted.inlineCallbacks
def test_twisted_api_connect_failure():
    client = StompClient("failover:(tcp://127.0.0.1:%d)?startupMaxReconnectAttempts=1"
                         % free_port())
    with pytest.raises(ConnectFailed):
        yield client.connect()


# -- broker-side duplicate suppression ------------------------------------------------------

def stamped(c, dest, producer, seq, body, receipt):
    return c.receipt("SEND", {"destination": dest, "persistent": "true",
                              "pybrokerd-producer": producer, "pybrokerd-seq": str(seq),
                              "receipt": receipt}, body)


def drain(c, dest, expect):
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "d"})
    bodies = [c.recv_command("MESSAGE").body for _ in range(expect)]
    assert c.maybe_recv(0.3) is None
    return bodies


def test_broker_drops_resent_duplicates_but_receipts_them(raw):
    c = raw()
    dest = "/queue/" + unique()
    producer = unique("P")
    for seq, body in [(1, b"a"), (2, b"b"), (2, b"b"), (1, b"a"), (3, b"c")]:
        assert stamped(c, dest, producer, seq, body, "r%d" % seq).command == "RECEIPT"
    # another producer has its own sequence; unstamped sends are never dropped
    assert stamped(c, dest, unique("P"), 1, b"other", "x").command == "RECEIPT"
    c.receipt("SEND", {"destination": dest}, b"plain")
    c.receipt("SEND", {"destination": dest}, b"plain")
    assert drain(c, dest, 6) == [b"a", b"b", b"c", b"other", b"plain", b"plain"]


def test_bad_sequence_header_is_a_clear_error(raw):
    c = raw()
    reply = c.receipt("SEND", {"destination": "/queue/" + unique(), "pybrokerd-producer": "P",
                               "pybrokerd-seq": "x"}, b"?")
    assert reply.command == "ERROR" and "pybrokerd-seq" in reply.headers["message"]
    assert c.receipt("SEND", {"destination": "/queue/" + unique()}, b"ok").command == "RECEIPT"


def test_producer_sequences_survive_a_crash(tmp_path):
    b = BrokerProcess(directory=str(tmp_path), port=free_port()).start()
    try:
        dest = "/queue/" + unique()
        c = RawStomp(b.port)
        c.connect()
        for seq in (1, 2, 3):
            stamped(c, dest, "P-crash", seq, b"m%d" % seq, "r%d" % seq)
        b.kill()
        b = b.restarted().start()
        c = RawStomp(b.port)
        c.connect()
        # the failover client re-sends what it had no receipt for: 3 (a duplicate) and 4
        assert stamped(c, dest, "P-crash", 3, b"m3", "again").command == "RECEIPT"
        stamped(c, dest, "P-crash", 4, b"m4", "r4")
        assert drain(c, dest, 4) == [b"m1", b"m2", b"m3", b"m4"]
    finally:
        b.kill()


def test_clean_disconnect_forgets_the_producer(raw):
    dest = "/queue/" + unique()
    c = raw()
    stamped(c, dest, "P-bye", 1, b"first", "r1")
    c.receipt("DISCONNECT", {})
    # the id may be used again from the start without anything being dropped
    c = raw()
    stamped(c, dest, "P-bye", 1, b"second", "r2")
    assert drain(c, dest, 2) == [b"first", b"second"]


# -- failover between two real brokers --------------------------------------------------

def run_failover(tmp_path, dedup, total=10000):
    brokers = start_master_and_slaves(shared_dir_brokers(tmp_path))
    url = ("failover:(tcp://127.0.0.1:%d,tcp://127.0.0.1:%d)?initialReconnectDelay=10"
           "&maxReconnectDelay=100&randomize=false" % tuple(b.fixed_port for b in brokers))
    dest = "/queue/" + unique()
    received = []
    done = threading.Event()
    errors = []

    def consume():
        try:
            with connect(url, dedup=dedup, heartbeats=(1000, 1000)) as c:
                stream = c.subscribe(dest, ack="client-individual",
                                     headers={"activemq.prefetchSize": "100"})
                while len(set(received)) < total and not done.is_set():
                    m = stream.receive(timeout=0.5)
                    if m is not None:
                        received.append(m.text)
                        m.ack()
                done.set()
        except Exception as e:  # reported below
            errors.append(e)
            done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        with connect(url, dedup=dedup, heartbeats=(1000, 1000)) as p:
            for i in range(total):
                p.send(dest, "%05d" % i, persistent=True, wait=False)
                if i == total // 2:
                    wait_until(lambda: len(received) > 1000, 20)
                    brokers[0].kill()  # the master dies with sends and acks in flight
            p.flush(60)
            assert p.failovers == 1
        assert done.wait(60), "consumer got %d of %d" % (len(set(received)), total)
        assert not errors, errors
    finally:
        done.set()
        consumer.join(30)
        for b in brokers:
            b.kill()
    missing = set("%05d" % i for i in range(total)) - set(received)
    assert not missing, "lost %d messages" % len(missing)
    return len(received) - len(set(received))


def test_failover_exactly_once_with_duplicate_suppression(tmp_path):
    duplicates = run_failover(tmp_path, dedup=True)
    assert duplicates == 0


def test_failover_without_duplicate_suppression_loses_nothing(tmp_path):
    duplicates = run_failover(tmp_path, dedup=False)
    print("without duplicate suppression: 0 lost, %d duplicates" % duplicates)


@pytest_twisted.inlineCallbacks
def test_twisted_client_fails_over_resubscribes_and_resends(tmp_path):
    brokers = start_master_and_slaves(shared_dir_brokers(tmp_path))
    url = ("failover:(tcp://127.0.0.1:%d,tcp://127.0.0.1:%d)?initialReconnectDelay=10"
           "&maxReconnectDelay=100&randomize=false" % tuple(b.fixed_port for b in brokers))
    dest = "/queue/" + unique()
    total = 2000
    received = []
    all_in = defer.Deferred()

    def on_message(message):
        received.append(message.text)
        message.ack()
        if len(set(received)) == total and not all_in.called:
            all_in.callback(None)
    consumer = StompClient(url, heartbeats=(1000, 1000))
    producer = StompClient(url, heartbeats=(1000, 1000))
    try:
        yield consumer.connect()
        yield consumer.subscribe(dest, on_message, ack="client-individual", id="orders")
        yield producer.connect()
        sends = []
        for i in range(total):
            sends.append(producer.send(dest, "%04d" % i, persistent=True))
            if i == total // 2:
                brokers[0].kill()
        yield defer.gatherResults(sends)  # every send receipted, some by the new master
        timeout = consumer.reactor.callLater(30, lambda: all_in.called or all_in.errback(
            AssertionError("got %d of %d" % (len(set(received)), total))))
        yield all_in
        timeout.cancel()
        assert (producer.failovers, consumer.failovers) == (1, 1), [b.log()[-3000:] for b in brokers]
        assert sorted(received) == ["%04d" % i for i in range(total)]  # exactly once
        assert list(consumer.core.subscriptions) == ["orders"]
        yield producer.disconnect()
        yield consumer.disconnect()
    finally:
        for b in brokers:
            b.kill()


def test_endless_reconnecting_is_not_silent(caplog):
    """ActiveMQ's default retries for ever; we retry too, but say so every 10 attempts."""
    url = ("failover:(tcp://127.0.0.1:%d)?initialReconnectDelay=1&maxReconnectDelay=1"
           "&startupMaxReconnectAttempts=25" % free_port())
    with caplog.at_level("WARNING", logger="pybrokerd.client"):
        with pytest.raises(ConnectFailed):
            connect(url)
    warnings = [r.getMessage() for r in caplog.records if "still no broker" in r.getMessage()]
    assert len(warnings) == 2 and "after 10 attempts" in warnings[0]


def test_durable_topic_subscription_survives_failover(tmp_path):
    """Re-subscribed with the same client-id and durable name, the subscription gets what
    was published while the client was failing over."""
    brokers = start_master_and_slaves(shared_dir_brokers(tmp_path))
    url = ("failover:(tcp://127.0.0.1:%d,tcp://127.0.0.1:%d)?initialReconnectDelay=10"
           "&maxReconnectDelay=100&randomize=false" % tuple(b.fixed_port for b in brokers))
    topic = "/topic/" + unique()
    try:
        with connect(url, client_id=unique("durable")) as c:
            stream = c.subscribe(topic, ack="client-individual",
                                 headers={"activemq.subscriptionName": "audit"})
            with connect(url) as p:
                p.send(topic, "before", persistent=True)
                first = stream.receive(timeout=5)
                assert first.text == "before"
                first.ack()
                brokers[0].kill()
                p.send(topic, "during", persistent=True)  # waits for the new master
            assert wait_until(lambda: c.failovers == 1, 10)
            second = stream.receive(timeout=10)
            assert second is not None and second.text == "during"
            second.ack()
            assert stream.receive(timeout=0.3) is None  # "before" was acked: not again
    finally:
        for b in brokers:
            b.kill()


def test_commit_lost_in_flight_is_in_doubt_and_one_never_sent_is_rolled_back():
    """A peer that takes the COMMIT and dies before its RECEIPT: the outcome is unknown."""
    from pybrokerd.client import TransactionInDoubt, TransactionRolledBack
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def broker_that_dies_on_commit():
        conn, _ = server.accept()
        data = b""
        while b"COMMIT" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if data.count(b"\x00") == 1 and data.startswith(b"CONNECT"):
                conn.sendall(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00")
        conn.close()
    threading.Thread(target=broker_that_dies_on_commit, daemon=True).start()
    c = connect("tcp://127.0.0.1:%d" % server.getsockname()[1], heartbeats=(0, 0))
    try:
        tx = c.begin()
        c.send("/queue/x", "in a transaction", transaction=tx)
        with pytest.raises(TransactionInDoubt):
            c.commit(tx)
        with pytest.raises(TransactionRolledBack):  # its connection is gone: never sent
            c.commit(tx)
    finally:
        server.close()
        c.disconnect(timeout=1)
