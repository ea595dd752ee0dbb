"""AMQP 1.0 with python-qpid-proton's own clients (BlockingConnection, and Container-based
handlers for what the blocking API lacks) against a real broker, next to STOMP."""

import socket
import threading

import pytest
from proton import Delivery, Message
from proton.handlers import MessagingHandler, TransactionHandler
from proton.reactor import Container, DurableSubscription
from proton import ConnectionException
from proton.utils import BlockingConnection, LinkDetached, SendException

from support import BrokerProcess, RawStomp, broker_with_users, unique


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc = BrokerProcess("--max-redeliveries=1",
                         directory=str(tmp_path_factory.mktemp("amqp"))).start()
    yield proc
    proc.stop()


def amqp(proc, **kw):
    return BlockingConnection("amqp://127.0.0.1:%d" % proc.amqp_port, timeout=10, **kw)


def stomp(proc):
    c = RawStomp(proc.port)
    c.connect()
    return c


# -- sending and receiving, both protocols -------------------------------------------------------

def test_send_and_receive_with_every_mapped_field(broker):
    q = "queue://" + unique("fields")
    c = amqp(broker)
    try:
        c.create_sender(q).send(Message(
            body="hello", durable=True, priority=7, ttl=60, correlation_id="corr-1",
            reply_to="queue://replies", subject="order", properties={"n": 5, "ok": True}))
        r = c.create_receiver(q)
        m = r.receive(timeout=5)
        r.accept()
    finally:
        c.close()
    assert m.body == "hello" and m.durable and m.priority == 7
    assert 0 < m.ttl <= 60 and m.correlation_id == "corr-1" and m.reply_to == "queue://replies"
    assert m.subject == "order" and m.properties == {"n": 5, "ok": "true"}
    assert str(m.id).startswith("ID:")


def test_amqp_to_stomp_and_stomp_to_amqp(broker):
    name = unique("cross")
    s = stomp(broker)
    s.send("SUBSCRIBE", {"destination": "/queue/%s.in" % name, "id": "1"})
    assert s.receipt("SUBSCRIBE", {"destination": "/queue/%s.bytes" % name, "id": "2"}).command \
        == "RECEIPT"
    c = amqp(broker)
    try:
        c.create_sender("queue://%s.in" % name).send(Message(
            body="text body", durable=True, correlation_id="c-9", reply_to="topic://back",
            subject="T", priority=2, properties={"color": "red", "n": 3}))
        c.create_sender(name + ".bytes").send(Message(body=b"\x00\x01raw"))  # a bare name: queue
        text = s.recv_command("MESSAGE")
        raw = s.recv_command("MESSAGE")
        assert text.body == b"text body" and "content-length" not in text.headers
        h = text.headers
        assert (h["persistent"], h["correlation-id"], h["reply-to"], h["type"], h["priority"],
                h["color"], h["n"]) == ("true", "c-9", "/topic/back", "T", "2", "red", "3")
        assert raw.body == b"\x00\x01raw" and raw.headers["content-length"] == "5"
        # STOMP -> AMQP: no content-length is a text body, with one a data (bytes) body
        s.receipt("SEND", {"destination": "/queue/%s.out" % name, "persistent": "true",
                           "correlation-id": "c-1", "reply-to": "/queue/r", "k": "v"}, b"txt")
        s.receipt("SEND", {"destination": "/queue/%s.out" % name, "content-length": "3"}, b"bin")
        r = c.create_receiver("queue://%s.out" % name)
        first, second = r.receive(timeout=5), r.receive(timeout=5)
        r.accept()
        assert first.body == "txt" and first.durable and first.correlation_id == "c-1"
        assert first.reply_to == "queue://r" and first.properties["k"] == "v"
        assert second.body == b"bin" and not second.durable
    finally:
        c.close()
        s.close()


