"""Producer flow control: memory, store and scheduler limits block producers, consumers free
room, and a producer that waits too long gets an ERROR naming the limit instead of a hang."""

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from pybrokerd.broker.core import Broker
from pybrokerd.broker.destination import QUEUE, TEMP_QUEUE, TOPIC, Destination
from pybrokerd.broker.message import Message
from pybrokerd.broker.queue import AUTO, CLIENT_INDIVIDUAL, Consumer
from stores.journal import JournalAdapter
from support import BrokerProcess, RawStomp, unique, wait_until
from support import CollectingSession as Session
from support import until_in_reactor as until

BODY = b"x" * 1024


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc = BrokerProcess("--memory-limit=64kb", "--store-limit=64kb", "--scheduler-limit=32kb",
                         "--send-fail-timeout=1.5",
                         directory=str(tmp_path_factory.mktemp("flow"))).start()
    yield proc
    proc.stop()


def fill(c, dest, headers, until_blocked_after=500):
    """Send with receipts until one does not come back at once; -> (sent, its receipt id)."""
    for i in range(until_blocked_after):
        rid = unique("r")
        c.send("SEND", dict(headers, destination=dest, receipt=rid, seq=str(i)), BODY)
        frame = c.maybe_recv(0.5)
        if frame is None:
            return i, rid
        assert frame.command == "RECEIPT" and frame.headers["receipt-id"] == rid, frame
    raise AssertionError("the limit never blocked the producer")


def drain(c, dest, n, timeout=10.0):
    c.send("SUBSCRIBE", {"destination": dest, "id": "drain", "ack": "auto"})
    got = [c.recv_command("MESSAGE", timeout) for _ in range(n)]
    c.send("UNSUBSCRIBE", {"id": "drain"})
    return got


@pytest.mark.parametrize("kind,headers,limit", [
    ("memory", {}, "--memory-limit"),
    ("store", {"persistent": "true"}, "--store-limit"),
    ("scheduler", {"AMQ_SCHEDULED_DELAY": "600000"}, "--scheduler-limit"),
])
def test_a_full_limit_blocks_then_fails_the_send_with_an_error_naming_it(broker, kind, headers,
                                                                         limit):
    dest = "/queue/" + unique(kind)
    producer = RawStomp(broker.port)
    producer.connect()
    sent, rid = fill(producer, dest, headers)
    assert sent >= 10  # the limits are tens of KiB: some got in first
    started = time.monotonic()
    error = producer.recv_command("ERROR", timeout=10)
    waited = time.monotonic() - started
    assert error.headers["receipt-id"] == rid
    message = error.headers["message"]
    assert limit in message and "--send-fail-timeout" in message and dest[7:] in message
    assert 0.5 <= waited < 5  # it waited about the timeout (1.5 s, 0.5 s of it in fill())
    # the ERROR is about that send only: the connection stays usable
    assert producer.receipt("SEND", {"destination": "/queue/" + unique("other")}).command in (
        "RECEIPT", "ERROR")
    assert producer.receipt("BEGIN", {"transaction": "t"}).command == "RECEIPT"
    producer.close()
    if kind != "scheduler":
        consumer = RawStomp(broker.port)
        consumer.connect()
        got = drain(consumer, dest, sent)
        assert [int(m.headers["seq"]) for m in got] == list(range(sent))
        consumer.close()
    else:
        remove_all_jobs(broker)


def remove_all_jobs(broker):
    c = RawStomp(broker.port)
    c.connect()
    c.receipt("SEND", {"destination": "/queue/ActiveMQ.Scheduler.Management",
                       "AMQ_SCHEDULER_ACTION": "REMOVEALL"})
    c.close()


@pytest.mark.parametrize("headers", [{}, {"persistent": "true"}])
def test_a_blocked_producer_resumes_when_a_consumer_makes_room(broker, headers):
    dest = "/queue/" + unique("resume")
    producer = RawStomp(broker.port)
    producer.connect()
    sent, rid = fill(producer, dest, headers)
    # frames read behind the blocked SEND wait and are answered in order after it
    producer.send("SEND", dict(headers, destination=dest, receipt="after", seq=str(sent + 1)), BODY)
    consumer = RawStomp(broker.port)
    consumer.connect()
    consumer.send("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual"})
    for _ in range(5):
        m = consumer.recv_command("MESSAGE")
        consumer.send("ACK", {"id": m.headers["ack"]})
    first = producer.recv(timeout=5)
    second = producer.recv(timeout=5)
    assert (first.command, first.headers["receipt-id"]) == ("RECEIPT", rid)
    assert (second.command, second.headers["receipt-id"]) == ("RECEIPT", "after")
    seqs = []
    for _ in range(sent - 5 + 2):  # the rest, the one that waited and the one behind it
        m = consumer.recv_command("MESSAGE")
        consumer.send("ACK", {"id": m.headers["ack"]})
        seqs.append(int(m.headers["seq"]))
    # ... and nothing was lost or reordered on the way
    assert seqs == list(range(5, sent + 2))
    consumer.close()
    producer.close()


