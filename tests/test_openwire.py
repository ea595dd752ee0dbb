"""OpenWire with ActiveMQ's own Java JMS client (activemq-client 5.17, tests/java/OwClient.java).

Every scenario prints what a JMS user would check; the expected lines below are what the
same program prints against ActiveMQ 5.17 itself, and test_the_scenarios_print_the_same_
against_activemq proves that on every run.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest
import stomp

from java_client import JavaClient, ReferenceActiveMQ
from pybrokerd.protocols.openwire import codec
from support import BrokerProcess, RawStomp, broker_with_users, free_port, shared_dir_brokers, \
    start_master_and_slaves, unique, wait_until

EXPECTED = {
    "types": [
        "text hello \u00e9\u4e16 persistent=true",
        "bytes 000102ff0a persistent=true",
        "map big=Long:1099511627776 count=Integer:3 name=String:widget ok=Boolean:true "
        "price=Double:2.5 raw=byte[]:010203 persistent=true",
        "message persistent=false",
        "text  persistent=false",
        "more=false"],
    "topic": ["a: m0 m1 m2 m3 m4", "b: m0 m1 m2 m3 m4"],
    "nolocal": ["all: own theirs", "noLocal: theirs more=false"],
    "headers": [
        "text with headers big=Long:1099511627776 by=Byte:-3 color=String:red count=Integer:7 "
        "f=Float:1.5 flag=Boolean:true ratio=Double:0.25 sh=Short:12",
        "priority=7 correlation=corr-1 type=kind-a replyTo=queue://{p}.replies expires=true "
        "redelivered=false destination=queue://{p}.headers id=true",
        "text low priority=1 expiration=0"],
    "acks": ["got c0 c1", "got c2 redelivered=false", "after recover c2 redelivered=true",
             "left: c2 c3"],
    "individual": ["acked i1", "left: i0(r) i2(r)"],
    "tx": ["before commit visible=false", "got t1 redelivered=false",
           "after rollback t1 redelivered=true", "got t2", "after commit more=false"],
    "durable": ["online online", "back: offline0 offline1 offline2",
                "unsubscribe while active: refused", "fresh subscription sees old=false",
                "unsubscribe unknown: InvalidDestinationException"],
    "requestreply": ["re: q0 correlation=c0 temp=true", "re: q1 correlation=c1 temp=true",
                     "re: q2 correlation=c2 temp=true", "delete with a consumer: refused",
                     "send to deleted temp queue: refused"],
    "selector": ["reds: s0 s3", "rest: s1 s2 s4", "bad selector: InvalidSelectorException"],
    "prefetch0": ["empty receive(300)=false", "empty receiveNoWait=false", "a p0", "b p1",
                  "a p2", "b p3", "a more=false"],
    "scheduled": ["within 1000 ms=false", "then later late enough=true job id=true"],
    "browse": ["browsed: b0 b1 b2", "consumed: b0 b1 b2"],
}


@pytest.fixture(scope="session")
def java(tmp_path_factory):
    return JavaClient(str(tmp_path_factory.mktemp("openwire-java")))


def url(port):
    return "tcp://127.0.0.1:%d" % port


def expected(name, prefix):
    return [line.replace("{p}", prefix) for line in EXPECTED[name]]


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_jms_scenario(java, broker, scenario):
    prefix = unique("ow")
    assert java.run(scenario, url(broker.openwire_port), prefix) == expected(scenario, prefix)


def test_the_scenarios_print_the_same_against_activemq(java):
    """The expected lines are ActiveMQ's: the same programs against ActiveMQ 5.17."""
    reference = ReferenceActiveMQ(free_port()).start()
    try:
        for scenario in sorted(EXPECTED):
            prefix = unique("ref")
            assert java.run(scenario, url(reference.port), prefix) == \
                expected(scenario, prefix), scenario
    finally:
        reference.stop()


# -- one broker core: OpenWire <-> STOMP <-> AMQP ------------------------------------------------
class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.frames = []

    def on_message(self, frame):
        self.frames.append(frame)


