"""Management destinations: ActiveMQ's statistics plugin (ActiveMQ.Statistics.*) and our purge
(pybrokerd.Admin.Purge.*), over real sockets; the map message renderer against bytes that
ActiveMQ 5.17's XStream 1.4.20 / Jettison 1.5.3 wrote for the same maps."""

import json
import os
import xml.etree.ElementTree as ElementTree

import pytest
import pytest_twisted
from twisted.internet import defer

from pybrokerd.broker.core import Broker
from pybrokerd.broker.destination import QUEUE, Destination
from pybrokerd.broker.message import Int32, Message
from pybrokerd.broker.queue import CLIENT_INDIVIDUAL, Consumer
from pybrokerd.protocols.stomp import mapmessage
from stores.journal import JournalAdapter
from support import BrokerProcess, RawStomp, unique
from support import CollectingSession as Session
from support import until_in_reactor as until

STATS = "ActiveMQ.Statistics.Destination"
END = "ActiveMQ.Statistics.Destination.List.End.With.Null"
PURGE = "pybrokerd.Admin.Purge"
BODY = b"0123456789"
SIZE = len(BODY) + 200  # Message.size: what averageMessageSize and memoryUsage add up

# the keys of ActiveMQ 5.17.2's replies, in the order it sends them (recorded)
DESTINATION_KEYS = [
    "dequeueCount", "averageMessageSize", "brokerId", "memoryUsage", "consumerCount",
    "minEnqueueTime", "memoryPercentUsage", "averageEnqueueTime", "messagesCached",
    "expiredCount", "inflightCount", "maxEnqueueTime", "dispatchCount", "size",
    "destinationName", "producerCount", "memoryLimit", "brokerName", "enqueueCount"]
BROKER_KEYS = [
    "averageMessageSize", "minEnqueueTime", "expiredCount", "stomp+ssl", "inflightCount", "ssl",
    "tempUsage", "tempLimit", "stomp", "storePercentUsage", "dequeueCount", "brokerId",
    "memoryUsage", "consumerCount", "storeUsage", "dataDirectory", "memoryPercentUsage",
    "averageEnqueueTime", "messagesCached", "maxEnqueueTime", "dispatchCount", "size",
    "openwire", "vm", "storeLimit", "producerCount", "memoryLimit", "brokerName",
    "enqueueCount", "tempPercentUsage"]


# -- helpers -------------------------------------------------------------------------------

def parse_xml(body: bytes) -> dict:
    convert = {"long": int, "int": int, "double": float, "string": lambda t: t or "",
               "boolean": lambda t: t == "true"}
    return {entry[0].text: convert[entry[1].tag](entry[1].text)
            for entry in ElementTree.fromstring(body)}


def keys_in_order(body: bytes) -> list:
    return [entry[0].text for entry in ElementTree.fromstring(body)]


def is_end(frame) -> bool:
    return frame.body in (b"<map/>", b'{"map":""}')


def reply_queue(c, transformation="jms-map-json"):
    """Subscribe to a fresh reply queue; -> its STOMP name."""
    name = "/queue/" + unique("reply")
    headers = {"destination": name, "id": unique("s")}
    if transformation is not None:
        headers["transformation"] = transformation
    assert c.receipt("SUBSCRIBE", headers).command == "RECEIPT"
    return name


def ask(c, destination, reply_to, **headers):
    """A statistics request ending with the empty map; -> the reply MESSAGEs before it."""
    h = {"destination": destination, "reply-to": reply_to, END: "true"}
    h.update(headers)
    assert c.receipt("SEND", h).command == "RECEIPT"
    replies = []
    while True:
        frame = c.recv_command("MESSAGE")
        if is_end(frame):
            return replies
        replies.append(frame)


def stats_of(c, name, kind="queue", **headers):
    """The statistics of one destination as a dict (through jms-map-json)."""
    replies = ask(c, "/%s/%s.%s" % (kind, STATS, name), reply_queue(c), **headers)
    assert len(replies) == 1, replies
    return mapmessage.parse_json(replies[0].body)


