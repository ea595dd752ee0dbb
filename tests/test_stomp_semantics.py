"""Broker semantics over STOMP: topics, transactions, durable and temporary destinations,
wildcards, composites, browsing, prefetch, exclusivity, groups, selectors, expiry."""

import time

import pytest

from pybrokerd.protocols.stomp.codec import serialize
from support import unique


def q():
    return "/queue/" + unique()


def t():
    return "/topic/" + unique()


def sub(c, dest, sid="1", **extra):
    frame = c.receipt("SUBSCRIBE", dict({"destination": dest, "id": sid}, **extra))
    assert frame.command == "RECEIPT", frame
    return frame


def bodies(c, n, timeout=5.0):
    return [c.recv_command("MESSAGE", timeout).body for _ in range(n)]


def nothing_more(c, timeout=0.3):
    frame = c.maybe_recv(timeout)
    assert frame is None, frame


# -- topics --------------------------------------------------------------------------------

def test_topic_fans_out_to_every_subscriber(raw):
    dest = t()
    subs = [raw() for _ in range(3)]
    for c in subs:
        sub(c, dest)
    raw().receipt("SEND", {"destination": dest}, b"all")
    for c in subs:
        assert bodies(c, 1) == [b"all"]


def test_non_durable_topic_keeps_nothing(raw):
    dest = t()
    p = raw()
    p.receipt("SEND", {"destination": dest, "persistent": "true"}, b"lost")
    c = raw()
    sub(c, dest)
    p.receipt("SEND", {"destination": dest}, b"live")
    assert bodies(c, 1) == [b"live"]  # the subscription works, and "lost" was not kept
    nothing_more(c)


def test_topic_wildcards(raw):
    base = unique("w")
    c_all, c_one = raw(), raw()
    sub(c_all, "/topic/%s.>" % base)
    sub(c_one, "/topic/%s.*" % base)
    p = raw()
    for name in (base, base + ".b", base + ".b.c"):
        p.receipt("SEND", {"destination": "/topic/" + name}, name.encode())
    assert bodies(c_all, 3) == [base.encode(), (base + ".b").encode(), (base + ".b.c").encode()]
    assert bodies(c_one, 1) == [(base + ".b").encode()]
    nothing_more(c_one)


def test_queue_wildcard_subscription(raw):
    base = unique("qw")
    c = raw()
    p = raw()
    p.receipt("SEND", {"destination": "/queue/%s.before" % base}, b"1")
    sub(c, "/queue/%s.*" % base)
    p.receipt("SEND", {"destination": "/queue/%s.after" % base}, b"2")
    p.receipt("SEND", {"destination": "/queue/%s.x.y" % base}, b"no")
    assert sorted(bodies(c, 2)) == [b"1", b"2"]
    nothing_more(c)


def test_composite_send_and_subscribe(raw):
    a, b, topic = q(), q(), t()
    ct = raw()
    sub(ct, topic)
    raw().receipt("SEND", {"destination": "%s,%s,%s" % (a, b, topic)}, b"c")
    assert bodies(ct, 1) == [b"c"]
    c = raw()
    sub(c, "%s,%s" % (a, b))
    got = [c.recv_command("MESSAGE") for _ in range(2)]
    assert sorted(m.headers["destination"] for m in got) == sorted([a, b])
    assert got[0].headers["message-id"] == got[1].headers["message-id"]
    # as ActiveMQ: the composite it was sent to, in ActiveMQ's notation
    composite = "%s,queue://%s,topic://%s" % (a, b[len("/queue/"):], topic[len("/topic/"):])
    assert [m.headers["original-destination"] for m in got] == [composite, composite]


def test_a_member_of_a_composite_without_prefix_is_a_queue(raw):
    """As ActiveMQ 5.17: "/topic/a,b" is the topic a and the queue b (not the topic b)."""
    topic, name = t(), unique("bare")
    on_topic, on_queue, on_other_topic = raw(), raw(), raw()
    sub(on_topic, topic)
    sub(on_queue, "/queue/" + name)
    sub(on_other_topic, "/topic/" + name)
    raw().receipt("SEND", {"destination": "%s,%s" % (topic, name)}, b"c")
    assert bodies(on_topic, 1) == bodies(on_queue, 1) == [b"c"]
    nothing_more(on_other_topic)


def test_empty_members_of_a_composite_are_skipped(raw):
    """As ActiveMQ: "/queue/a," is /queue/a."""
    dest = q()
    c = raw()
    sub(c, dest)
    assert raw().receipt("SEND", {"destination": dest + ","}, b"x").command == "RECEIPT"
    assert bodies(c, 1) == [b"x"]