def test_topic_fan_out_to_amqp_and_stomp_subscribers(broker):
    topic = unique("fan")
    s = stomp(broker)
    assert s.receipt("SUBSCRIBE", {"destination": "/topic/" + topic, "id": "1"}).command == "RECEIPT"
    c = amqp(broker)
    try:
        receivers = [c.create_receiver("topic://" + topic, name=unique("link")) for _ in range(2)]
        c.create_sender("topic://" + topic).send(Message(body="news"))
        for r in receivers:
            assert r.receive(timeout=5).body == "news"
            r.accept()
        assert s.recv_command("MESSAGE").body == b"news"
    finally:
        c.close()
        s.close()


# -- credit, outcomes --------------------------------------------------------------------------

def test_link_credit_is_the_prefetch(broker):
    q = unique("credit")
    c = amqp(broker)
    s = stomp(broker)
    try:
        sender = c.create_sender(q)
        for i in range(5):
            sender.send(Message(body="m%d" % i))
        held = c.create_receiver(q, credit=2)
        got = [held.receive(timeout=5).body for _ in range(2)]  # not settled: they stay ours
        s.send("SUBSCRIBE", {"destination": "/queue/" + q, "id": "1"})
        others = sorted(s.recv_command("MESSAGE").body.decode() for _ in range(3))
        assert sorted(got + others) == ["m%d" % i for i in range(5)]
        assert s.maybe_recv(0.3) is None
    finally:
        c.close()
        s.close()


def test_released_comes_back_uncounted_modified_counted_rejected_dead_lettered(broker):
    q = unique("outcomes")
    c = amqp(broker)
    try:
        c.create_sender(q).send(Message(body="x", durable=True))
        r = c.create_receiver(q, credit=1)
        m = r.receive(timeout=5)
        assert m.delivery_count == 0
        r.release()                                # released: back, not a delivery attempt
        m = r.receive(timeout=5)
        assert m.body == "x" and m.delivery_count == 0
        r.settle(Delivery.MODIFIED)                # modified (delivery-failed): counted
        # (BlockingReceiver sets no delivery-failed flag: proton's MODIFIED without it)
        m = r.receive(timeout=5)
        assert m.body == "x"
        r.reject()                                  # rejected: the dead letter queue
        dlq = c.create_receiver("queue://ActiveMQ.DLQ")
        dead = dlq.receive(timeout=5)
        dlq.accept()
        assert dead.body == "x" and dead.properties["originalDestination"] == "queue://" + q
    finally:
        c.close()


def test_pre_settled_receiver_is_auto_ack(broker):
    q = unique("presettled")
    c = amqp(broker)
    try:
        c.create_sender(q).send(Message(body="once", durable=True))
        r = c.create_receiver(q, options=AtMostOnce())
        assert r.receive(timeout=5).body == "once"
        r.close()
        s = stomp(broker)
        s.send("SUBSCRIBE", {"destination": "/queue/" + q, "id": "1"})
        assert s.maybe_recv(0.5) is None  # it was consumed on delivery
        s.close()
    finally:
        c.close()


class AtMostOnce:
    def apply(self, link):
        link.snd_settle_mode = link.SND_SETTLED

    def test(self, link):
        return link.is_receiver


# -- durability --------------------------------------------------------------------------------

def test_accepted_durable_sends_survive_a_kill_9(tmp_path):
    proc = BrokerProcess(directory=str(tmp_path)).start()
    q = unique("durable")
    try:
        c = amqp(proc)
        sender = c.create_sender(q)
        for i in range(50):
            sender.send(Message(body="d%d" % i, durable=True))  # returns once accepted
        c.close()
        proc.kill()
        proc = proc.restarted().start()
        c = amqp(proc)
        r = c.create_receiver(q)
        got = []
        for _ in range(50):
            got.append(r.receive(timeout=5).body)
            r.accept()
        assert got == ["d%d" % i for i in range(50)]
        c.close()
    finally:
        proc.stop()