def send_many(c, destination, n, **headers):
    for i in range(n):
        h = {"destination": destination, "persistent": "true"}
        h.update(headers)
        assert c.receipt("SEND", h, BODY).command == "RECEIPT"


# -- statistics over STOMP -----------------------------------------------------------------

def test_queue_statistics_after_sends_and_acks(raw):
    c = raw()
    name = unique("stats")
    send_many(c, "/queue/" + name, 5)
    c.receipt("SUBSCRIBE", {"destination": "/queue/" + name, "id": "c", "ack": "client-individual"})
    got = [c.recv_command("MESSAGE") for _ in range(5)]
    for m in got[:2]:
        assert c.receipt("ACK", {"id": m.headers["ack"]}).command == "RECEIPT"
    reply_to = reply_queue(c)
    replies = ask(c, "/queue/%s.%s" % (STATS, name), reply_to, **{"correlation-id": "corr-7"})
    assert len(replies) == 1
    reply = replies[0]
    assert reply.headers["correlation-id"] == "corr-7"
    assert reply.headers["type"] == "Advisory"
    assert reply.headers["transformation"] == "jms-map-json"
    assert reply.headers["destination"] == reply_to
    assert "persistent" not in reply.headers and "reply-to" not in reply.headers
    stats = mapmessage.parse_json(reply.body)
    assert set(stats) == set(DESTINATION_KEYS)
    assert {k: stats[k] for k in ("size", "enqueueCount", "dequeueCount", "dispatchCount",
                                  "inflightCount", "expiredCount", "consumerCount",
                                  "producerCount", "messagesCached")} == {
        "size": 3, "enqueueCount": 5, "dequeueCount": 2, "dispatchCount": 5, "inflightCount": 3,
        "expiredCount": 0, "consumerCount": 1, "producerCount": 0, "messagesCached": 0}
    assert stats["destinationName"] == "queue://" + name
    assert stats["brokerName"] == "localhost"
    assert stats["brokerId"].startswith("ID:")
    assert stats["averageMessageSize"] == SIZE
    assert stats["memoryUsage"] == 3 * SIZE  # the three in flight
    assert stats["memoryLimit"] == 0 and stats["memoryPercentUsage"] == 0
    assert 0 <= stats["minEnqueueTime"] <= stats["averageEnqueueTime"] <= stats["maxEnqueueTime"]


def test_request_to_the_end_marker_name_and_first_message_timestamp(raw):
    c = raw()
    name = unique("first")
    send_many(c, "/queue/" + name, 2, timestamp="1234567890123")
    # ActiveMQ also reads the end marker from the name; the dot before it is a separator
    stats = stats_of(c, name, **{"ActiveMQ.Statistics.Destination.Include.First.Message."
                                 "Timestamp": "true"})
    assert stats["firstMessageTimestamp"] == 1234567890123 and stats["size"] == 2
    reply_to = reply_queue(c)
    c.receipt("SEND", {"destination": "/queue/%s.%s.%s" % (STATS, name, END),
                       "reply-to": reply_to})
    first, end = c.recv_command("MESSAGE"), c.recv_command("MESSAGE")
    assert mapmessage.parse_json(first.body)["destinationName"] == "queue://" + name
    assert "firstMessageTimestamp" not in mapmessage.parse_json(first.body)
    assert end.body == b'{"map":""}'


def test_wildcards_match_several_queues(raw):
    c = raw()
    prefix = unique("wild")
    for suffix in ("a", "b", "c.d"):
        send_many(c, "/queue/%s.%s" % (prefix, suffix), 1)
    send_many(c, "/queue/%s-other" % prefix, 1)
    reply_to = reply_queue(c)
    one_level = ask(c, "/queue/%s.%s.*" % (STATS, prefix), reply_to)
    names = [mapmessage.parse_json(r.body)["destinationName"] for r in one_level]
    assert names == ["queue://%s.a" % prefix, "queue://%s.b" % prefix]
    every = ask(c, "/queue/%s.%s.>" % (STATS, prefix), reply_to)
    names = [mapmessage.parse_json(r.body)["destinationName"] for r in every]
    assert names == ["queue://%s.%s" % (prefix, s) for s in ("a", "b", "c.d")]
    # no match: just the end marker, and nothing is created by asking
    assert ask(c, "/queue/%s.%s.nothing" % (STATS, prefix), reply_to) == []
    assert ask(c, "/queue/%s.%s.nothing" % (STATS, prefix), reply_to) == []