def test_a_name_without_prefix_is_a_queue_of_that_name(raw):
    """As ActiveMQ's fallback: "name" and "/foo/name" are queues named exactly so."""
    bare, slashed = unique("bare"), "/foo/" + unique()
    c = raw()
    sub(c, "/queue/" + bare, "1")
    sub(c, slashed, "2")  # a SUBSCRIBE takes the same fallback
    p = raw()
    assert p.receipt("SEND", {"destination": bare}, b"b").command == "RECEIPT"
    assert p.receipt("SEND", {"destination": "/queue/" + slashed}, b"s").command == "RECEIPT"
    got = {m.headers["subscription"]: m for m in (c.recv_command("MESSAGE") for _ in range(2))}
    assert got["1"].body == b"b" and got["1"].headers["destination"] == "/queue/" + bare
    assert got["2"].body == b"s" and got["2"].headers["destination"] == "/queue/" + slashed


def test_a_reply_to_without_prefix_stays_a_plain_string(raw):
    dest = q()
    c = raw()
    sub(c, dest)
    raw().receipt("SEND", {"destination": dest, "reply-to": "answers"}, b"x")
    assert c.recv_command("MESSAGE").headers["reply-to"] == "answers"


def test_virtual_topic_copies_to_each_consumer_queue(raw):
    """ActiveMQ's default virtual topics: /topic/VirtualTopic.X also feeds every existing
    queue Consumer.<name>.VirtualTopic.X, where the message waits like any queued one."""
    topic = "VirtualTopic." + unique()
    a1, a2, b, plain = raw(), raw(), raw(), raw()
    sub(a1, "/queue/Consumer.A." + topic, ack="client-individual")
    sub(a2, "/queue/Consumer.A." + topic, ack="client-individual")
    sub(b, "/queue/Consumer.B." + topic, ack="client-individual",
        **{"activemq.prefetchSize": "1"})
    sub(plain, "/topic/" + topic)
    p = raw()
    for i in range(4):
        p.receipt("SEND", {"destination": "/topic/" + topic, "persistent": "true"}, b"%d" % i)
    # the topic's own subscriber gets all four; group A shares them; B alone gets all four
    assert bodies(plain, 4) == [b"0", b"1", b"2", b"3"]
    shared = [a1.maybe_recv(1.0) for _ in range(2)] + [a2.maybe_recv(1.0) for _ in range(2)]
    assert sorted(m.body for m in shared if m is not None) == [b"0", b"1", b"2", b"3"]
    m = b.recv_command("MESSAGE")
    assert m.body == b"0"
    assert m.headers["destination"] == "/queue/Consumer.B." + topic
    assert m.headers["original-destination"] == "/topic/" + topic
    b.send("ACK", {"id": m.headers["ack"]})
    assert bodies(b, 1) == [b"1"]
    # a queue that is not a consumer of it, and one made later, get nothing of the past
    late = raw()
    sub(late, "/queue/Consumer.C." + topic)
    nothing_more(late)


def test_no_local_subscriber_does_not_get_its_own_connections_messages(raw):
    dest = t()
    c, other = raw(), raw()
    sub(c, dest, "local", **{"activemq.noLocal": "true"})
    sub(c, dest, "all")
    c.receipt("SEND", {"destination": dest}, b"own")
    other.receipt("SEND", {"destination": dest}, b"theirs")
    got = sorted((m.headers["subscription"], m.body)
                 for m in (c.recv_command("MESSAGE") for _ in range(3)))
    assert got == [("all", b"own"), ("all", b"theirs"), ("local", b"theirs")]
    nothing_more(c)


def test_priority_out_of_range_is_clamped(raw):
    dest = q()
    p = raw()
    for priority in ("15", "-1"):
        assert p.receipt("SEND", {"destination": dest, "priority": priority},
                         priority.encode()).command == "RECEIPT"
    c = raw()
    sub(c, dest)
    got = {m.body: m.headers["priority"] for m in (c.recv_command("MESSAGE") for _ in range(2))}
    assert got == {b"15": "9", b"-1": "0"}


# -- transactions --------------------------------------------------------------------------

def test_transaction_commit_delivers_sends_together(raw):
    dest = q()
    c, p = raw(), raw()
    sub(c, dest)
    p.receipt("BEGIN", {"transaction": "tx"})
    p.receipt("SEND", {"destination": dest, "transaction": "tx"}, b"1")
    p.receipt("SEND", {"destination": dest, "transaction": "tx"}, b"2")
    nothing_more(c)
    assert p.receipt("COMMIT", {"transaction": "tx"}).command == "RECEIPT"
    assert bodies(c, 2) == [b"1", b"2"]


def test_transaction_abort_discards_sends(raw):
    dest = q()
    c, p = raw(), raw()
    sub(c, dest)
    p.receipt("BEGIN", {"transaction": "tx"})
    p.receipt("SEND", {"destination": dest, "transaction": "tx"}, b"1")
    p.receipt("ABORT", {"transaction": "tx"})
    p.receipt("SEND", {"destination": dest}, b"after")
    assert bodies(c, 1) == [b"after"]