def stomp_connection(port):
    conn = stomp.Connection12([("127.0.0.1", port)])
    listener = Listener()
    conn.set_listener("l", listener)
    conn.connect(wait=True)
    return conn, listener


def test_openwire_text_and_properties_reach_stomp(java, broker):
    queue = unique("ow-to-stomp")
    conn, listener = stomp_connection(broker.port)
    conn.subscribe("/queue/" + queue, id="1", ack="auto")
    assert java.run("send", url(broker.openwire_port), "x", queue, 3, "hi") == ["sent 3"]
    assert wait_until(lambda: len(listener.frames) == 3)
    bodies = [f.body for f in listener.frames]
    assert bodies == ["hi-0", "hi-1", "hi-2"]
    frame = listener.frames[1]
    assert frame.headers["seq"] == "1"  # a JMS int property, as a STOMP header
    assert frame.headers["persistent"] == "true"
    assert "content-length" not in frame.headers  # a TextMessage, as ActiveMQ sends it
    assert frame.headers["message-id"].startswith("ID:")
    conn.disconnect()


def test_stomp_messages_reach_jms_as_text_or_bytes(java, broker):
    queue = unique("stomp-to-ow")
    consumer = java.start("receive", url(broker.openwire_port), "x", queue, 3, "ready")
    try:
        assert consumer.stdout.readline().strip() == "ready"
        stomp_client = RawStomp(broker.port)
        stomp_client.connect()
        stomp_client.receipt("SEND", {"destination": "/queue/" + queue, "color": "blue",
                                      "priority": "6", "correlation-id": "c-9",
                                      "type": "order", "reply-to": "/queue/answers"},
                             b"plain text")
        stomp_client.receipt("SEND", {"destination": "/queue/" + queue, "persistent": "true",
                                      "content-length": "8"}, b"\x00\x01binary")
        stomp_client.receipt("SEND", {"destination": "/queue/" + queue,
                                      "content-type": "text/plain", "content-length": "11"},
                             b"with length")
        out, _ = consumer.communicate(timeout=60)
        stomp_client.close()
    finally:
        consumer.kill()
    lines = [line for line in out.splitlines() if not line.startswith("SLF4J")]
    assert lines[0] == ("text plain text color=String:blue persistent=false priority=6 "
                        "correlation=c-9 type=order replyTo=queue://answers")
    assert lines[1] == "bytes 000162696e617279 persistent=true priority=4"
    # a content-length: a BytesMessage, as ActiveMQ makes of it
    assert lines[2].startswith("bytes 77697468206c656e677468 content-type=String:text/plain")


def test_amqp_messages_reach_jms(java, broker):
    from proton import Message as AmqpMessage
    from proton.utils import BlockingConnection
    queue = unique("amqp-to-ow")
    connection = BlockingConnection("amqp://127.0.0.1:%d" % broker.amqp_port)
    sender = connection.create_sender("queue://" + queue)
    sender.send(AmqpMessage(body="from amqp", durable=True, properties={"n": 5}))
    sender.send(AmqpMessage(body={"k": "v", "i": 2}))
    connection.close()
    lines = java.run("receive", url(broker.openwire_port), "x", queue, 2)
    assert lines[0] == "text from amqp n=Long:5 persistent=true priority=4"
    assert lines[1] == "map i=Long:2 k=String:v persistent=false priority=4"


def test_jms_messages_reach_amqp(java, broker):
    from proton.utils import BlockingConnection
    queue = unique("ow-to-amqp")
    assert java.run("send", url(broker.openwire_port), "x", queue, 2, "am") == ["sent 2"]
    connection = BlockingConnection("amqp://127.0.0.1:%d" % broker.amqp_port)
    receiver = connection.create_receiver("queue://" + queue)
    got = [receiver.receive(timeout=10) for _ in range(2)]
    receiver.accept()
    connection.close()
    assert [m.body for m in got] == ["am-0", "am-1"]
    assert got[0].durable and got[1].properties["seq"] == 1