def test_topic_statistics_and_the_request_kind_chooses(raw):
    c = raw()
    topic = unique("topic")
    c.receipt("SUBSCRIBE", {"destination": "/topic/" + topic, "id": "t", "ack": "client-individual"})
    for _ in range(3):
        assert c.receipt("SEND", {"destination": "/topic/" + topic}, BODY).command == "RECEIPT"
    got = [c.recv_command("MESSAGE") for _ in range(3)]
    assert c.receipt("ACK", {"id": got[0].headers["ack"]}).command == "RECEIPT"
    stats = stats_of(c, topic, kind="topic")
    assert stats["destinationName"] == "topic://" + topic
    assert {k: stats[k] for k in ("enqueueCount", "dispatchCount", "dequeueCount",
                                  "inflightCount", "consumerCount", "size")} == {
        "enqueueCount": 3, "dispatchCount": 3, "dequeueCount": 1, "inflightCount": 2,
        "consumerCount": 1, "size": 2}
    assert stats["averageMessageSize"] == SIZE
    # as in ActiveMQ, a request sent to a queue looks at queues only
    assert ask(c, "/queue/%s.%s" % (STATS, topic), reply_queue(c)) == []


def test_renderings_per_transformation(raw):
    c = raw()
    name = unique("render")
    send_many(c, "/queue/" + name, 2)
    bodies = {}
    for transformation in ("jms-map-json", "jms-map-xml", None, "jms-json", "jms-xml",
                           "jms-object-json", "JMS-MAP-JSON"):
        reply_to = reply_queue(c, transformation)
        c.receipt("SEND", {"destination": "/queue/%s.%s" % (STATS, name), "reply-to": reply_to})
        reply = c.recv_command("MESSAGE")
        bodies[transformation] = (reply.headers["transformation"], reply.body)
    # as ActiveMQ 5.17: no transformation means XML; jms-json/jms-xml become the map kinds
    assert bodies[None][0] == "jms-map-xml"
    assert bodies["jms-json"][0] == "jms-map-json" and bodies["jms-xml"][0] == "jms-map-xml"
    assert bodies["jms-object-json"][0] == "jms-object-json"
    assert bodies["JMS-MAP-JSON"] == ("JMS-MAP-JSON", b"")  # unknown (case matters): no body
    as_json = mapmessage.parse_json(bodies["jms-map-json"][1])
    as_xml = parse_xml(bodies["jms-map-xml"][1])
    assert as_json["size"] == as_xml["size"] == 2
    assert as_json["enqueueCount"] == as_xml["enqueueCount"] == 2
    assert as_xml["destinationName"] == as_json["destinationName"] == "queue://" + name
    assert isinstance(as_xml["averageEnqueueTime"], float)
    assert keys_in_order(bodies["jms-map-xml"][1]) == DESTINATION_KEYS
    body = json.loads(bodies["jms-map-json"][1])
    assert {"string": "size", "long": 2} in body["map"]["entry"]
    assert {"string": ["destinationName", "queue://" + name]} in body["map"]["entry"]
    assert b'"queue:\\/\\/' in bodies["jms-map-json"][1]
    for t in (None, "jms-map-xml", "jms-xml"):
        assert bodies[t][1] == bodies["jms-map-xml"][1]
    for t in ("jms-json", "jms-object-json"):
        assert bodies[t][1] == bodies["jms-map-json"][1]