def test_durable_subscription_offline_then_back_then_unsubscribed(broker):
    topic = "topic://" + unique("dsub")
    container = unique("client")
    c = amqp(broker, container_id=container)
    c.create_receiver(topic, name="sub1", options=DurableSubscription())
    c.close()  # the connection goes; the subscription stays
    p = amqp(broker)
    sender = p.create_sender(topic)
    for i in range(3):
        sender.send(Message(body="while away %d" % i, durable=True))
    c = amqp(broker, container_id=container)
    r = c.create_receiver(topic, name="sub1", options=DurableSubscription())
    got = []
    for _ in range(3):
        got.append(r.receive(timeout=5).body)
        r.accept()
    assert got == ["while away %d" % i for i in range(3)]
    r.close()  # closing the link (not detaching) removes the subscription
    sender.send(Message(body="after", durable=True))
    c.close()
    c = amqp(broker, container_id=container)
    r = c.create_receiver(topic, name="sub1", options=DurableSubscription())
    sender.send(Message(body="fresh", durable=True))
    assert r.receive(timeout=5).body == "fresh"  # "after" went to no one
    r.accept()
    c.close()
    p.close()


# -- security ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    proc = broker_with_users(
        tmp_path_factory.mktemp("amqp-sec"), {"alice": ("secret", ["users"])},
        "[authorization]\nqueue:open.> = read: users; write: users; admin: users\n"
        "queue:locked.> = read: admins; write: admins; admin: admins\n")
    yield proc
    proc.stop()


def test_sasl_plain_with_the_broker_users(secured):
    url = "amqp://alice:secret@127.0.0.1:%d" % secured.amqp_port
    c = BlockingConnection(url, timeout=10, allowed_mechs="PLAIN")
    q = "open." + unique("sasl")
    c.create_sender(q).send(Message(body="authenticated"))
    r = c.create_receiver(q)
    assert r.receive(timeout=5).body == "authenticated"
    r.accept()
    c.close()


def test_a_link_to_a_destination_the_user_may_not_use_is_refused(secured):
    url = "amqp://alice:secret@127.0.0.1:%d" % secured.amqp_port
    c = BlockingConnection(url, timeout=10, allowed_mechs="PLAIN")
    try:
        with pytest.raises(LinkDetached) as e:
            c.create_sender("queue://locked.vault")
        assert "User alice is not authorized to write to: queue://locked.vault" in str(e.value)
        assert "amqp:unauthorized-access" in str(e.value)
        with pytest.raises(LinkDetached):
            c.create_receiver("queue://locked.vault")
        # the connection stays usable for what is allowed
        c.create_sender("open." + unique("allowed")).send(Message(body="ok"))
    finally:
        c.close()


@pytest.mark.parametrize("url_user", ["alice:wrong@", "mallory:secret@", ""])
def test_wrong_or_missing_credentials_are_refused(secured, url_user):
    url = "amqp://%s127.0.0.1:%d" % (url_user, secured.amqp_port)
    with pytest.raises(ConnectionException):
        BlockingConnection(url, timeout=10, allowed_mechs="PLAIN ANONYMOUS")


# -- transactions and scheduling (Container-based clients) ---------------------------------------

class TxClient(MessagingHandler, TransactionHandler):
    """Does its work inside one transaction, then commits (or aborts) and closes."""

    def __init__(self, url, address, commit, **kw):
        super().__init__(**kw)
        self.url, self.address, self.commit = url, address, commit
        self.outcome = None

    def finish(self, transaction):
        if self.commit:
            transaction.commit()
        else:
            transaction.abort()

    def on_transaction_committed(self, event):
        self.outcome = "committed"
        self.conn.close()

    def on_transaction_aborted(self, event):
        self.outcome = "aborted"
        self.conn.close()

    def on_transaction_declare_failed(self, event):
        self.outcome = "declare failed"
        self.conn.close()


class TxSender(TxClient):
    """Sends `bodies` in one transaction."""

    def __init__(self, url, address, bodies, commit):
        super().__init__(url, address, commit)
        self.bodies = bodies

    def on_start(self, event):
        self.conn = event.container.connect(self.url)
        self.sender = event.container.create_sender(self.conn, self.address)
        event.container.declare_transaction(self.conn, handler=self)

    def on_transaction_declared(self, event):
        for body in self.bodies:
            event.transaction.send(self.sender, Message(body=body, durable=True))
        self.finish(event.transaction)