# -- durability, restart, failover ---------------------------------------------------------------
@pytest.mark.parametrize("store", ["kahadb", "lmdb"])
def test_persistent_jms_messages_survive_kill_9(java, tmp_path, store):
    proc = BrokerProcess("--store=%s" % store, directory=str(tmp_path)).start()
    try:
        queue = unique("ow-crash")
        assert java.run("send", url(proc.openwire_port), "x", queue, 200, "p") == ["sent 200"]
        proc.kill()
        again = proc.restarted().start()
        try:
            lines = java.run("receive", url(again.openwire_port), "x", queue, 200)
            # the int property keeps its Java type through the store
            assert lines == ["text p-%d seq=Integer:%d persistent=true priority=4" % (i, i)
                             for i in range(200)]
        finally:
            again.stop()
    finally:
        proc.kill()


def test_failover_across_a_master_kill_loses_nothing(java, tmp_path):
    """`failover:(a,b)` producer and consumer; the master is killed (SIGKILL) mid-stream:
    every send that returned is received, the slave takes over."""
    ports = [free_port(), free_port()]
    brokers = shared_dir_brokers(tmp_path, n=2)
    for b, port in zip(brokers, ports):
        b.args.append("--openwire=tcp:%d:interface=127.0.0.1" % port)
    master, slave = start_master_and_slaves(brokers)
    failover = "failover:(%s,%s)?initialReconnectDelay=50&maxReconnectDelay=500" % (
        url(ports[0]), url(ports[1]))
    queue = unique("ow-failover")
    total = 400
    consumer = java.start("drain", failover, "x", queue, total)
    producer = None
    try:
        assert consumer.stdout.readline().strip() == "ready"
        producer = java.start("stream", failover, "x", queue, total)
        sent = []
        for line in producer.stdout:
            if line.startswith("sent "):
                sent.append(int(line.split()[1]))
                if len(sent) == 100:
                    master.kill()
            if line.strip() == "done":
                break
        producer.wait(60)
        assert sent == list(range(total))
        out, _ = consumer.communicate(timeout=90)
    finally:
        for p in (consumer, producer):
            if p is not None:
                p.kill()
        for b in brokers:
            b.kill()
    got = [line.split()[1] for line in out.splitlines() if line.startswith("got ")]
    assert set(got) == {"s-%d" % i for i in range(total)}
    assert "distinct %d" % total in out
    assert slave.log().count("master: holding the lock") == 1


# -- security and bad input ------------------------------------------------------------------------
def test_jms_login_is_checked(java, tmp_path):
    proc = broker_with_users(str(tmp_path), {"alice": ("secret", ["users"])})
    try:
        ok = java.run("badlogin", url(proc.openwire_port), "x", "alice", "secret")
        assert ok == ["connected"]
        started = time.monotonic()
        refused = java.run_expecting_failure("badlogin", url(proc.openwire_port), "x",
                                             "alice", "wrong")
        assert time.monotonic() - started >= 0.5  # a delay before the refusal
        assert refused[-1].startswith("JMSException JMSSecurityException:")
        unknown = java.run_expecting_failure("badlogin", url(proc.openwire_port), "x",
                                             "mallory", "secret")
        # no hint whether the user exists: the same words (ActiveMQ's) but for the name
        assert unknown[-1] == refused[-1].replace("alice", "mallory")
    finally:
        proc.stop()


def test_jms_authorization_refuses_and_the_connection_stays_usable(java, tmp_path):
    proc = broker_with_users(
        str(tmp_path), {"alice": ("secret", ["users"]), "root": ("toor", ["admins"])},
        "[authorization]\nqueue:open.> = read: users; write: users; admin: users\n"
        "queue:locked.> = read: admins; write: admins; admin: admins\n")
    try:
        lines = java.run("denied", url(proc.openwire_port), "x", "alice", "secret",
                         "locked.q", "open.q")
        assert lines == ["send to locked.q: JMSSecurityException",
                         "consume from locked.q: JMSSecurityException", "then fine"]
        assert "User alice is not authorized to write to: queue://locked.q" in proc.log()
    finally:
        proc.stop()