def test_disconnect_aborts_open_transaction(raw):
    dest = q()
    c, p = raw(), raw()
    sub(c, dest)
    p.receipt("BEGIN", {"transaction": "tx"})
    p.receipt("SEND", {"destination": dest, "transaction": "tx"}, b"never")
    p.close()
    raw().receipt("SEND", {"destination": dest}, b"later")
    assert bodies(c, 1) == [b"later"]


def test_ack_in_aborted_transaction_can_be_acked_again(raw):
    dest = q()
    c = raw()
    sub(c, dest, ack="client-individual")
    raw().receipt("SEND", {"destination": dest}, b"m")
    m = c.recv_command("MESSAGE")
    c.receipt("BEGIN", {"transaction": "tx"})
    assert c.receipt("ACK", {"id": m.headers["ack"], "transaction": "tx"}).command == "RECEIPT"
    c.receipt("ABORT", {"transaction": "tx"})
    nothing_more(c)  # ActiveMQ: nothing is redelivered until the consumer goes away
    assert c.receipt("ACK", {"id": m.headers["ack"]}).command == "RECEIPT"
    c.close()
    d = raw()
    sub(d, dest)
    nothing_more(d)


def test_ack_in_committed_transaction_consumes(raw):
    dest = q()
    c = raw()
    sub(c, dest, ack="client")
    raw().receipt("SEND", {"destination": dest}, b"m")
    m = c.recv_command("MESSAGE")
    c.receipt("BEGIN", {"transaction": "tx"})
    c.receipt("ACK", {"id": m.headers["ack"], "transaction": "tx"})
    c.receipt("COMMIT", {"transaction": "tx"})
    c.close()
    d = raw()
    sub(d, dest)
    nothing_more(d)


def test_ack_in_transaction_rolled_back_by_disconnect_redelivers(raw):
    dest = q()
    c = raw()
    sub(c, dest, ack="client")
    raw().receipt("SEND", {"destination": dest}, b"m")
    m = c.recv_command("MESSAGE")
    c.receipt("BEGIN", {"transaction": "tx"})
    c.receipt("ACK", {"id": m.headers["ack"], "transaction": "tx"})
    c.close()
    d = raw()
    sub(d, dest)
    assert d.recv_command("MESSAGE").headers["redelivered"] == "true"


# -- durable subscriptions -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["s1", ""])  # as ActiveMQ, an empty name is a name too
def test_durable_subscription_receives_while_offline(raw, name):
    dest, cid = t(), unique("cid")
    c = raw(**{"client-id": cid})
    sub(c, dest, **{"activemq.subscriptionName": name})
    c.send("DISCONNECT", {"receipt": "bye"})
    c.recv_command("RECEIPT")
    c.wait_closed()
    p = raw()
    p.receipt("SEND", {"destination": dest, "persistent": "true"}, b"offline-1")
    p.receipt("SEND", {"destination": dest, "persistent": "true"}, b"offline-2")
    c = raw(**{"client-id": cid})
    sub(c, dest, **{"activemq.subscriptionName": name})
    assert bodies(c, 2) == [b"offline-1", b"offline-2"]


def test_durable_unsubscribe_needs_detach_first(raw):
    dest, cid = t(), unique("cid")
    c = raw(**{"client-id": cid})
    sub(c, dest, **{"activemq.subscriptionName": "s1"})
    frame = c.receipt("UNSUBSCRIBE", {"id": "1", "activemq.subscriptionName": "s1"})
    assert frame.command == "ERROR" and frame.headers["message"] == "Durable consumer is in use"
    assert c.receipt("UNSUBSCRIBE", {"id": "1"}).command == "RECEIPT"
    # ActiveMQ wants the id on every UNSUBSCRIBE from 1.1 on, the name alone is refused
    assert c.receipt("UNSUBSCRIBE", {"activemq.subscriptionName": "s1"}).command == "ERROR"
    assert c.receipt("UNSUBSCRIBE", {"id": "1", "activemq.subscriptionName": "s1"}).command == "RECEIPT"
    raw().receipt("SEND", {"destination": dest, "persistent": "true"}, b"gone")
    sub(c, dest, sid="2", **{"activemq.subscriptionName": "s1"})
    nothing_more(c)


def test_durable_subscription_on_queue_is_an_error(raw):
    frame = raw(**{"client-id": unique()}).receipt(
        "SUBSCRIBE", {"destination": q(), "id": "1", "activemq.subscriptionName": "s"})
    assert frame.command == "ERROR" and "Queue" in frame.headers["message"]


def test_durable_subscription_in_use_by_other_connection(raw):
    dest, cid = t(), unique("cid")
    c = raw(**{"client-id": cid})
    sub(c, dest, **{"activemq.subscriptionName": "s1"})
    frame = c.receipt("SUBSCRIBE", {"destination": dest, "id": "2", "activemq.subscriptionName": "s1"})
    assert frame.command == "ERROR" and "in use" in frame.headers["message"]