def run_container(handler, timeout=15):
    container = Container(handler)
    t = threading.Thread(target=container.run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the Container client did not finish"


def test_local_transactions_commit_and_abort(broker):
    q = unique("tx")
    url = "amqp://127.0.0.1:%d" % broker.amqp_port
    aborted = TxSender(url, q, ["no-1", "no-2"], commit=False)
    run_container(aborted)
    committed = TxSender(url, q, ["yes-1", "yes-2"], commit=True)
    run_container(committed)
    assert (aborted.outcome, committed.outcome) == ("aborted", "committed")
    c = amqp(broker)
    r = c.create_receiver(q)
    got = [r.receive(timeout=5).body for _ in range(2)]
    r.accept()
    with pytest.raises(Exception):
        r.receive(timeout=0.5)
    c.close()
    assert got == ["yes-1", "yes-2"]


class Recv(MessagingHandler):
    def __init__(self, url, address, count):
        super().__init__()
        self.url, self.address, self.count, self.got = url, address, count, []

    def on_start(self, event):
        self.conn = event.container.connect(self.url)
        event.container.create_receiver(self.conn, self.address)

    def on_message(self, event):
        self.got.append(event.message.body)
        if len(self.got) == self.count:
            self.conn.close()


def test_container_client_and_a_scheduled_delivery(broker):
    import time
    q = unique("sched")
    c = amqp(broker)
    started = time.monotonic()
    c.create_sender(q).send(Message(body="later", durable=True,
                                    properties={"AMQ_SCHEDULED_DELAY": 700}))
    c.close()
    receiver = Recv("amqp://127.0.0.1:%d" % broker.amqp_port, q, 1)
    run_container(receiver)
    assert receiver.got == ["later"] and time.monotonic() - started >= 0.65


def test_a_bad_scheduling_property_is_rejected_with_the_reason(broker):
    c = amqp(broker)
    try:
        with pytest.raises(SendException):
            c.create_sender(unique("bad")).send(
                Message(body="x", properties={"AMQ_SCHEDULED_DELAY": "soon"}))
    finally:
        c.close()


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"AMQP\x00\x01\x00\x00" + b"\x00\x00\x00\x08\x07\x00\x00\x00" + b"\xff" * 64,
    b"AMQP\x03\x01\x00\x00" + b"\x00\x00\x00\x10\x02\x01\x00\x00" + b"\x00S\x41\xff\xff\xff\xff\xff",
    b"AMQP\x02\x01\x00\x00",
])
def test_garbage_gets_a_protocol_answer_and_a_close_and_the_broker_carries_on(broker, garbage):
    sock = socket.create_connection(("127.0.0.1", broker.amqp_port), timeout=5)
    sock.sendall(garbage)
    answer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        answer += chunk
    sock.close()
    assert answer.startswith(b"AMQP")  # a protocol header it can understand, then the close
    c = amqp(broker)
    q = unique("after-garbage")
    c.create_sender(q).send(Message(body="fine"))
    r = c.create_receiver(q)
    assert r.receive(timeout=5).body == "fine"
    r.accept()
    c.close()
    assert "Traceback" not in broker.log()


def test_an_unknown_address_prefix_is_refused_on_attach(broker):
    c = amqp(broker)
    try:
        with pytest.raises(LinkDetached) as e:
            c.create_sender("bogus://x")
        assert "Unknown address prefix" in str(e.value)
    finally:
        c.close()


class TxReceiver(TxClient):
    """Takes one message and accepts it inside the transaction."""

    def __init__(self, url, address, commit):
        super().__init__(url, address, commit, prefetch=1, auto_accept=False)
        self.got, self.txn = None, None

    def on_start(self, event):
        self.container = event.container
        self.conn = event.container.connect(self.url)
        event.container.declare_transaction(self.conn, handler=self)

    def on_transaction_declared(self, event):
        self.txn = event.transaction
        self.container.create_receiver(self.conn, self.address)

    def on_message(self, event):
        if self.got is not None:
            return
        self.got = event.message.body
        self.txn.accept(event.delivery)
        self.finish(self.txn)