def test_statistics_errors_leave_the_connection_usable(raw):
    c = raw()
    err = c.receipt("SEND", {"destination": "/queue/ActiveMQ.Statistics.Broker"})
    assert err.command == "ERROR"
    assert "needs a reply-to header" in err.headers["message"]
    err = c.receipt("SEND", {"destination": "/topic/%s.x" % STATS, "reply-to": "nowhere"})
    assert err.command == "ERROR" and "is not a destination" in err.headers["message"]
    err = c.receipt("SEND", {"destination": "/queue/%s.x" % STATS,
                             "reply-to": "/queue/ActiveMQ.Statistics.Broker"})
    assert err.command == "ERROR" and "itself a management destination" in err.headers["message"]
    err = c.receipt("SEND", {"destination": "/queue/ActiveMQ.Statistics.Subscription",
                             "reply-to": "/queue/r"})
    assert err.command == "ERROR" and "not supported" in err.headers["message"]
    # without a receipt the ERROR still comes
    c.send("SEND", {"destination": "/queue/ActiveMQ.Statistics.Broker"})
    assert "needs a reply-to header" in c.recv_command("ERROR").headers["message"]
    # still connected, and the failed requests created no queue
    q = unique("after")
    assert c.receipt("SEND", {"destination": "/queue/" + q}, b"x").command == "RECEIPT"
    assert ask(c, "/queue/%s.ActiveMQ.Statistics.>" % STATS, reply_queue(c)) == []
    assert stats_of(c, q)["size"] == 1


def test_requests_in_a_transaction_run_at_commit(raw):
    c = raw()
    reply_to = reply_queue(c)
    c.receipt("BEGIN", {"transaction": "t1"})
    c.receipt("SEND", {"destination": "/queue/ActiveMQ.Statistics.Broker", "reply-to": reply_to,
                       "transaction": "t1"})
    assert c.maybe_recv(0.2) is None
    assert c.receipt("COMMIT", {"transaction": "t1"}).command == "RECEIPT"
    assert "brokerName" in mapmessage.parse_json(c.recv_command("MESSAGE").body)
    missing = unique("missing")
    c.receipt("BEGIN", {"transaction": "t2"})
    c.receipt("SEND", {"destination": "/queue/%s.%s" % (PURGE, missing), "transaction": "t2"})
    err = c.receipt("COMMIT", {"transaction": "t2"})
    assert err.command == "ERROR" and err.headers["message"] == "no such queue: /queue/" + missing
    assert c.receipt("SEND", {"destination": "/queue/" + missing}, b"x").command == "RECEIPT"


def test_broker_statistics_on_a_fresh_broker(tmp_path):
    proc = BrokerProcess("--broker-name=stats-broker", directory=str(tmp_path)).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        send_many(c, "/queue/one", 3)
        reply_to = reply_queue(c)
        c.receipt("SEND", {"destination": "/topic/ActiveMQ.Statistics.Broker",
                           "reply-to": reply_to, "correlation-id": "b-1"})
        reply = c.recv_command("MESSAGE")
        assert reply.headers["correlation-id"] == "b-1"
        stats = mapmessage.parse_json(reply.body)
        assert keys_in_order(mapmessage.to_xml(stats)) == BROKER_KEYS
        assert stats["brokerName"] == "stats-broker"
        assert stats["stomp"] == "stomp://127.0.0.1:%d" % proc.port
        # ActiveMQ names its OpenWire connector's URL (tcp://...) under "openwire"
        assert stats["openwire"] == "tcp://127.0.0.1:%d" % proc.openwire_port
        assert stats["ssl"] == stats["stomp+ssl"] == stats["vm"] == ""
        assert stats["dataDirectory"] == os.path.realpath(proc.store_dir)
        assert {k: stats[k] for k in ("size", "enqueueCount", "dequeueCount", "dispatchCount",
                                      "inflightCount", "consumerCount", "messagesCached")} == {
            "size": 3, "enqueueCount": 3, "dequeueCount": 0, "dispatchCount": 0,
            "inflightCount": 0, "consumerCount": 1, "messagesCached": 3}
        assert stats["averageMessageSize"] == SIZE and stats["memoryUsage"] == 3 * SIZE
        assert stats["storeUsage"] > 0
        # the first reply was delivered (auto ack) before the second request is answered
        c.receipt("SEND", {"destination": "/queue/ActiveMQ.Statistics.Broker",
                           "reply-to": reply_to})
        stats = mapmessage.parse_json(c.recv_command("MESSAGE").body)
        assert (stats["enqueueCount"], stats["dispatchCount"], stats["dequeueCount"]) == (4, 1, 1)
        c.receipt("SEND", {"destination": "/queue/ActiveMQ.Statistics.Broker",
                           "reply-to": reply_to, "ActiveMQ.Statistics.Broker.Reset": "true"})
        stats = mapmessage.parse_json(c.recv_command("MESSAGE").body)
        assert (stats["enqueueCount"], stats["dispatchCount"], stats["size"]) == (0, 0, 3)
    finally:
        proc.kill()