# -- temporary destinations ----------------------------------------------------------------

def test_temp_queue_request_reply(raw):
    requester, responder = raw(), raw()
    service = q()
    sub(requester, "/temp-queue/replies")
    sub(responder, service)
    requester.receipt("SEND", {"destination": service, "reply-to": "/temp-queue/replies"}, b"ping")
    req = responder.recv_command("MESSAGE")
    reply_to = req.headers["reply-to"]
    assert reply_to.startswith("/remote-temp-queue/")
    assert responder.receipt("SEND", {"destination": reply_to}, b"pong").command == "RECEIPT"
    rep = requester.recv_command("MESSAGE")
    assert rep.body == b"pong"
    assert rep.headers["destination"] == "/temp-queue/replies"
    requester.close()
    time.sleep(0)  # the broker notices the close asynchronously: poll below
    deadline = time.monotonic() + 5
    while True:
        frame = responder.receipt("SEND", {"destination": reply_to}, b"late")
        if frame.command == "ERROR" or time.monotonic() > deadline:
            break
    assert frame.command == "ERROR" and "temporary" in frame.headers["message"]


def test_temp_topic(raw):
    c = raw()
    sub(c, "/temp-topic/events")
    c.receipt("SEND", {"destination": "/temp-topic/events"}, b"e")
    m = c.recv_command("MESSAGE")
    assert m.headers["destination"] == "/temp-topic/events"


# -- browsing ------------------------------------------------------------------------------

def test_queue_browser_sees_without_consuming(raw):
    dest = q()
    p = raw()
    for body in (b"a", b"b"):
        p.receipt("SEND", {"destination": dest}, body)
    c = raw()
    sub(c, dest, sid="b", browser="true")
    frames = [c.recv_command("MESSAGE") for _ in range(3)]
    assert [f.body for f in frames[:2]] == [b"a", b"b"]
    assert frames[2].headers["browser"] == "end"
    assert frames[2].headers["subscription"] == "b"
    d = raw()
    sub(d, dest)
    assert bodies(d, 2) == [b"a", b"b"]


def test_a_browser_in_client_ack_mode_names_acks_that_change_nothing(raw):
    """As ActiveMQ: the MESSAGEs carry an ack; an ACK gets its RECEIPT and the message
    stays; a NACK is refused (the connection stays usable)."""
    dest = q()
    p = raw()
    for body in (b"a", b"b"):
        p.receipt("SEND", {"destination": dest}, body)
    c = raw()
    sub(c, dest, sid="b", browser="true", ack="client-individual")
    first, second, end = [c.recv_command("MESSAGE") for _ in range(3)]
    assert first.headers["ack"] and second.headers["ack"] and end.headers["browser"] == "end"
    assert c.receipt("ACK", {"id": first.headers["ack"]}).command == "RECEIPT"
    refused = c.receipt("NACK", {"id": second.headers["ack"]})
    assert refused.command == "ERROR" and "Browser" in refused.headers["message"]
    d = raw()
    sub(d, dest)
    assert bodies(d, 2) == [b"a", b"b"]


def test_browsing_is_refused_on_1_0(raw):
    c = raw(version="1.0")
    c.send("SUBSCRIBE", {"destination": q(), "browser": "true", "receipt": "r"})
    assert c.recv().command == "ERROR"


# -- dispatch: prefetch, round robin, exclusive, groups, priority --------------------------

def test_first_consumer_takes_backlog_with_default_prefetch(raw):
    dest = q()
    p = raw()
    for i in range(10):
        p.send("SEND", {"destination": dest}, b"%d" % i)
    p.receipt("BEGIN", {"transaction": "sync"})
    a, b = raw(), raw()
    sub(a, dest, ack="client")
    sub(b, dest, ack="client")
    assert len(bodies(a, 10)) == 10
    nothing_more(b)


def test_prefetch_one_round_robin(raw):
    dest = q()
    a, b = raw(), raw()
    sub(a, dest, ack="client-individual", **{"activemq.prefetchSize": "1"})
    sub(b, dest, ack="client-individual", **{"activemq.prefetchSize": "1"})
    p = raw()
    for i in range(4):
        p.receipt("SEND", {"destination": dest}, b"%d" % i)
    ma, mb = a.recv_command("MESSAGE"), b.recv_command("MESSAGE")
    assert {ma.body, mb.body} == {b"0", b"1"}
    nothing_more(a)
    a.receipt("ACK", {"id": ma.headers["ack"]})
    assert a.recv_command("MESSAGE").body == b"2"
    b.receipt("ACK", {"id": mb.headers["ack"]})
    assert b.recv_command("MESSAGE").body == b"3"


