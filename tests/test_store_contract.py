"""The one contract every persistence adapter meets, run against each of them."""

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from pybrokerd.broker.destination import QUEUE, TOPIC, Destination
from pybrokerd.broker.message import Message
from stores import registry
from stores.interfaces import IMessageStore, IPersistenceAdapter

ALL = ["memory", "kahadb", "lmdb", "leveldb"]
PERSISTENT = ["kahadb", "lmdb", "leveldb"]


def message(i, dest="q", **kw):
    return Message("ID:test-%d" % i, Destination(QUEUE, dest), b"body-%d" % i,
                   persistent=True, **kw)


@pytest.fixture
def open_store(tmp_path):
    opened = []

    @defer.inlineCallbacks
    def make(name, **options):
        adapter = registry.load(name)(str(tmp_path / "store"), **options)
        yield adapter.open()
        opened.append(adapter)
        return adapter
    yield make
    for adapter in opened:
        pytest_twisted.blockon(adapter.close())


@defer.inlineCallbacks
def reopen(open_store, adapter, name, **options):
    yield adapter.close()
    return (yield open_store(name, **options))


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_provides_interfaces(open_store, name):
    adapter = yield open_store(name)
    assert IPersistenceAdapter.providedBy(adapter)
    assert IMessageStore.providedBy(adapter.queue_store("q"))


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_add_remove_recover_in_order(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    for i in range(10):
        yield store.add(message(i))
    yield store.remove("ID:test-3")
    yield store.remove("ID:test-7")
    got = yield store.recover(100)
    assert [m.message_id for m in got] == ["ID:test-%d" % i for i in (0, 1, 2, 4, 5, 6, 8, 9)]
    assert store.count() == 8
    assert store.bytes() > 0


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_recover_pages_with_a_cursor(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    yield adapter.transaction([("add", store, message(i)) for i in range(25)])
    seen, after = [], None
    while True:
        page = yield store.recover(10, after)
        if not page:
            break
        assert len(page) <= 10
        seen += [m.message_id for m in page]
        after = page[-1].message_id
    assert seen == ["ID:test-%d" % i for i in range(25)]


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_message_fields_round_trip(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    original = Message("ID:full", Destination(QUEUE, "q"), b"\x00\xffbin", persistent=True,
                       priority=9, expires=123456789, timestamp=42, correlation_id="c",
                       reply_to=Destination(TOPIC, "r"), type="t", is_bytes=True,
                       redelivery_count=3, original_destination=Destination(QUEUE, "o"),
                       properties={"k": "v", "ünï": "cödé"})
    yield store.add(original)
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
        store = adapter.queue_store("q")
    (m,) = yield store.recover(10)
    for attr in ("message_id", "destination", "body", "persistent", "priority", "expires",
                 "timestamp", "correlation_id", "reply_to", "type", "is_bytes",
                 "redelivery_count", "original_destination", "properties"):
        assert getattr(m, attr) == getattr(original, attr), attr


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_transaction_spans_stores(open_store, name):
    adapter = yield open_store(name)
    a, b = adapter.queue_store("a"), adapter.queue_store("b")
    yield a.add(message(1, "a"))
    yield adapter.transaction([("add", b, message(2, "b")), ("remove", a, "ID:test-1"),
                               ("add", a, message(3, "a"))])
    assert [m.message_id for m in (yield a.recover(10))] == ["ID:test-3"]
    assert [m.message_id for m in (yield b.recover(10))] == ["ID:test-2"]


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_add_then_remove_before_written_cancels(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    d1 = store.add(message(1))
    d2 = store.remove("ID:test-1")
    yield defer.gatherResults([d1, d2])
    assert store.count() == 0
    assert (yield store.recover(10)) == []


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_an_add_removed_in_the_same_turn_is_answered_without_a_write_and_in_order(
        open_store, name):
    """A message consumed the moment it arrives (an auto-ack consumer) costs no write at all,
    and its sender's answer still comes after those of writes submitted before it."""
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    yield store.add(message(0))
    batches = adapter.batches
    d1, d2 = store.add(message(1)), store.remove("ID:test-1")
    for _ in range(2):  # the turn that hands them off answers them: no trip through the writer
        yield deferLater(reactor, 0, lambda: None)
    assert d1.called and d2.called
    assert adapter.batches == batches  # nothing written, nothing synced
    order = []
    d3 = store.add(message(3))  # handed to the writer at the end of this turn
    d3.addCallback(lambda _: order.append(3))
    yield deferLater(reactor, 0, lambda: None)
    d4, d5 = store.add(message(4)), store.remove("ID:test-4")
    d4.addCallback(lambda _: order.append(4))
    yield defer.gatherResults([d3, d4, d5])
    assert order == [3, 4]
    adapter = yield reopen(open_store, adapter, name)
    got = yield adapter.queue_store("q").recover(10)
    assert [m.message_id for m in got] == ["ID:test-0", "ID:test-3"]


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_durable_subscriptions(open_store, name):
    adapter = yield open_store(name)
    info = {"client_id": "c1", "name": "s1", "selector": "a = 1",
            "destinations": [["topic", "t"]]}
    yield adapter.add_subscription(info)
    sub = adapter.subscription_store("c1", "s1")
    yield sub.add(message(1, "t"))
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
        sub = adapter.subscription_store("c1", "s1")
    assert [s["name"] for s in adapter.subscriptions()] == ["s1"]
    assert adapter.subscriptions()[0]["selector"] == "a = 1"
    assert [m.message_id for m in (yield sub.recover(10))] == ["ID:test-1"]
    yield adapter.delete_subscription("c1", "s1")
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
    assert adapter.subscriptions() == []
    assert (yield adapter.subscription_store("c1", "s1").recover(10)) == []


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_destinations_and_remove_destination(open_store, name):
    adapter = yield open_store(name)
    adapter.queue_store("a")
    yield adapter.queue_store("b").add(message(1, "b"))
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
    assert adapter.destinations() == ["a", "b"]
    yield adapter.remove_destination("b")
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
    assert adapter.destinations() == ["a"]
    assert (yield adapter.queue_store("b").recover(10)) == []


@pytest.mark.parametrize("name", PERSISTENT)
@pytest.mark.parametrize("sync", ["always", "periodic", "never"])
@pytest_twisted.inlineCallbacks
def test_reopen_recovers_exactly_what_was_left(open_store, name, sync):
    adapter = yield open_store(name, sync=sync)
    store = adapter.queue_store("q")
    yield defer.gatherResults([store.add(message(i)) for i in range(200)])
    yield defer.gatherResults([store.remove("ID:test-%d" % i) for i in range(0, 200, 2)])
    adapter = yield reopen(open_store, adapter, name, sync=sync)
    store = adapter.queue_store("q")
    got = yield store.recover(1000)
    assert [m.message_id for m in got] == ["ID:test-%d" % i for i in range(1, 200, 2)]
    assert store.count() == 100
    # new adds after a restart come after the recovered ones
    yield store.add(message(1000))
    adapter = yield reopen(open_store, adapter, name, sync=sync)
    got = yield adapter.queue_store("q").recover(1000)
    assert got[-1].message_id == "ID:test-1000" and len(got) == 101


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_many_concurrent_writers_are_group_committed(open_store, name):
    adapter = yield open_store(name)
    stores = [adapter.queue_store("q%d" % i) for i in range(4)]
    yield defer.gatherResults([stores[i % 4].add(message(i, "q%d" % (i % 4)))
                               for i in range(2000)])
    assert sum(s.count() for s in stores) == 2000
    adapter = yield reopen(open_store, adapter, name)
    total = 0
    for i in range(4):
        total += len((yield adapter.queue_store("q%d" % i).recover(10000)))
    assert total == 2000


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_update_rewrites_in_place(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    for i in range(3):
        yield store.add(message(i))
    yield store.update(message(1, redelivery_count=1))
    # an update and a remove racing in one batch: the remove wins
    d1 = store.update(message(2, redelivery_count=1))
    d2 = store.remove("ID:test-2")
    yield defer.gatherResults([d1, d2])
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
        store = adapter.queue_store("q")
    got = yield store.recover(10)
    assert [(m.message_id, m.redelivery_count) for m in got] == [("ID:test-0", 0), ("ID:test-1", 1)]


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_producer_sequences_are_atomic_with_the_send_and_survive_reopen(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    # one batch: a message and its producer's sequence; then later sequences, collapsed
    yield adapter.transaction([("add", store, message(1)), ("producer", None, ("P1", 1))])
    yield defer.gatherResults([
        adapter.transaction([("add", store, message(i)), ("producer", None, ("P1", i))])
        for i in range(2, 6)])
    yield adapter.transaction([("producer", None, ("P2", 7))])
    yield adapter.transaction([("producer", None, ("P3", 9))])
    yield adapter.transaction([("producer", None, ("P3", None))])  # forgotten
    assert {k: v[0] for k, v in adapter.producers().items()} == {"P1": 5, "P2": 7}
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
        assert {k: v[0] for k, v in adapter.producers().items()} == {"P1": 5, "P2": 7}
        assert adapter.queue_store("q").count() == 5
        yield adapter.checkpoint()  # the journal keeps them in its checkpoint too
        yield adapter.transaction([("producer", None, ("P2", 8))])
        adapter = yield reopen(open_store, adapter, name)
        assert {k: v[0] for k, v in adapter.producers().items()} == {"P1": 5, "P2": 8}
    assert all(v[1] > 1_600_000_000 for v in adapter.producers().values())


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_non_durable_batches_are_written_and_synced_soon(open_store, name):
    """durable=False (nobody waits for an fsync) still writes at once, and the writer syncs
    it within periodic_sync_interval even if no durable batch follows."""
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    yield adapter.transaction([("add", store, message(i)) for i in range(5)], durable=False)
    yield adapter.transaction([("remove", store, "ID:test-1")], durable=False)
    if name in PERSISTENT:
        started = time.monotonic()
        while adapter._unsynced and time.monotonic() - started < 5:
            yield deferLater(reactor, 0.05, lambda: None)
        assert not adapter._unsynced
        adapter = yield reopen(open_store, adapter, name)
        store = adapter.queue_store("q")
    assert [m.message_id for m in (yield store.recover(10))] == \
        ["ID:test-%d" % i for i in (0, 2, 3, 4)]


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_delivery_marks_are_written_late_and_cancelled_by_a_remove(open_store, name):
    adapter = yield open_store(name)
    store = adapter.queue_store("q")
    for i in range(3):
        yield store.add(message(i))
    batches = adapter.batches
    store.mark_delivered((yield store.get("ID:test-0")))
    store.mark_delivered((yield store.get("ID:test-1")))
    yield store.remove("ID:test-1")  # acked before the mark was due: no rewrite at all
    yield deferLater(reactor, adapter.mark_delay * 3, lambda: None)
    assert adapter.batches == batches + 2  # the remove, then one batch with one rewrite
    adapter = yield reopen(open_store, adapter, name)
    got = yield adapter.queue_store("q").recover(10)
    assert [(m.message_id, m.redelivery_count) for m in got] == [
        ("ID:test-0", 1), ("ID:test-2", 0)]


@pytest.mark.parametrize("name", ALL)
@pytest_twisted.inlineCallbacks
def test_stored_bytes_follow_adds_removes_and_drops_and_survive_reopen(open_store, name):
    adapter = yield open_store(name)
    assert adapter.stored_bytes() == 0
    queue = adapter.queue_store("q")
    sub = adapter.subscription_store("c", "s")
    yield adapter.transaction([("add", queue, message(i)) for i in range(10)]
                              + [("add", sub, message(100 + i, "t")) for i in range(5)])
    expected = sum(len(message(i).body) for i in range(10)) \
        + sum(len(message(100 + i).body) for i in range(5))
    assert adapter.stored_bytes() == expected
    yield queue.remove("ID:test-0")
    expected -= len(message(0).body)
    assert adapter.stored_bytes() == expected
    if name in PERSISTENT:
        adapter = yield reopen(open_store, adapter, name)
        assert adapter.stored_bytes() == expected
    yield adapter.add_subscription({"client_id": "c", "name": "s", "selector": "",
                                    "destinations": [("topic", "t")]})
    yield adapter.delete_subscription("c", "s")
    yield adapter.remove_destination("q")
    assert adapter.stored_bytes() == 0


@defer.inlineCallbacks
def ids_after_reopen(open_store, adapter, name):
    """The ids of queue "q" as the store finds them when opened again."""
    adapter = yield reopen(open_store, adapter, name)
    got = yield adapter.queue_store("q").recover(1000)
    return [m.message_id for m in got]


def ack_fast(adapter, store, first):
    """Consumers acking at a high rate: two blocks of messages delivered and acked at once
    (and the rate so measured stays good for the rest of the test, however slow it runs)."""
    adapter.rate_stale = 60.0
    for i in range(first, first + 2 * adapter.ack_block):
        m = message(i)
        store.add(m)
        store.mark_delivered(m)
        store.remove(m.message_id)


def turns(n=3):
    d = defer.succeed(None)
    for _ in range(n):
        d.addCallback(lambda _: deferLater(reactor, 0, lambda: None))
    return d


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_while_consumers_ack_fast_a_message_in_flight_waits_for_its_ack_and_is_never_written(
        open_store, name):
    """A persistent message already delivered to a consumer that acks it is not written at
    once: its ack mostly comes first, and then nothing is written at all.  The answer to its
    add (the RECEIPT of its SEND) comes when it is acked or written, never before."""
    adapter = yield open_store(name, ack_wait=30.0)  # (the ack ends the wait, not the time)
    adapter.mark_delay = adapter.wait_per_add = 30.0  # (a delivery mark written ends it too)
    store = adapter.queue_store("q")
    yield store.add(message(0))
    ack_fast(adapter, store, 1000)
    yield turns()
    written = adapter.batched_ops
    m = message(1)
    d = store.add(m)
    store.mark_delivered(m)
    later = store.add(message(2))  # behind it: in order, so it waits as well
    yield turns()
    assert not d.called and not later.called
    store.remove(m.message_id)  # the ack: nothing left to wait for
    yield defer.gatherResults([d, later])
    assert adapter.batched_ops == written + 1  # the later add only
    assert (yield ids_after_reopen(open_store, adapter, name)) == ["ID:test-0", "ID:test-2"]


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_a_send_acked_by_a_commit_that_moves_it_on_is_answered_with_the_commit(
        open_store, name):
    """A COMMIT that acks a waiting message and sends another (consume and forward) drops
    the message's add with its remove, so the SEND's answer comes with the COMMIT's, not
    before: until the COMMIT is written the message is nowhere durable, and if that write
    fails the SEND fails too (its producer may send it again)."""
    adapter = yield open_store(name, ack_wait=30.0)
    adapter.mark_delay = adapter.wait_per_add = 30.0
    store, other = adapter.queue_store("q"), adapter.queue_store("q2")
    yield other.add(message(0, "q2"))  # (the queues' own records are written by now)
    yield other.remove("ID:test-0")
    ack_fast(adapter, store, 1000)
    yield turns()
    written = adapter.batched_ops
    m = message(1)
    answered = []
    d = store.add(m).addCallback(lambda _: answered.append("send"))
    store.mark_delivered(m)
    yield turns()
    assert not d.called  # waiting for the ack
    commit = adapter.transaction([("remove", store, m.message_id),
                                  ("add", other, message(2, "q2"))])
    commit.addCallback(lambda _: answered.append("commit"))
    yield defer.gatherResults([d, commit])
    assert answered == ["commit", "send"]
    assert adapter.batched_ops == written + 1  # the COMMIT's add only
    adapter = yield reopen(open_store, adapter, name)
    assert (yield adapter.queue_store("q").recover(10)) == []
    assert [x.message_id for x in (yield adapter.queue_store("q2").recover(10))] == \
        ["ID:test-2"]


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_a_wait_for_acks_is_short_when_it_could_save_few_writes(open_store, name):
    """A producer waiting for the RECEIPT of one message is not kept waiting for long on
    the chance of an ack: a wait lasts wait_per_add for each add held (up to ack_wait), and
    whatever is still unacked then is written."""
    adapter = yield open_store(name, ack_wait=30.0)
    adapter.mark_delay = 30.0
    adapter.wait_per_add = 0.05
    store = adapter.queue_store("q")
    elapsed = []
    for first, count in ((1, 1), (100, 20)):
        ack_fast(adapter, store, 1000 + 1000 * first)
        yield turns()
        started = time.monotonic()
        adds = []
        for i in range(first, first + count):
            adds.append(store.add(message(i)))
            store.mark_delivered(message(i))
        yield defer.gatherResults(adds)  # none was acked: written once the wait was over
        elapsed.append(time.monotonic() - started)
    assert 0.045 <= elapsed[0] < 10 and 0.95 <= elapsed[1] < 10, elapsed  # (timers: ±1 ms)
    assert len((yield ids_after_reopen(open_store, adapter, name))) == 21


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_after_waits_that_saved_nothing_messages_in_flight_are_written_at_once(
        open_store, name):
    adapter = yield open_store(name, ack_wait=0.5)
    adapter.wait_per_add = 0.5
    adapter.mark_delay = 30.0  # (a delivery mark written would end a wait too)
    adapter.hold_backoff = 60.0
    store = adapter.queue_store("q")
    ack_fast(adapter, store, 1000)
    yield turns()
    held = [message(i) for i in range(adapter.ack_block)]
    started = time.monotonic()
    adds = [store.add(m) for m in held]
    for m in held:
        store.mark_delivered(m)
    yield defer.gatherResults(adds)  # no ack came: written (and synced) after the wait
    assert time.monotonic() - started >= 0.45  # (it did wait; timers may fire a ms early)
    # of ack_block adds held, none was saved: for a while the next ones are written at once
    adapter.ack_wait = adapter.wait_per_add = 30.0
    ack_fast(adapter, store, 3000)
    yield turns()
    d = store.add(message(100))
    store.mark_delivered(message(100))
    started = time.monotonic()
    yield d
    assert time.monotonic() - started < 10
    assert len((yield ids_after_reopen(open_store, adapter, name))) == adapter.ack_block + 1


@pytest.mark.parametrize("name", PERSISTENT)
@pytest_twisted.inlineCallbacks
def test_when_acks_are_few_a_message_in_flight_is_written_at_once(open_store, name):
    """Waiting for acks only pays when consumers ack at a high rate; otherwise the message
    goes to the disk at once, the sooner safe from a crash of the broker."""
    adapter = yield open_store(name, ack_wait=30.0)
    adapter.mark_delay = adapter.wait_per_add = 30.0
    adapter.ack_block = 4  # the rate is measured over 4 acks: below 4 in 4 ms, slow
    store = adapter.queue_store("q")
    for i in range(2 * adapter.ack_block):  # acks of messages in flight, 30 ms apart
        m = message(100 + i)
        yield store.add(m)
        store.mark_delivered(m)
        yield store.remove(m.message_id)
        yield deferLater(reactor, 0.03, lambda: None)
    m = message(1)
    started = time.monotonic()
    d = store.add(m)
    store.mark_delivered(m)
    yield d
    assert time.monotonic() - started < 10
    assert (yield ids_after_reopen(open_store, adapter, name)) == ["ID:test-1"]
