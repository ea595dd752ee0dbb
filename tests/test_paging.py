"""Paging: a backlog larger than the window stays in the store until consumers drain it."""

import pytest_twisted
from twisted.internet import defer

from pybrokerd.broker.core import Broker
from pybrokerd.broker.destination import QUEUE, Destination
from pybrokerd.broker.message import Message
from pybrokerd.broker.queue import CLIENT_INDIVIDUAL, Consumer
from stores.journal import JournalAdapter
from support import BrokerProcess, RawStomp, unique
from support import CollectingSession as Session
from support import until_in_reactor as until


def msg(i):
    return Message("ID:p-%d" % i, Destination(QUEUE, "q"), b"x" * 100, persistent=True)


@pytest_twisted.inlineCallbacks
def test_only_a_window_is_in_memory_and_order_is_kept(tmp_path):
    store = JournalAdapter(str(tmp_path))
    yield store.open()
    broker = Broker(store, page_size=50, expiry_check_interval=0)
    yield broker.start()
    yield defer.gatherResults([broker.send(msg(i)) for i in range(500)])
    queue = broker.queues[Destination(QUEUE, "q")]
    assert len(queue.pending) == 50 and queue.paged == 450 and queue.size() == 500
    session = Session()
    consumer = Consumer(session, "1", [Destination(QUEUE, "q")], ack_mode=CLIENT_INDIVIDUAL,
                        prefetch=10)
    broker.subscribe(consumer)
    seen = []
    while len(seen) < 500:
        yield until(lambda: session.got)
        batch, session.got = session.got, []
        seen += [m.message_id for m, _ in batch]
        assert len(queue.pending) <= 50
        yield broker.ack(consumer, [a for _, a in batch])
    assert seen == ["ID:p-%d" % i for i in range(500)]
    assert queue.size() == 0 and store.queue_store("q").count() == 0
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_restart_loads_only_the_first_window(tmp_path):
    store = JournalAdapter(str(tmp_path))
    yield store.open()
    broker = Broker(store, page_size=20, expiry_check_interval=0)
    yield broker.start()
    yield defer.gatherResults([broker.send(msg(i)) for i in range(200)])
    yield store.close()
    store = JournalAdapter(str(tmp_path))
    yield store.open()
    broker = Broker(store, page_size=20, expiry_check_interval=0)
    yield broker.start()
    queue = broker.queues[Destination(QUEUE, "q")]
    yield until(lambda: len(queue.pending) == 20)
    assert queue.paged == 180
    found = yield broker.browse([Destination(QUEUE, "q")])
    assert [m.message_id for m in found] == ["ID:p-%d" % i for i in range(200)]
    yield store.close()


def test_paged_backlog_over_stomp_with_browse_and_restart(tmp_path):
    proc = BrokerProcess("--page-size=10", directory=str(tmp_path)).start()
    try:
        dest = "/queue/" + unique()
        c = RawStomp(proc.port)
        c.connect()
        for i in range(100):
            c.send("SEND", {"destination": dest, "persistent": "true", "receipt": str(i)}, b"%03d" % i)
        for i in range(100):
            assert c.recv().command == "RECEIPT"
        c.send("SEND", {"destination": dest}, b"non-persistent")
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "b", "browser": "true"})
        browsed = [c.recv_command("MESSAGE") for _ in range(102)]
        assert browsed[-1].headers["browser"] == "end"
        assert sorted(m.body for m in browsed[:-1]) == sorted([b"%03d" % i for i in range(100)] + [b"non-persistent"])
        proc.kill()
        proc = proc.restarted()
        proc.start()
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual",
                                "activemq.prefetchSize": "7"})
        got = []
        for _ in range(100):
            m = c.recv_command("MESSAGE")
            got.append(m.body)
            c.send("ACK", {"id": m.headers["ack"]})
        assert got == [b"%03d" % i for i in range(100)]
    finally:
        proc.kill()


@pytest_twisted.inlineCallbacks
def test_messages_arriving_during_a_refill_are_not_stranded(tmp_path):
    store = JournalAdapter(str(tmp_path))
    yield store.open()
    broker = Broker(store, page_size=10, expiry_check_interval=0)
    yield broker.start()
    yield defer.gatherResults([broker.send(msg(i)) for i in range(15)])
    queue = broker.queues[Destination(QUEUE, "q")]
    session = Session()
    consumer = Consumer(session, "1", [Destination(QUEUE, "q")], ack_mode=CLIENT_INDIVIDUAL,
                        prefetch=100)
    broker.subscribe(consumer)  # takes the window: a refill of the 5 paged ones starts
    assert queue._loading
    sends = [broker.send(msg(i)) for i in range(15, 40)]  # arrive while the store is read
    yield defer.gatherResults(sends)
    yield until(lambda: len(session.got) == 40)
    assert [m.message_id for m, _ in session.got] == ["ID:p-%d" % i for i in range(40)]
    yield store.close()