def frame(obj) -> bytes:
    return codec.encode(obj)


HELLO = codec.WireFormatInfo(version=12, marshalledProperties=codec.encode_map({}))


class RawOpenWire:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = codec.Decoder()
        self.pending = []
        self.stash = []

    def send(self, data: bytes):
        self.sock.sendall(data)

    def recv(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.pending:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def recv_type(self, cls, timeout=5.0):
        """The next command of that class; others that come first are kept for later."""
        for i, command in enumerate(self.stash):
            if isinstance(command, cls):
                return self.stash.pop(i)
        while True:
            command = self.recv(timeout)
            if command is None or isinstance(command, cls):
                return command
            self.stash.append(command)

    def closed(self, timeout=5.0) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.recv(max(deadline - time.monotonic(), 0.01)) is None:
                    return True
        except (ConnectionResetError, socket.timeout):
            return False
        return False

    def close(self):
        self.sock.close()


def test_the_broker_speaks_first_and_asks_for_loose_encoding(broker):
    raw = RawOpenWire(broker.openwire_port)
    info = raw.recv()
    assert isinstance(info, codec.WireFormatInfo) and info.version == 12
    options = codec.decode_map(info.marshalledProperties)
    assert options["TightEncodingEnabled"] is False and options["CacheEnabled"] is False
    assert options["SizePrefixDisabled"] is False
    assert isinstance(raw.recv(), codec.BrokerInfo)
    raw.close()


BAD_INPUTS = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "negative size": b"\xff\xff\xff\xf0\x01",
    "huge frame": struct.pack(">i", 0x7FFFFFF0) + b"\x01",
    "bad magic": frame(codec.WireFormatInfo(version=12))[:5] + b"ActiveMX" +
    frame(codec.WireFormatInfo(version=12))[13:],
    "command before hello": frame(codec.ConnectionInfo(commandId=1, responseRequired=True)),
    "unknown type": frame(HELLO) + b"\x00\x00\x00\x02\xc8\x00",
    "truncated fields": frame(HELLO) + b"\x00\x00\x00\x03\x03\x00\x00",
    "left over bytes": frame(HELLO) + b"\x00\x00\x00\x08\x0a\x00\x00\x00\x01\x00\xff\xff",
    "bad utf8": frame(HELLO) + frame(codec.ConnectionInfo(
        commandId=1, connectionId=codec.ConnectionId(value="x")))[:-1].replace(
        b"\x01x", b"\x01\xff", 1) + b"\x00",
    "oneway unsupported": frame(HELLO) + frame(codec.BrokerInfo(commandId=1)),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_closes_with_a_logged_reason(broker, name):
    raw = RawOpenWire(broker.openwire_port)
    raw.send(BAD_INPUTS[name])
    assert raw.closed(), name
    raw.close()
    # the broker goes on serving: a STOMP round trip
    conn, listener = stomp_connection(broker.port)
    queue = "/queue/" + unique("after-bad")
    conn.subscribe(queue, id="1")
    conn.send(queue, "still here")
    assert wait_until(lambda: listener.frames)
    conn.disconnect()


def test_an_unsupported_request_gets_an_exception_response_and_the_connection_stays(broker):
    raw = RawOpenWire(broker.openwire_port)
    raw.send(frame(HELLO))
    raw.send(frame(codec.BrokerInfo(commandId=5, responseRequired=True)))
    response = raw.recv_type(codec.ExceptionResponse)
    assert response.correlationId == 5
    assert "does not support the OpenWire BrokerInfo" in response.exception.message
    raw.send(frame(codec.ConnectionInfo(commandId=7, responseRequired=True,
                                        connectionId=codec.ConnectionId(value="ID:raw:1"),
                                        clientId=unique("raw"))))
    assert raw.recv_type(codec.Response).correlationId == 7
    xa = codec.TransactionInfo(commandId=6, responseRequired=True, type=1,
                               transactionId=codec.XATransactionId(formatId=1,
                                                                   globalTransactionId=b"g",
                                                                   branchQualifier=b"b"))
    raw.send(frame(xa))
    response = raw.recv_type(codec.ExceptionResponse)
    assert response.correlationId == 6 and "XA" in response.exception.message
    raw.send(frame(codec.KeepAliveInfo(responseRequired=True)))
    assert isinstance(raw.recv_type(codec.KeepAliveInfo), codec.KeepAliveInfo)
    raw.close()


def test_jms_connections_show_in_the_admin_api_and_metrics(java, broker):
    import json
    import urllib.request
    queue = unique("ow-admin")
    consumer = java.start("receive", url(broker.openwire_port), "x", queue, 1, "ready")
    try:
        assert consumer.stdout.readline().strip() == "ready"
        base = "http://127.0.0.1:%d" % broker.admin_port()
        rows = json.load(urllib.request.urlopen(base + "/api/connections", timeout=10))
        mine = [r for r in rows if r["protocol"] == "openwire" and any(
            s["destinations"] == ["/queue/" + queue] for s in r["subscriptions"])]
        assert len(mine) == 1 and mine[0]["client_id"].startswith("ID:")
        metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        assert any(line.startswith('pybrokerd_connections{protocol="openwire"}')
                   for line in metrics.splitlines())
    finally:
        consumer.kill()
        consumer.wait()


def test_consumers_per_connection_are_limited(tmp_path):
    proc = BrokerProcess("--max-subscriptions=2", directory=str(tmp_path)).start()
    try:
        c = RawJms(proc.openwire_port, "limits")
        answers = [c.request(codec.ConsumerInfo(
            prefetchSize=10, consumerId=codec.ConsumerId(connectionId=c.conn, sessionId=1, value=n),
            destination=codec.ActiveMQQueue(physicalName=unique("lim")))) for n in range(3)]
        assert [type(a).__name__ for a in answers] == ["Response", "Response",
                                                       "ExceptionResponse"]
        refused = answers[2].exception
        assert refused.class_name == "javax.jms.ResourceAllocationException"
        assert "--max-subscriptions" in refused.message
        c.close()
    finally:
        proc.stop()


# -- protocol details with a raw client ------------------------------------------------------------
class RawJms(RawOpenWire):
    """Just enough of a JMS client to drive the broker command by command."""

    def __init__(self, port, name):
        super().__init__(port)
        self.conn = "ID:%s:1" % name
        self.ids = iter(range(1, 1 << 30))
        self.send(frame(HELLO))
        self.request(codec.ConnectionInfo(connectionId=codec.ConnectionId(value=self.conn),
                                          clientId=unique(name)))
        self.send(frame(codec.SessionInfo(commandId=next(self.ids), sessionId=codec.SessionId(
            connectionId=self.conn, value=1))))

    def request(self, command):
        command.commandId = next(self.ids)
        command.responseRequired = True
        self.send(frame(command))
        answer = self.recv_type((codec.Response, codec.ExceptionResponse))
        assert answer.correlationId == command.commandId
        return answer

    def consumer(self, n, queue, prefetch):
        cid = codec.ConsumerId(connectionId=self.conn, sessionId=1, value=n)
        answer = self.request(codec.ConsumerInfo(
            consumerId=cid, prefetchSize=prefetch, destination=codec.ActiveMQQueue(
                physicalName=queue)))
        assert isinstance(answer, codec.Response), answer
        return cid

    def produce(self, queue, bodies):
        pid = codec.ProducerId(connectionId=self.conn, sessionId=1, value=1)
        for i, body in enumerate(bodies, 1):
            self.request(codec.ActiveMQTextMessage(
                producerId=pid, destination=codec.ActiveMQQueue(physicalName=queue),
                messageId=codec.MessageId(producerId=pid, producerSequenceId=i),
                persistent=True, content=codec.encode_text(body), priority=4))

    def dispatches(self, n, timeout=5.0):
        return [self.recv_type(codec.MessageDispatch, timeout) for _ in range(n)]

    def nothing_more(self, timeout=0.5) -> bool:
        try:
            got = self.recv_type(codec.MessageDispatch, timeout)
        except socket.timeout:
            return True
        return got is None

    def ack(self, cid, kind, first, last, count, tx=None):
        self.send(frame(codec.MessageAck(
            commandId=next(self.ids), consumerId=cid, ackType=kind, firstMessageId=first,
            lastMessageId=last, messageCount=count, transactionId=tx,
            destination=None)))


def test_a_transacted_consumer_gets_no_more_than_its_prefetch(broker):
    """Prefetch 2: at most 2 undelivered-to-the-application messages, plus those the client
    reported delivered (ActiveMQ's prefetch extension); round after round, never more."""
    queue = unique("ow-txwindow")
    c = RawJms(broker.openwire_port, "txw")
    c.produce(queue, ["m%d" % i for i in range(12)])
    cid = c.consumer(1, queue, prefetch=2)
    conn = codec.ConnectionId(value=c.conn)
    received = []
    pending = c.dispatches(2)
    for rnd in range(1, 7):
        assert c.nothing_more(0.3)
        tx = codec.LocalTransactionId(value=rnd, connectionId=conn)
        c.send(frame(codec.TransactionInfo(commandId=next(c.ids), transactionId=tx, type=0,
                                           connectionId=conn)))
        first, last = pending[0].message.messageId, pending[-1].message.messageId
        c.ack(cid, 0, first, last, len(pending), tx)  # delivered: the window opens by 2
        more = c.dispatches(2) if rnd < 6 else []
        assert c.nothing_more(0.3), "more than prefetch + delivered in round %d" % rnd
        c.ack(cid, 2, first, last, len(pending), tx)  # consumed, in the transaction
        assert isinstance(c.request(codec.TransactionInfo(transactionId=tx, type=2,
                                                          connectionId=conn)), codec.Response)
        received += pending
        pending = more
    assert [codec.decode_text(d.message.content) for d in received] == \
        ["m%d" % i for i in range(12)]
    c.close()


def test_a_closed_consumer_that_delivered_nothing_returns_its_messages_unmarked(broker):
    queue = unique("ow-unmarked")
    c = RawJms(broker.openwire_port, "unm")
    c.produce(queue, ["a", "b", "c"])
    cid = c.consumer(1, queue, prefetch=10)
    assert len(c.dispatches(3)) == 3
    c.send(frame(codec.RemoveInfo(commandId=next(c.ids), objectId=cid,
                                  lastDeliveredSequenceId=-1)))  # none reached the application
    c.consumer(2, queue, prefetch=10)
    again = c.dispatches(3)
    assert [d.redeliveryCounter for d in again] == [0, 0, 0]
    assert [codec.decode_text(d.message.content) for d in again] == ["a", "b", "c"]
    c.close()


def test_only_its_connection_deletes_a_temporary_queue(broker):
    owner = RawJms(broker.openwire_port, "owner")
    other = RawJms(broker.openwire_port, "other")
    temp = codec.ActiveMQTempQueue(physicalName=owner.conn + ":1")
    assert isinstance(owner.request(codec.DestinationInfo(
        connectionId=codec.ConnectionId(value=owner.conn), destination=temp,
        operationType=0)), codec.Response)
    refused = other.request(codec.DestinationInfo(
        connectionId=codec.ConnectionId(value=other.conn), destination=temp, operationType=1))
    assert isinstance(refused, codec.ExceptionResponse)
    assert refused.exception.class_name == "java.lang.SecurityException"
    assert isinstance(owner.request(codec.DestinationInfo(
        connectionId=codec.ConnectionId(value=owner.conn), destination=temp,
        operationType=1)), codec.Response)
    owner.close()
    other.close()