def test_round_robin_between_consumers(raw):
    dest = q()
    a, b = raw(), raw()
    sub(a, dest)
    sub(b, dest)
    p = raw()
    for i in range(6):
        p.receipt("SEND", {"destination": dest}, b"%d" % i)
    assert bodies(a, 3) == [b"0", b"2", b"4"]
    assert bodies(b, 3) == [b"1", b"3", b"5"]


def test_consumer_priority_highest_first_lower_ones_when_it_is_full(raw):
    """activemq.priority, as ActiveMQ: the highest-priority consumer with room gets the
    message; round robin among equals; a lower one only when the higher ones are full."""
    dest = q()
    lo, hi = raw(), raw()
    sub(lo, dest, ack="client-individual", **{"activemq.priority": "1", "activemq.prefetchSize": "1"})
    sub(hi, dest, ack="client-individual", **{"activemq.priority": "10", "activemq.prefetchSize": "1"})
    p = raw()
    p.receipt("SEND", {"destination": dest}, b"0")
    assert hi.recv_command("MESSAGE").body == b"0"
    p.receipt("SEND", {"destination": dest}, b"1")  # hi is full
    assert lo.recv_command("MESSAGE").body == b"1"
    nothing_more(hi)
    dest2 = q()
    a, b, top = raw(), raw(), raw()
    sub(a, dest2, **{"activemq.priority": "5"})
    sub(b, dest2, **{"activemq.priority": "5"})
    for i in range(2):
        p.receipt("SEND", {"destination": dest2}, b"%d" % i)
    assert bodies(a, 1) + bodies(b, 1) == [b"0", b"1"]  # equals: round robin
    sub(top, dest2, **{"activemq.priority": "9"})
    for i in range(2, 5):
        p.receipt("SEND", {"destination": dest2}, b"%d" % i)
    assert bodies(top, 3) == [b"2", b"3", b"4"]
    nothing_more(a)
    nothing_more(b)


def test_a_consumer_priority_that_is_not_a_byte_is_ignored(raw):
    dest = q()
    c = raw()
    sub(c, dest, **{"activemq.priority": "high"})  # as ActiveMQ: no error, default priority
    raw().receipt("SEND", {"destination": dest}, b"x")
    assert bodies(c, 1) == [b"x"]


def test_exclusive_consumer_gets_everything_then_fails_over(raw):
    dest = q()
    a, b = raw(), raw()
    sub(b, dest)
    sub(a, dest, **{"activemq.exclusive": "true"})
    p = raw()
    for i in range(4):
        p.receipt("SEND", {"destination": dest}, b"%d" % i)
    assert bodies(a, 4) == [b"0", b"1", b"2", b"3"]
    nothing_more(b)
    a.close()
    p.receipt("SEND", {"destination": dest}, b"after")
    assert bodies(b, 1) == [b"after"]


def test_message_groups_stick_to_one_consumer(raw):
    dest = q()
    a, b = raw(), raw()
    sub(a, dest)
    sub(b, dest)
    p = raw()
    for i in range(6):
        group = "g1" if i % 3 else "g2"
        p.receipt("SEND", {"destination": dest, "JMSXGroupID": group, "n": str(i)}, group.encode())
    frames_a = [f.body for f in iter(lambda: a.maybe_recv(0.5), None)]
    frames_b = [f.body for f in iter(lambda: b.maybe_recv(0.5), None)]
    assert sorted(frames_a + frames_b) == sorted([b"g2", b"g1", b"g1", b"g2", b"g1", b"g1"])
    assert len(set(frames_a)) == 1 and len(set(frames_b)) == 1


def test_priority_is_fifo_by_default(raw):
    dest = q()
    p = raw()
    p.receipt("SEND", {"destination": dest, "priority": "1"}, b"low")
    p.receipt("SEND", {"destination": dest, "priority": "9"}, b"high")
    c = raw()
    sub(c, dest)
    assert bodies(c, 2) == [b"low", b"high"]


# -- selectors -----------------------------------------------------------------------------

def test_selectors(raw):
    dest = q()
    heavy, red = raw(), raw()
    sub(heavy, dest, selector="weight > 5")
    sub(red, dest, selector="color = 'red' AND JMSPriority >= 4")
    p = raw()
    p.receipt("SEND", {"destination": dest, "weight": "10"}, b"heavy")
    p.receipt("SEND", {"destination": dest, "color": "red"}, b"red")
    p.receipt("SEND", {"destination": dest, "color": "blue"}, b"nobody")
    assert bodies(heavy, 1) == [b"heavy"]
    assert bodies(red, 1) == [b"red"]
    nothing_more(heavy)
    nothing_more(red)
    later = raw()
    sub(later, dest)
    assert bodies(later, 1) == [b"nobody"]