# -- purge ---------------------------------------------------------------------------------

def test_purge_removes_what_is_not_in_flight(raw):
    c = raw()
    name = unique("purge")
    send_many(c, "/queue/" + name, 4)
    for i in range(2):
        assert c.receipt("SEND", {"destination": "/queue/" + name}, b"np").command == "RECEIPT"
    consumer = raw()
    consumer.receipt("SUBSCRIBE", {"destination": "/queue/" + name, "id": "c",
                                   "ack": "client-individual", "activemq.prefetchSize": "2"})
    held = [consumer.recv_command("MESSAGE") for _ in range(2)]
    reply_to = reply_queue(c, None)
    answer = c.receipt("SEND", {"destination": "/queue/%s.%s" % (PURGE, name),
                                "reply-to": reply_to, "correlation-id": "p-1"})
    assert answer.command == "RECEIPT"
    reply = c.recv_command("MESSAGE")  # (the reply may come before the RECEIPT: it waited)
    assert reply.headers["purged"] == "4"
    assert reply.headers["purged-destination"] == "/queue/" + name
    assert reply.headers["correlation-id"] == "p-1"
    assert parse_xml(reply.body) == {"queue://" + name: 4}
    stats = stats_of(c, name)
    assert (stats["size"], stats["inflightCount"], stats["dequeueCount"]) == (2, 2, 4)
    # the two in flight come back when their consumer goes, and nothing else
    consumer.close()
    again = raw()
    again.receipt("SUBSCRIBE", {"destination": "/queue/" + name, "id": "c2", "ack": "client-individual"})
    back = [again.recv_command("MESSAGE") for _ in range(2)]
    assert sorted(m.headers["message-id"] for m in back) == sorted(m.headers["message-id"] for m in held)
    assert again.maybe_recv(0.3) is None


def test_purge_wildcard_and_errors(raw):
    c = raw()
    prefix = unique("pw")
    send_many(c, "/queue/%s.a" % prefix, 2)
    send_many(c, "/queue/%s.b" % prefix, 1)
    reply_to = reply_queue(c)
    assert c.receipt("SEND", {"destination": "/topic/%s.%s.*" % (PURGE, prefix),
                              "reply-to": reply_to}).command == "RECEIPT"
    reply = c.recv_command("MESSAGE")
    assert reply.headers["purged"] == "3"
    assert reply.headers["purged-destination"] == "/queue/%s.a,/queue/%s.b" % (prefix, prefix)
    assert mapmessage.parse_json(reply.body) == {"queue://%s.a" % prefix: 2,
                                                 "queue://%s.b" % prefix: 1}
    # no reply-to: purged all the same
    send_many(c, "/queue/%s.a" % prefix, 1)
    assert c.receipt("SEND", {"destination": "/queue/%s.%s.a" % (PURGE, prefix)}).command == "RECEIPT"
    assert stats_of(c, prefix + ".a")["size"] == 0
    missing = unique("missing")
    err = c.receipt("SEND", {"destination": "/queue/%s.%s" % (PURGE, missing)})
    assert err.command == "ERROR" and err.headers["message"] == "no such queue: /queue/" + missing
    err = c.receipt("SEND", {"destination": "/queue/%s.%s.>" % (PURGE, missing)})
    assert err.command == "ERROR" and "no queue matches /queue/%s.>" % missing in err.headers["message"]
    err = c.receipt("SEND", {"destination": "/queue/" + PURGE})
    assert err.command == "ERROR" and "name the queue to purge" in err.headers["message"]
    assert ask(c, "/queue/%s.%s" % (STATS, missing), reply_to) == []  # not created
    assert c.receipt("SEND", {"destination": "/queue/" + missing}, b"x").command == "RECEIPT"


