"""Connection and subscription limits: a clear ERROR, never a silent drop or a hang."""

import socket

import pytest

from support import BrokerProcess, RawStomp, unique, wait_until


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    broker = BrokerProcess("--max-connections=4", "--max-connections-per-address=3",
                           "--max-subscriptions=2",
                           directory=str(tmp_path_factory.mktemp("limits"))).start()
    yield broker
    broker.stop()


def test_connections_per_address_then_in_total(limited):
    clients = []
    try:
        for _ in range(3):
            c = RawStomp(limited.port)
            c.connect()
            clients.append(c)
        refused = RawStomp(limited.port)
        frame = refused.recv(5)
        assert frame.command == "ERROR"
        assert frame.headers["message"] == ("Maximum connections from 127.0.0.1 (3) reached "
                                            "(--max-connections-per-address)")
        refused.wait_closed()
        clients.pop().close()
        # a slot is free again once the broker has seen the close
        assert wait_until(lambda: _accepted(limited), 5)
    finally:
        for c in clients:
            c.close()


def _accepted(broker):
    c = RawStomp(broker.port)
    try:
        c.connect()
        return True
    except (AssertionError, OSError, TimeoutError):
        return False
    finally:
        c.close()


def test_subscriptions_per_connection(limited):
    c = RawStomp(limited.port)
    c.connect()
    for i in range(2):
        assert c.receipt("SUBSCRIBE", {"destination": "/queue/" + unique(), "id": str(i)}).command == "RECEIPT"
    denied = c.receipt("SUBSCRIBE", {"destination": "/queue/" + unique(), "id": "9"})
    assert denied.command == "ERROR"
    assert denied.headers["message"].startswith("Maximum subscriptions per connection (2) reached")
    # still usable, and a slot frees up on UNSUBSCRIBE
    c.receipt("UNSUBSCRIBE", {"id": "0"})
    assert c.receipt("SUBSCRIBE", {"destination": "/queue/" + unique(), "id": "9"}).command == "RECEIPT"
    c.close()


def test_total_connections(limited):
    import socket
    socks = []
    try:
        for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"):
            s = socket.create_connection(("127.0.0.1", limited.port), source_address=(source, 0))
            s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00")
            assert s.recv(4096).startswith(b"CONNECTED")
            socks.append(s)
        s = socket.create_connection(("127.0.0.1", limited.port), source_address=("127.0.0.4", 0))
        s.settimeout(5)
        reply = b""
        while b"\x00" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"ERROR\n") and b"message:Maximum connections (4) reached" in reply
        assert s.recv(4096) == b""  # closed
        s.close()
    finally:
        for s in socks:
            s.close()


def _rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0


def test_a_topic_subscriber_that_stops_reading_does_not_grow_broker_memory(tmp_path):
    broker = BrokerProcess("--topic-pending-limit=1000", directory=str(tmp_path)).start()
    try:
        topic = "/topic/" + unique()
        stalled = RawStomp(broker.port)
        stalled.connect()
        stalled.receipt("SUBSCRIBE", {"destination": topic, "id": "1"})
        # ...and from now on it reads nothing
        producer = RawStomp(broker.port)
        producer.connect()
        body = b"x" * 1024
        before = _rss_mib(broker.proc.pid)
        for i in range(30000):
            producer.send("SEND", {"destination": topic, "n": str(i)}, body)
        assert producer.receipt("SEND", {"destination": topic, "n": "last"}, body).command == "RECEIPT"
        grown = _rss_mib(broker.proc.pid) - before
        assert grown < 15, "broker grew by %.1f MiB for a subscriber that reads nothing" % grown
        broker.wait_for_log(r"slow consumer on %s: more than 1000 messages pending" % topic)
        # when it reads again it gets the newest messages, the last one included
        got = [f.headers["n"] for f in stalled.until_quiet()]
        assert got[-1] == "last" and len(got) < 30000
    finally:
        broker.stop()


def test_an_auto_ack_consumer_that_reads_nothing_takes_only_what_its_socket_holds(tmp_path):
    # frames for a connection are gathered while the broker handles a read and written
    # together; a consumer that stops reading must still stop the dispatch once its socket
    # is full, and leave the rest of the queue to a consumer that reads
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        queue = "/queue/" + unique()
        producer = RawStomp(broker.port)
        producer.connect()
        body = b"x" * 1024
        count = 20000
        for i in range(count - 1):
            producer.send("SEND", {"destination": queue}, body)
        assert producer.receipt("SEND", {"destination": queue}, body).command == "RECEIPT"
        stalled = RawStomp(broker.port)
        # a small receive buffer: this machine lets one grow to 32 MiB, the whole queue
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stalled.connect()
        stalled.receipt("SUBSCRIBE", {"destination": queue, "id": "1", "ack": "auto"})
        # ...and it reads nothing from now on
        reader = RawStomp(broker.port)
        reader.connect()
        reader.receipt("SUBSCRIBE", {"destination": queue, "id": "1", "ack": "auto"})
        # the socket's buffers (the broker's send buffer grows to 4 MiB here) hold the rest:
        # the reader gets more than half (read until it has, or nothing comes for 5 s)
        got = 0
        while got <= count // 2 and reader.maybe_recv(5.0) is not None:
            got += 1
        assert got > count // 2, "the consumer that reads got %d of %d" % (got, count)
    finally:
        broker.stop()


def test_amqp_connection_limit_and_message_size(tmp_path):
    from proton import ConnectionException, Message
    from proton.utils import BlockingConnection, LinkDetached, SendException
    broker = BrokerProcess("--max-connections=2", "--max-body-length=10000",
                           directory=str(tmp_path)).start()
    url = "amqp://127.0.0.1:%d" % broker.amqp_port
    try:
        first, second = (BlockingConnection(url, timeout=10) for _ in range(2))
        with pytest.raises(ConnectionException) as e:
            BlockingConnection(url, timeout=10)
        assert "Maximum connections (2) reached" in str(e.value)
        second.close()
        assert wait_until(lambda: _amqp_accepted(url), 5)  # a slot is free again
        sender = first.create_sender(unique("size"))
        sender.send(Message(body="x" * 5000))
        with pytest.raises((SendException, LinkDetached, ConnectionException)):
            sender.send(Message(body="y" * 20000))  # over --max-body-length
        first.close()
        assert "Traceback" not in broker.log()
    finally:
        broker.stop()


def _amqp_accepted(url):
    from proton import ConnectionException
    from proton.utils import BlockingConnection
    try:
        BlockingConnection(url, timeout=5).close()
        return True
    except ConnectionException:
        return False