def test_other_clients_keep_working_while_a_producer_is_blocked(broker):
    dest = "/queue/" + unique("blocked")
    producer = RawStomp(broker.port)
    producer.connect(**{"heart-beat": "300,0"})  # it must beat; the broker stops reading it
    sent, rid = fill(producer, dest, {"persistent": "true"})
    other = RawStomp(broker.port)
    other.connect()
    # requests to manage the broker always get through
    stats_reply = unique("stats")
    other.send("SUBSCRIBE", {"destination": "/queue/" + stats_reply, "id": "s"})
    assert other.receipt("SEND", {"destination": "/queue/ActiveMQ.Statistics.Broker",
                                  "reply-to": "/queue/" + stats_reply}).command == "RECEIPT"
    stats = other.recv_command("MESSAGE")
    assert b"storeLimit" in stats.body
    # the producer was not dropped for missing heart-beats while the broker did not read it
    beat = threading.Event()

    def beats():
        while not beat.is_set():
            try:
                producer.send_raw(b"\n")
            except OSError:
                return
            beat.wait(0.1)
    t = threading.Thread(target=beats, daemon=True)
    t.start()
    try:
        error = producer.recv_command("ERROR", timeout=10)
        assert error.headers["receipt-id"] == rid
    finally:
        beat.set()
        t.join()
    assert producer.receipt("ABORT", {"transaction": "none"}).command == "ERROR"  # still open
    drain(other, dest, sent)
    other.close()
    producer.close()


def test_fail_at_once_with_a_zero_timeout(tmp_path):
    proc = BrokerProcess("--memory-limit=8kb", "--send-fail-timeout=0",
                         directory=str(tmp_path)).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        dest = "/queue/" + unique()
        answers = [c.receipt("SEND", {"destination": dest}, BODY).command for _ in range(30)]
        assert "ERROR" in answers
        first_error = answers.index("ERROR")
        assert all(a == "RECEIPT" for a in answers[:first_error]) and first_error >= 5
    finally:
        proc.stop()


def test_a_jms_send_fails_at_once_with_a_zero_timeout(tmp_path, tmp_path_factory):
    from java_client import JavaClient
    java = JavaClient(str(tmp_path_factory.mktemp("flow-java-0")))
    proc = BrokerProcess("--store-limit=16kb", "--send-fail-timeout=0",
                         directory=str(tmp_path)).start()
    try:
        lines = java.run("fill", "tcp://127.0.0.1:%d" % proc.openwire_port, "x",
                         unique("ow-zero"))
        assert lines[0].endswith(": ResourceAllocationException") and \
            lines[2] == "connection usable: true"
    finally:
        proc.stop()


# -- the memory count, in process: every way a message enters or leaves memory ---------------

def _held(broker):
    """What the queues and subscriptions hold, summed the slow way."""
    return sum(q.memory_usage() for q in list(broker.queues.values())
               + list(broker.topic_subscriptions))


@pytest_twisted.inlineCallbacks
def test_the_memory_count_follows_every_path_and_returns_to_zero(tmp_path):
    store = JournalAdapter(str(tmp_path))
    yield store.open()
    broker = Broker(store, page_size=20, expiry_check_interval=0)
    broker.topic_pending_limit = 5
    yield broker.start()
    memory = broker.flow.memory

    def check():
        assert memory.used == _held(broker)

    q = Destination(QUEUE, "q")
    # enqueue beyond the window (paged ones are not in memory), non-persistent too
    yield defer.gatherResults([broker.send(Message("ID:p-%d" % i, q, b"x" * 100, persistent=True))
                               for i in range(50)])
    for i in range(5):
        broker.send(Message("ID:n-%d" % i, q, b"y" * 50))
    broker.send(Message("ID:e-1", q, b"z", expires=1))  # already expired
    check()
    assert memory.used == 20 * 300 + 5 * 250 + 201
    # deliveries in flight, acks, nacks, requeue on unsubscribe
    session = Session()
    consumer = Consumer(session, "1", [q], ack_mode=CLIENT_INDIVIDUAL, prefetch=10)
    broker.subscribe(consumer)
    yield until(lambda: len(session.got) == 10)
    check()
    yield broker.ack(consumer, [a for _, a in session.got[:4]])
    yield broker.nack(consumer, [session.got[4][1]])
    check()
    yield broker.unsubscribe(consumer)
    check()
    # auto ack drains everything, the expired one included, and the NACKed one from the DLQ
    session = Session()
    consumer = Consumer(session, "2", [q, broker.dlq], ack_mode=AUTO)
    broker.subscribe(consumer)
    yield until(lambda: broker.queues[q].size() == 0 and broker.queues[broker.dlq].size() == 0)
    yield broker.unsubscribe(consumer)
    check()
    # topics: a slow subscriber's discards, then dropping its subscription
    t = Destination(TOPIC, "t")
    slow = Session()
    slow.writable = False
    sub = Consumer(slow, "3", [t], ack_mode=CLIENT_INDIVIDUAL)
    broker.subscribe(sub)
    for i in range(20):
        broker.send(Message("ID:t-%d" % i, t, b"t" * 10))
    assert memory.used == 5 * 210
    check()
    yield broker.unsubscribe(sub)
    # a temporary queue deleted with messages in it; a purge
    tmp = broker.create_temporary(TEMP_QUEUE, "c1", owner=slow)
    broker.send(Message("ID:tmp", tmp, b"t"))
    broker.send(Message("ID:purged", Destination(QUEUE, "p"), b"p" * 10))
    assert memory.used > 0
    broker.delete_temporary(tmp)
    yield broker.queues[Destination(QUEUE, "p")].purge()
    check()
    assert memory.used == 0
    yield store.close()