def test_purge_of_paged_persistent_messages_survives_a_crash(tmp_path):
    proc = BrokerProcess("--page-size=5", directory=str(tmp_path)).start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        for i in range(20):
            c.send("SEND", {"destination": "/queue/q", "persistent": "true", "receipt": str(i)},
                   b"old-%02d" % i)
        for i in range(20):
            assert c.recv_command("RECEIPT").headers["receipt-id"] == str(i)
        c.receipt("SUBSCRIBE", {"destination": "/queue/q", "id": "c", "ack": "client-individual",
                                "activemq.prefetchSize": "3"})
        held = [c.recv_command("MESSAGE").body for _ in range(3)]
        assert held == [b"old-00", b"old-01", b"old-02"]
        assert c.receipt("SEND", {"destination": "/queue/%s.q" % PURGE}).command == "RECEIPT"
        assert c.receipt("SEND", {"destination": "/queue/q", "persistent": "true"},
                         b"new").command == "RECEIPT"
        proc.kill()  # SIGKILL: only what was durable at the RECEIPTs is there
        proc = proc.restarted()
        proc.start()
        c = RawStomp(proc.port)
        c.connect()
        c.receipt("SUBSCRIBE", {"destination": "/queue/q", "id": "c", "ack": "client-individual"})
        got = [c.recv_command("MESSAGE").body for _ in range(4)]
        assert got == [b"old-00", b"old-01", b"old-02", b"new"]
        assert c.maybe_recv(0.3) is None
    finally:
        proc.kill()


# -- purge against the paging code, in process ---------------------------------------------

def msg(i):
    return Message("ID:m-%d" % i, Destination(QUEUE, "q"), b"x" * 10, persistent=True)


@defer.inlineCallbacks
def paged_queue(tmp_path):
    """A journal-backed broker with 50 persistent messages on a queue of window 10, and a
    client-individual consumer of prefetch 10 attached."""
    store = JournalAdapter(str(tmp_path))
    yield store.open()
    broker = Broker(store, page_size=10, expiry_check_interval=0)
    yield broker.start()
    yield defer.gatherResults([broker.send(msg(i)) for i in range(50)])
    queue = broker.queues[Destination(QUEUE, "q")]
    session = Session()
    consumer = Consumer(session, "1", [Destination(QUEUE, "q")], ack_mode=CLIENT_INDIVIDUAL,
                        prefetch=10)
    broker.subscribe(consumer)
    return store, broker, queue, session, consumer


@defer.inlineCallbacks
def drain(broker, session, consumer, count):
    """Ids of the next `count` deliveries, acking each batch to get the next."""
    seen = []
    while True:
        batch, session.got = session.got, []
        seen += [m.message_id for m, _ in batch]
        if len(seen) >= count:
            return seen
        yield broker.ack(consumer, [a for _, a in batch])
        yield until(lambda: session.got)


@pytest_twisted.inlineCallbacks
def test_purge_while_a_refill_is_read_and_messages_arrive(tmp_path):
    # subscribing takes the window: a refill of the paged ones starts
    store, broker, queue, session, consumer = yield paged_queue(tmp_path)
    assert queue._loading and len(session.got) == 10
    purged = broker.send(Message("ID:purge", Destination(QUEUE, PURGE + ".q")))
    arriving = [broker.send(msg(i)) for i in range(50, 80)]  # while the store is read
    yield defer.gatherResults(arriving)
    yield purged
    assert queue.dequeue_count == 40  # the 40 that were paged out; the 10 in flight stay
    seen = yield drain(broker, session, consumer, 40)
    assert seen == ["ID:m-%d" % i for i in list(range(10)) + list(range(50, 80))]
    assert queue.size() == 10 and store.queue_store("q").count() == 10
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_no_refill_while_a_purge_reads_the_store(tmp_path):
    store, broker, queue, session, consumer = yield paged_queue(tmp_path)
    yield until(lambda: not queue._loading)  # 10 in flight, 10 pending, 30 paged out
    first, session.got = session.got, []
    purged = broker.send(Message("ID:purge", Destination(QUEUE, PURGE + ".q")))
    arriving = [broker.send(msg(i)) for i in range(50, 80)]  # 10 pending, 20 paged out
    # the consumer takes the 10 pending: a refill now would read the purged ones back
    acked = broker.ack(consumer, [a for _, a in first])
    yield defer.gatherResults(arriving + [acked])
    assert (yield purged) is None and queue.dequeue_count == 50
    seen = yield drain(broker, session, consumer, 30)
    assert seen == ["ID:m-%d" % i for i in range(50, 80)]
    yield store.close()