def test_topic_selector(raw):
    dest = t()
    c = raw()
    sub(c, dest, selector="n IN ('1', '3')")
    p = raw()
    for n in "1234":
        p.receipt("SEND", {"destination": dest, "n": n}, n.encode())
    assert bodies(c, 2) == [b"1", b"3"]


# -- expiry --------------------------------------------------------------------------------

def test_expired_messages_are_not_delivered_and_persistent_ones_go_to_dlq(raw):
    dest = q()
    p = raw()
    past = str(int(time.time() * 1000) - 1000)
    p.receipt("SEND", {"destination": dest, "expires": past, "persistent": "true",
                       "marker": dest}, b"old")
    p.receipt("SEND", {"destination": dest, "expires": past, "marker": dest}, b"old-np")
    p.receipt("SEND", {"destination": dest}, b"fresh")
    c = raw()
    sub(c, dest)
    assert bodies(c, 1) == [b"fresh"]
    nothing_more(c)
    dlq = raw()
    sub(dlq, "/queue/ActiveMQ.DLQ", selector="marker = '%s'" % dest)
    m = dlq.recv_command("MESSAGE")
    assert m.body == b"old" and m.headers["original-destination"] == dest
    assert m.headers["dlqDeliveryFailureCause"] == \
        "java.lang.Throwable: Message Expired. Expiration:" + past  # ActiveMQ's words
    nothing_more(dlq)


def test_message_expiring_while_queued(raw):
    dest = q()
    p = raw()
    expires = int(time.time() * 1000) + 300
    p.receipt("SEND", {"destination": dest, "expires": str(expires)}, b"x")
    while time.time() * 1000 <= expires:  # the condition is the wall clock itself
        time.sleep(0.05)
    p.receipt("SEND", {"destination": dest}, b"fresh")
    c = raw()
    sub(c, dest)
    assert bodies(c, 1) == [b"fresh"]  # the expired one before it was skipped
    nothing_more(c)


def test_a_browse_that_meets_an_expired_message_sends_it_to_the_dlq(raw):
    """As ActiveMQ: browsing expires what has expired (the periodic check is 30 s away)."""
    dest = q()
    p = raw()
    expires = int(time.time() * 1000) + 300
    p.receipt("SEND", {"destination": dest, "expires": str(expires), "persistent": "true",
                       "marker": dest}, b"stale")
    while time.time() * 1000 <= expires:  # the condition is the wall clock itself
        time.sleep(0.05)
    c = raw()
    sub(c, dest, sid="b", browser="true")
    assert c.recv_command("MESSAGE").headers["browser"] == "end"
    dlq = raw()
    sub(dlq, "/queue/ActiveMQ.DLQ", selector="marker = '%s'" % dest)
    assert bodies(dlq, 1) == [b"stale"]


def test_selectors_as_activemq_evaluates_them(raw):
    """String headers against number literals convert to the literal's type; a failed
    conversion is FALSE; JMSDestination is ActiveMQ's queue://name of where it was sent."""
    dest = q()
    p = raw()
    for i, weight in enumerate(["10", "10.0", "abc"]):
        p.receipt("SEND", {"destination": dest, "weight": weight, "persistent": "true"},
                  b"%d" % i)
    c = raw()
    sub(c, dest, sid="a", selector="weight > 5", ack="client-individual")
    assert bodies(c, 1) == [b"0"]
    sub(c, dest, sid="b", selector="weight > 5.0", ack="client-individual")
    assert bodies(c, 1) == [b"1"]
    sub(c, dest, sid="c", selector="weight <> 5", ack="client-individual")
    m = c.recv_command("MESSAGE")
    assert m.body == b"2"
    c.receipt("NACK", {"id": m.headers["ack"]})  # to the DLQ
    dlq = raw()
    sub(dlq, "/queue/ActiveMQ.DLQ", selector="JMSDestination = 'queue://%s'" % dest[7:])
    assert bodies(dlq, 1) == [b"2"]
    frame = raw().receipt("SUBSCRIBE", {"destination": dest, "id": "x", "selector": "s < 'b'"})
    assert frame.command == "ERROR" and "string literal" in frame.headers["message"]


def test_group_seq_minus_one_closes_the_group(raw):
    dest = q()
    a, b = raw(), raw()
    sub(a, dest)
    sub(b, dest)
    p = raw()
    p.receipt("SEND", {"destination": dest, "JMSXGroupID": "g"}, b"g1")
    p.receipt("SEND", {"destination": dest, "JMSXGroupID": "g", "JMSXGroupSeq": "-1"}, b"g2-last")
    p.receipt("SEND", {"destination": dest, "JMSXGroupID": "g"}, b"g3-new-owner")
    assert bodies(a, 2) == [b"g1", b"g2-last"]
    assert bodies(b, 1) == [b"g3-new-owner"]