def test_acks_inside_a_transaction_count_only_at_commit(tmp_path):
    # a broker of its own: the module's one dead-letters after one redelivery, and an
    # aborted transactional ack is a redelivery (the message comes back, count + 1)
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        _acks_inside_a_transaction(broker)
    finally:
        broker.stop()


def _acks_inside_a_transaction(broker):
    q = unique("txack")
    url = "amqp://127.0.0.1:%d" % broker.amqp_port
    c = amqp(broker)
    c.create_sender(q).send(Message(body="m", durable=True))
    aborted = TxReceiver(url, q, commit=False)
    run_container(aborted)
    assert (aborted.got, aborted.outcome) == ("m", "aborted")
    committed = TxReceiver(url, q, commit=True)  # the aborted ack left it on the queue
    run_container(committed)
    assert (committed.got, committed.outcome) == ("m", "committed")
    s = stomp(broker)
    s.send("SUBSCRIBE", {"destination": "/queue/" + q, "id": "1"})
    assert s.maybe_recv(0.5) is None  # the committed ack removed it
    s.close()
    c.close()


def test_a_container_id_in_use_is_refused_as_a_client_id(broker):
    container = unique("only-one")
    first = amqp(broker, container_id=container)
    try:
        with pytest.raises(ConnectionException) as e:
            amqp(broker, container_id=container)
        assert "already connected" in str(e.value)
    finally:
        first.close()
    amqp(broker, container_id=container).close()  # free again once the first is gone


def test_message_and_correlation_ids_map_as_activemq_maps_them(broker):
    import uuid
    q = unique("ids")
    s = stomp(broker)
    s.send("SUBSCRIBE", {"destination": "/queue/%s.stomp" % q, "id": "1"})
    token = uuid.uuid4()
    c = amqp(broker)
    try:
        c.create_sender(q + ".stomp").send(Message(id="order-17", correlation_id=token, body="a"))
        frame = s.recv_command("MESSAGE")
        assert frame.headers["message-id"] == "ID:AMQP_NO_PREFIX:order-17"
        assert frame.headers["correlation-id"] == "ID:AMQP_UUID:%s" % token
        sender = c.create_sender(q)
        sender.send(Message(id="order-18", correlation_id=token, body="b"))
        sender.send(Message(id=uuid.UUID(int=7), correlation_id="app-corr", body="c"))
        r = c.create_receiver(q)
        first, second = r.receive(timeout=5), r.receive(timeout=5)
        r.accept()
        assert (first.id, first.correlation_id) == ("order-18", token)   # the same values back
        assert (second.id, second.correlation_id) == (uuid.UUID(int=7), "app-corr")
    finally:
        c.close()
        s.close()


def test_a_receiver_without_source_finds_and_closes_a_durable_subscription(broker):
    topic = "topic://" + unique("lookup")
    container = unique("client")
    c = amqp(broker, container_id=container)
    c.create_receiver(topic, name="sub2", options=DurableSubscription())
    c.close()
    c = amqp(broker, container_id=container)
    found = c.create_receiver(None, name="sub2")  # qpid-jms's way to unsubscribe
    assert found.link.remote_source.address == topic
    found.close()
    c.close()
    p = amqp(broker)
    p.create_sender(topic).send(Message(body="nobody keeps this", durable=True))
    p.close()
    c = amqp(broker, container_id=container)
    r = c.create_receiver(topic, name="sub2", options=DurableSubscription())  # a new one
    with pytest.raises(Exception):
        r.receive(timeout=0.5)
    c.close()


def test_a_copy_source_on_a_queue_browses_it(broker):
    from proton.reactor import Copy
    q = unique("browse")
    c = amqp(broker)
    try:
        sender = c.create_sender(q)
        for i in range(3):
            sender.send(Message(body="b%d" % i, durable=True))
        browser = c.create_receiver(q, options=Copy())
        seen = [browser.receive(timeout=5).body for _ in range(3)]
        assert seen == ["b0", "b1", "b2"]
        browser.close()
        consumer = c.create_receiver(q)  # still all there
        got = [consumer.receive(timeout=5).body for _ in range(3)]
        consumer.accept()
        assert got == seen
    finally:
        c.close()