# -- the renderer, against ActiveMQ's own bytes --------------------------------------------

SAMPLE = {"brokerName": "b1", "destinationName": "queue://a/b", "size": 2,
          "memoryPercentUsage": Int32(0), "averageEnqueueTime": 1.25, "maxEnqueueTime": 31.0,
          "tiny": 1.25e-5, "numeric": "12", "flag": "true", "yes": True,
          "esc": "</x\"&'\n\tz"}
SAMPLE_JSON = (
    b'{"map":{"entry":[{"string":["flag",true]},{"string":"size","long":2},'
    b'{"string":["esc","<\\/x\\"&\'\\n\\tz"]},{"string":"tiny","double":"1.25E-5"},'
    b'{"string":"yes","boolean":true},{"string":["destinationName","queue:\\/\\/a\\/b"]},'
    b'{"string":"memoryPercentUsage","int":0},{"string":"averageEnqueueTime","double":1.25},'
    b'{"string":["numeric",12]},{"string":["brokerName","b1"]},'
    b'{"string":"maxEnqueueTime","double":31}]}}')
SAMPLE_XML_ENTRIES = [
    ("flag", "string", "true"), ("size", "long", "2"), ("esc", "string", "&lt;/x&quot;&amp;&apos;\n\tz"),
    ("tiny", "double", "1.25E-5"), ("yes", "boolean", "true"),
    ("destinationName", "string", "queue://a/b"), ("memoryPercentUsage", "int", "0"),
    ("averageEnqueueTime", "double", "1.25"), ("numeric", "string", "12"),
    ("brokerName", "string", "b1"), ("maxEnqueueTime", "double", "31.0")]


def test_renderer_writes_activemq_bytes():
    assert mapmessage.to_json(SAMPLE) == SAMPLE_JSON
    xml = "<map>\n" + "".join(
        "  <entry>\n    <string>%s</string>\n    <%s>%s</%s>\n  </entry>\n" % (k, t, v, t)
        for k, t, v in SAMPLE_XML_ENTRIES) + "</map>"
    assert mapmessage.to_xml(SAMPLE) == xml.encode()
    assert mapmessage.to_json({"a": 1}) == b'{"map":{"entry":{"string":"a","long":1}}}'
    assert mapmessage.to_json({"a": "b/c"}) == b'{"map":{"entry":{"string":["a","b\\/c"]}}}'
    assert mapmessage.to_json({"/x": True}) == b'{"map":{"entry":{"string":"/x","boolean":true}}}'
    assert mapmessage.to_json({}) == b'{"map":""}' and mapmessage.to_xml({}) == b"<map/>"
    assert mapmessage.to_xml({"x": "a\x08\r\x7f\x85"}) == (
        b"<map>\n  <entry>\n    <string>x</string>\n    <string>a&#x8;&#xd;&#x7f;&#x85;"
        b"</string>\n  </entry>\n</map>")
    assert mapmessage.parse_json(SAMPLE_JSON)["size"] == 2


@pytest.mark.parametrize("value, text", [
    (31.0, "31.0"), (0.001, "0.001"), (1e7, "1.0E7"), (9999999.0, "9999999.0"),
    (1.25e-5, "1.25E-5"), (123456789.0, "1.23456789E8"), (-0.0, "-0.0"), (0.1, "0.1"),
    (11.454545454545455, "11.454545454545455"), (float("inf"), "Infinity")])
def test_java_double_text(value, text):
    assert mapmessage.java_double(value) == text