def test_a_backlog_taken_by_one_consumer_keeps_its_selector_and_groups(raw):
    """Messages waiting before anyone reads: the one consumer gets those its selector takes,
    in order, and owns their group; what it left goes to the next consumer."""
    dest = q()
    p = raw()
    p.receipt("SEND", {"destination": dest, "JMSXGroupID": "g"}, b"g1")
    p.receipt("SEND", {"destination": dest, "color": "red"}, b"red")
    p.receipt("SEND", {"destination": dest, "JMSXGroupID": "g"}, b"g2")
    p.receipt("SEND", {"destination": dest}, b"plain")
    a = raw()
    sub(a, dest, sid="a", selector="color IS NULL")
    assert bodies(a, 3) == [b"g1", b"g2", b"plain"]
    b = raw()
    sub(b, dest, sid="b")
    assert bodies(b, 1) == [b"red"]
    p.receipt("SEND", {"destination": dest}, b"plain2")
    assert bodies(a, 1) == [b"plain2"]  # and b is next in turn
    for i in range(3):  # but the group is a's
        p.receipt("SEND", {"destination": dest, "JMSXGroupID": "g"}, b"g%d" % (i + 3))
    assert bodies(a, 3) == [b"g3", b"g4", b"g5"]
    nothing_more(b)


def test_receipt_comes_before_the_messages_its_frame_dispatches(raw):
    """As ActiveMQ: a COMMIT's (or own SEND's, or ACK's) RECEIPT, then the MESSAGEs it causes."""
    dest = q()
    c = raw()
    sub(c, dest, ack="client-individual", **{"activemq.prefetchSize": "1"})
    c.send("BEGIN", {"transaction": "t"})
    c.send("SEND", {"destination": dest, "transaction": "t"}, b"1")
    c.send("SEND", {"destination": dest, "transaction": "t"}, b"2")
    c.send("COMMIT", {"transaction": "t", "receipt": "commit"})
    assert c.recv().command == "RECEIPT"
    m = c.recv_command("MESSAGE")
    c.send("ACK", {"id": m.headers["ack"], "receipt": "ack"})
    assert c.recv().headers.get("receipt-id") == "ack"
    assert c.recv_command("MESSAGE").body == b"2"


def test_receipt_of_a_persistent_send_comes_before_the_message_it_dispatches(raw):
    """The RECEIPT waits for the disk; a MESSAGE to the sender's own subscription waits
    behind it (ActiveMQ's order), while other connections get it at once."""
    dest = q()
    c = raw()
    sub(c, dest)
    for i in range(3):
        c.send("SEND", {"destination": dest, "persistent": "true", "receipt": "r%d" % i},
               b"%d" % i)
    seen = [c.recv() for _ in range(6)]
    order = [f.headers.get("receipt-id") or f.body.decode() for f in seen]
    for i in range(3):
        assert order.index("r%d" % i) < order.index("%d" % i), order


def test_messages_keep_their_order_when_some_wait_behind_a_store_write(raw):
    """ACKing a persistent message (its remove goes to the store) dispatches the next one;
    ACKing a non-persistent one right after (nothing to store) dispatches the one after
    that: they still arrive in queue order."""
    dest = q()
    p = raw()
    for i, persistent in enumerate(["true", "false", "true", "false", "true"]):
        p.receipt("SEND", {"destination": dest, "persistent": persistent}, b"%d" % i)
    c = raw()
    sub(c, dest, ack="client-individual", **{"activemq.prefetchSize": "2"})
    first = [c.recv_command("MESSAGE") for _ in range(2)]
    assert [m.body for m in first] == [b"0", b"1"]
    c.send_raw(b"".join(serialize("ACK", {"id": m.headers["ack"]}, b"", "1.2") for m in first))
    assert bodies(c, 2) == [b"2", b"3"]


def test_a_disconnecting_connection_does_not_take_back_what_it_gives_back(raw):
    """Two client-ack subscriptions of one connection on one queue; it DISCONNECTs with a
    message unacked on the first: the next consumer gets it delivered for the second time
    (it did not bounce through the other subscription on the way out)."""
    dest = q()
    c = raw()
    sub(c, dest, sid="1", ack="client-individual")
    raw().receipt("SEND", {"destination": dest}, b"once")
    assert c.recv_command("MESSAGE").headers["subscription"] == "1"
    sub(c, dest, sid="2", ack="client-individual")
    c.receipt("DISCONNECT")
    d = raw()
    sub(d, dest, selector="JMSXDeliveryCount = 2")
    m = d.recv_command("MESSAGE")
    assert m.body == b"once" and m.headers["redelivered"] == "true"


def test_group_headers_are_not_echoed(raw):
    dest = q()
    c = raw()
    sub(c, dest)
    raw().receipt("SEND", {"destination": dest, "JMSXGroupID": "g", "JMSXGroupSeq": "3"}, b"x")
    h = c.recv_command("MESSAGE").headers
    assert "JMSXGroupID" not in h and "JMSXGroupSeq" not in h  # as ActiveMQ