def test_an_amqp_producer_is_held_by_credit_then_rejected_naming_the_limit(broker):
    from proton import Message as AmqpMessage
    from proton.utils import BlockingConnection, SendException
    q = "queue://" + unique("amqp-flow")
    c = BlockingConnection("amqp://127.0.0.1:%d" % broker.amqp_port, timeout=20)
    try:
        sender = c.create_sender(q)
        sent = 0
        with pytest.raises(SendException) as e:
            for _ in range(500):
                sender.send(AmqpMessage(body="x" * 1024))  # waits for each settlement
                sent += 1
        assert sent >= 10
        assert e.value.state == 37  # rejected (with amqp:resource-limit-exceeded)
    finally:
        c.close()
    consumer = RawStomp(broker.port)
    consumer.connect()
    assert len(drain(consumer, "/queue/" + q[8:], sent)) == sent
    consumer.close()


def test_a_jms_producer_is_held_then_refused_naming_the_limit(broker, tmp_path_factory):
    """ActiveMQ's Java client over OpenWire: its synchronous persistent sends wait under the
    full store limit, then the send throws ResourceAllocationException naming the limit."""
    from java_client import JavaClient
    java = JavaClient(str(tmp_path_factory.mktemp("flow-java")))
    queue = unique("ow-flow")
    started = time.monotonic()
    lines = java.run("fill", "tcp://127.0.0.1:%d" % broker.openwire_port, "x", queue)
    assert time.monotonic() - started >= 1.5  # the refused send waited --send-fail-timeout
    sent = int(lines[0].split()[2].rstrip(":"))
    assert sent >= 10 and lines[0].endswith(": ResourceAllocationException")
    assert "--store-limit" in lines[1] and "--send-fail-timeout" in lines[1]
    assert lines[2] == "connection usable: true"
    consumer = RawStomp(broker.port)
    consumer.connect()
    got = drain(consumer, "/queue/" + queue, sent)
    assert [int(m.headers["seq"]) for m in got] == list(range(sent))
    consumer.close()


def test_a_waiter_released_into_a_full_limit_can_wait_again():
    from twisted.internet.task import Clock

    from pybrokerd.broker.usage import FlowControl, ResourceLimitError
    clock = Clock()
    flow = FlowControl(clock, memory_limit=100, send_fail_timeout=5)
    flow.memory.used = 150
    outcomes = []

    def released(_, name):
        outcomes.append(name)
        flow.memory.used = 150  # the send that got through fills it again
        again = flow.wait(flow.memory, "/queue/q", name + "-again")
        again.addErrback(lambda f: outcomes.append((name + "-again", f.check(ResourceLimitError))))
    for name in ("a", "b"):
        flow.wait(flow.memory, "/queue/q", name).addCallback(released, name)
    flow.memory.used = 50
    clock.advance(0.05)  # both had room at that check: both released, both wait again
    assert outcomes == ["a", "b"] and flow.waiting() == 2
    clock.pump([0.05] * 120)  # and the timeout still works for them
    assert outcomes[2:] == [("a-again", ResourceLimitError), ("b-again", ResourceLimitError)]
    assert flow.waiting() == 0


def test_a_producer_that_goes_away_stops_waiting(broker):
    dest = "/queue/" + unique("gone")
    producer = RawStomp(broker.port)
    producer.connect()
    sent, _ = fill(producer, dest, {})
    waiting = _blocked_producers(broker)
    assert waiting >= 1
    producer.close()
    assert wait_until(lambda: _blocked_producers(broker) == waiting - 1, 5)
    consumer = RawStomp(broker.port)
    consumer.connect()
    assert len(drain(consumer, dest, sent)) == sent
    consumer.close()


def _blocked_producers(broker):
    import json
    import urllib.request
    url = "http://127.0.0.1:%d/api/broker" % broker.admin_port()
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["limits"]["blocked_producers"]