def test_stomp_1_0_subscription_without_id_has_no_subscription_header(raw):
    dest = q()
    c = raw(version="1.0")
    c.send("SUBSCRIBE", {"destination": dest, "receipt": "s"})
    c.recv_command("RECEIPT")
    raw().receipt("SEND", {"destination": dest}, b"x")
    assert "subscription" not in c.recv_command("MESSAGE").headers


@pytest.mark.parametrize("dest", [q, t])
def test_sends_of_every_kind_written_together_arrive_in_the_order_sent(raw, dest):
    """Persistent sends without receipt that arrive together are stored as one write; the
    non-persistent, transacted and receipted sends among them still take their places."""
    name = dest()
    consumer = raw()
    sub(consumer, name)
    frames = [("SEND", {"destination": name, "persistent": "true"}, b"0"),
              ("SEND", {"destination": name, "persistent": "true"}, b"1"),
              ("SEND", {"destination": name}, b"2"),
              ("SEND", {"destination": name, "persistent": "true"}, b"3"),
              ("BEGIN", {"transaction": "t"}, b""),
              ("SEND", {"destination": name, "persistent": "true", "transaction": "t"}, b"4"),
              ("COMMIT", {"transaction": "t"}, b""),
              ("SEND", {"destination": name, "persistent": "true"}, b"5"),
              ("SEND", {"destination": name, "persistent": "true", "receipt": "r"}, b"6"),
              ("SEND", {"destination": name, "persistent": "true"}, b"7")]
    producer = raw()
    producer.send_raw(b"".join(serialize(c, h, b, "1.2") for c, h, b in frames))
    assert producer.recv_command("RECEIPT").headers["receipt-id"] == "r"
    assert bodies(consumer, 8) == [b"%d" % n for n in range(8)]
    nothing_more(consumer)


# -- lenient where ActiveMQ 5.17 is (checked against it side by side) -----------------------

def test_no_local_on_a_queue_leaves_its_own_messages_to_other_consumers(raw):
    """activemq.noLocal on a queue: the consumer is not given what its own connection sent;
    the message waits in the queue for another consumer (as ActiveMQ)."""
    dest = q()
    a = raw()
    sub(a, dest, "mine", **{"activemq.noLocal": "true"})
    assert a.receipt("SEND", {"destination": dest}, b"own").command == "RECEIPT"
    other = raw()
    assert other.receipt("SEND", {"destination": dest}, b"theirs").command == "RECEIPT"
    assert bodies(a, 1) == [b"theirs"]
    nothing_more(a)
    sub(other, dest)
    assert bodies(other, 1) == [b"own"]


def test_persistent_means_exactly_true(raw):
    """As ActiveMQ: persistent:True (or TRUE, or yes) is a non-persistent message."""
    dest = q()
    c = raw()
    sub(c, dest)
    for value in ("true", "True"):
        c.receipt("SEND", {"destination": dest, "persistent": value}, value.encode())
    first, second = (c.recv_command("MESSAGE") for _ in range(2))
    assert first.headers.get("persistent") == "true"
    assert "persistent" not in second.headers


@pytest.mark.parametrize("extra", [{"ack": "sometimes"}, {"ack": "Client"},
                                   {"activemq.prefetchSize": "lots"}])
def test_a_subscribe_with_a_value_activemq_ignores_still_subscribes(raw, extra):
    """ActiveMQ takes an ack mode it does not know as auto, and ignores a prefetch that is
    not a number: the SUBSCRIBE works (so does a client relying on it here)."""
    dest = q()
    c = raw()
    sub(c, dest, **extra)
    c.receipt("SEND", {"destination": dest}, b"one")
    m = c.recv_command("MESSAGE")
    assert m.body == b"one"
    if "ack" in extra:  # auto: nothing to acknowledge, and it does not come back
        assert "ack" not in m.headers
        c.receipt("UNSUBSCRIBE", {"id": "1"})
        sub(c, dest, "2")
        nothing_more(c)


def test_a_1_0_client_may_subscribe_twice_to_one_destination_without_id(raw):
    """As ActiveMQ: two consumers (a topic message reaches both); UNSUBSCRIBE by destination
    closes one at a time."""
    dest = t()
    c = raw(version="1.0")
    for _ in range(2):
        assert c.receipt("SUBSCRIBE", {"destination": dest}).command == "RECEIPT"
    raw().receipt("SEND", {"destination": dest}, b"m")
    assert bodies(c, 2) == [b"m", b"m"]
    for _ in range(2):
        assert c.receipt("UNSUBSCRIBE", {"destination": dest}).command == "RECEIPT"
    assert c.receipt("UNSUBSCRIBE", {"destination": dest}).command == "ERROR"
    raw().receipt("SEND", {"destination": dest}, b"after")
    nothing_more(c)
