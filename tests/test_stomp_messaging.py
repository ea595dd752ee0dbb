"""Sending and receiving: headers, bodies, ack modes, redelivery, NACK and the DLQ."""

import pytest

from conftest import send_with_receipt
from support import unique


def q():
    return "/queue/" + unique()


def test_stomp_py_round_trip(client):
    dest = q()
    conn = client()
    conn.subscribe(dest, id="s1", ack="auto")
    send_with_receipt(conn, dest, "hello", foo="bar")
    (msg,) = conn.collector.wait_messages(1)
    assert msg.body == "hello"
    assert msg.headers["destination"] == dest
    assert msg.headers["foo"] == "bar"
    assert msg.headers["subscription"] == "s1"
    assert msg.headers["message-id"].startswith("ID:")


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_every_version_round_trips(client, version):
    dest = q()
    conn = client(version)
    conn.subscribe(dest, id="s", ack="auto")
    send_with_receipt(conn, dest, "v" + version)
    assert conn.collector.wait_messages(1)[0].body == "v" + version


def test_standard_headers(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.receipt("SEND", {"destination": dest, "correlation-id": "c1", "type": "t1",
                       "reply-to": "/queue/replies", "priority": "9", "persistent": "true",
                       "expires": "0", "custom": "x y"}, b"body")
    m = c.recv_command("MESSAGE")
    h = m.headers
    assert h["correlation-id"] == "c1" and h["type"] == "t1"
    assert h["reply-to"] == "/queue/replies"
    assert h["priority"] == "9" and h["persistent"] == "true"
    assert h["expires"] == "0" and int(h["timestamp"]) > 0
    assert h["custom"] == "x y"
    assert h["subscription"] == "1"
    assert "ack" not in h  # as ActiveMQ: auto-ack subscriptions carry no ack id
    assert "content-length" not in h  # a text message: no content-length was sent


def test_headers_named_after_jms_fields_set_those_fields(raw):
    """As ActiveMQ's property setters: JMSPriority:7 is priority 7, and so on; the JMS
    names are not echoed as properties."""
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.receipt("SEND", {"destination": dest, "JMSPriority": "7", "JMSCorrelationID": "c1",
                       "JMSType": "t1", "JMSXDeliveryCount": "3", "JMSDeliveryMode": "2",
                       "JMSReplyTo": "/topic/answers"}, b"set")
    c.receipt("SEND", {"destination": dest, "JMSExpiration": "5"}, b"expired long ago")
    c.receipt("SEND", {"destination": dest}, b"last")
    m = c.recv_command("MESSAGE")
    h = m.headers
    assert m.body == b"set"
    assert h["priority"] == "7" and h["correlation-id"] == "c1" and h["type"] == "t1"
    assert h["redelivered"] == "true" and h["persistent"] == "true"
    assert h["reply-to"] == "/topic/answers"
    assert not [k for k in h if k.startswith("JMS")], h
    assert c.recv_command("MESSAGE").body == b"last"


def test_defaults_non_persistent_priority_4(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send("SEND", {"destination": dest}, b"x")
    h = c.recv_command("MESSAGE").headers
    assert "persistent" not in h
    assert h["priority"] == "4" and h["expires"] == "0"


def test_client_supplied_message_id_is_replaced(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send("SEND", {"destination": dest, "message-id": "mine", "redelivered": "true"}, b"x")
    h = c.recv_command("MESSAGE").headers
    assert h["message-id"] != "mine"
    assert "redelivered" not in h


def test_message_ids_are_unique(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    for i in range(50):
        c.send("SEND", {"destination": dest}, b"%d" % i)
    ids = {c.recv_command("MESSAGE").headers["message-id"] for _ in range(50)}
    assert len(ids) == 50


def test_bytes_body_with_nuls_keeps_content_length(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    body = b"a\x00b\x00\xff" * 100
    c.send("SEND", {"destination": dest, "content-length": str(len(body))}, body)
    m = c.recv_command("MESSAGE")
    assert m.body == body and m.headers["content-length"] == str(len(body))


def test_amq_msg_type_comes_back_as_sent(raw):
    """As ActiveMQ: amq-msg-type is kept as a header; a text message sent with a
    content-length keeps it too."""
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send("SEND", {"destination": dest, "amq-msg-type": "text", "content-length": "3"}, b"abc")
    c.send("SEND", {"destination": dest, "amq-msg-type": "bytes"}, b"def")
    c.send("SEND", {"destination": dest}, b"ghi")
    text, data, plain = (c.recv_command("MESSAGE").headers for _ in range(3))
    assert text["amq-msg-type"] == "text" and text["content-length"] == "3"
    assert data["amq-msg-type"] == "bytes" and data["content-length"] == "3"
    assert "amq-msg-type" not in plain and "content-length" not in plain


def test_a_subscription_transformation_is_named_on_text_messages(raw):
    """As ActiveMQ: a subscription with a transformation gets it as a header on text
    messages (not on bytes messages)."""
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "transformation": "jms-json"})
    c.send("SEND", {"destination": dest}, b"text")
    c.send("SEND", {"destination": dest, "content-length": "5"}, b"bytes")
    text, data = c.recv_command("MESSAGE"), c.recv_command("MESSAGE")
    assert text.body == b"text" and text.headers["transformation"] == "jms-json"
    assert data.body == b"bytes" and "transformation" not in data.headers


def test_large_message(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    body = bytes(range(256)) * 40000  # ~10 MB
    c.send("SEND", {"destination": dest, "content-length": str(len(body))}, body)
    assert c.recv_command("MESSAGE", timeout=20).body == body


def test_utf8_headers_and_body(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send("SEND", {"destination": dest, "name": "𝄞 é ü"}, "𝄞 body".encode())
    m = c.recv_command("MESSAGE")
    assert m.headers["name"] == "𝄞 é ü" and m.body.decode() == "𝄞 body"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_header_escapes_round_trip(raw, version):
    dest = q()
    c = raw(version=version)
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send_raw(("SEND\ndestination:%s\na\\cb:c\\\\d\\ne\n\nx\x00" % dest).encode())
    m = c.recv_command("MESSAGE")
    assert m.headers["a:b"] == "c\\d\ne"


def test_stomp_1_0_trims_header_values(raw):
    dest = q()
    c = raw(version="1.0")
    c.send("SUBSCRIBE", {"destination": dest, "receipt": "r"})
    c.recv_command("RECEIPT")
    c.send_raw(("SEND\ndestination:%s\nfoo:  padded  \n\nx\x00" % dest).encode())
    assert c.recv_command("MESSAGE").headers["foo"] == "padded"


def test_repeated_header_first_wins(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send_raw(("SEND\ndestination:%s\nfoo:first\nfoo:second\n\nx\x00" % dest).encode())
    assert c.recv_command("MESSAGE").headers["foo"] == "first"


def test_receipts_on_every_frame(raw):
    c = raw()
    dest = q()
    for command, headers in [
            ("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client"}),
            ("SEND", {"destination": dest}),
            ("BEGIN", {"transaction": "t1"}),
            ("ABORT", {"transaction": "t1"})]:
        frame = c.receipt(command, headers)
        assert frame.command == "RECEIPT", (command, frame)
    msg = c.recv_command("MESSAGE")
    assert c.receipt("ACK", {"id": msg.headers["ack"]}).command == "RECEIPT"
    assert c.receipt("UNSUBSCRIBE", {"id": "1"}).command == "RECEIPT"


@pytest.mark.parametrize("command,headers,text", [
    ("SEND", {}, "Destination"),
    ("SEND", {"destination": "/queue/"}, "no name"),
    ("SEND", {"destination": ","}, "Empty"),
    ("SUBSCRIBE", {"destination": "/queue/x"}, "id"),
    ("SUBSCRIBE", {"id": "9"}, "Invalid empty or 'null' Destination header"),
    ("SUBSCRIBE", {"destination": "/queue/x", "id": "8", "selector": "a = "}, "selector"),
    ("UNSUBSCRIBE", {"id": "nope"}, "No subscription matched"),
    ("ACK", {"id": "nope"}, "nope"),
    ("ACK", {}, "id"),
    ("NACK", {"id": "nope"}, "nope"),
    ("COMMIT", {"transaction": "none"}, "none"),
    ("ABORT", {"transaction": "none"}, "none"),
    ("BEGIN", {}, "Must specify the transaction you are beginning"),
    ("COMMIT", {}, "Must specify the transaction you are committing"),
    ("ABORT", {}, "Must specify the transaction you are aborting"),
    ("SEND", {"destination": "/queue/x", "transaction": "none"}, "none"),
    ("SEND", {"destination": "/queue/x", "priority": "high"}, "priority"),
])
def test_semantic_errors_keep_the_connection(raw, command, headers, text):
    c = raw()
    frame = c.receipt(command, headers, b"x")
    assert frame.command == "ERROR"
    assert text in frame.headers["message"]
    assert frame.headers["receipt-id"]
    assert c.receipt("BEGIN", {"transaction": "alive"}).command == "RECEIPT"


def test_duplicate_begin_is_an_error(raw):
    c = raw()
    assert c.receipt("BEGIN", {"transaction": "t"}).command == "RECEIPT"
    frame = c.receipt("BEGIN", {"transaction": "t"})
    assert frame.command == "ERROR" and "t" in frame.headers["message"]


def test_nack_on_1_0_is_an_error(raw):
    c = raw(version="1.0")
    c.send("NACK", {"message-id": "x", "receipt": "r"})
    frame = c.recv()
    assert frame.command == "ERROR" and "1.0" in frame.headers["message"]


def test_unsubscribe_without_id_on_1_1_is_an_error(raw):
    c = raw(version="1.1")
    frame = c.receipt("UNSUBSCRIBE", {"destination": "/queue/x"})
    assert frame.command == "ERROR"


def test_subscribe_without_id_on_1_0_uses_destination(raw):
    dest = q()
    c = raw(version="1.0")
    c.send("SUBSCRIBE", {"destination": dest, "receipt": "r"})
    c.recv_command("RECEIPT")
    c.send("SEND", {"destination": dest}, b"x")
    assert c.recv_command("MESSAGE").body == b"x"
    c.send("UNSUBSCRIBE", {"destination": dest, "receipt": "u"})
    assert c.recv_command("RECEIPT").headers["receipt-id"] == "u"


# -- ack modes -----------------------------------------------------------------------------

def _subscribe_and_fill(raw, ack, n, version="1.2", **extra):
    dest = q()
    c = raw(version=version)
    c.receipt("SUBSCRIBE", dict({"destination": dest, "id": "1", "ack": ack}, **extra))
    for i in range(n):
        c.send("SEND", {"destination": dest}, b"m%d" % i)
    msgs = [c.recv_command("MESSAGE") for _ in range(n)]
    return dest, c, msgs


def _drain(raw, dest, expect, timeout=5.0):
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "d", "ack": "client-individual"})
    got = []
    for _ in range(expect):
        got.append(c.recv_command("MESSAGE", timeout))
    assert c.maybe_recv(0.3) is None
    return got


def test_client_ack_is_cumulative(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client", 3)
    assert c.receipt("ACK", {"id": msgs[1].headers["ack"]}).command == "RECEIPT"
    c.close()
    left = _drain(raw, dest, 1)
    assert left[0].body == b"m2"
    assert left[0].headers["redelivered"] == "true"


def test_client_individual_ack(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client-individual", 3)
    assert c.receipt("ACK", {"id": msgs[1].headers["ack"]}).command == "RECEIPT"
    c.close()
    assert [m.body for m in _drain(raw, dest, 2)] == [b"m0", b"m2"]


def test_ack_by_message_id_on_1_1(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client-individual", 2, version="1.1")
    frame = c.receipt("ACK", {"message-id": msgs[0].headers["message-id"], "subscription": "1"})
    assert frame.command == "RECEIPT"
    c.close()
    assert [m.body for m in _drain(raw, dest, 1)] == [b"m1"]


def test_ack_on_1_1_needs_the_subscription(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client-individual", 1, version="1.1")
    frame = c.receipt("ACK", {"message-id": msgs[0].headers["message-id"]})
    assert frame.command == "ERROR" and "subscription" in frame.headers["message"]
    assert c.receipt("ACK", {"message-id": msgs[0].headers["message-id"],
                             "subscription": "1"}).command == "RECEIPT"  # still usable


def test_late_ack_after_unsubscribe_is_answered_and_changes_nothing(raw):
    """As ActiveMQ: the ACK of a message the closed subscription had in flight gets its
    RECEIPT; the message went back to the queue at the UNSUBSCRIBE and stays there.  An ACK
    of an id never delivered is still an error."""
    dest, c, msgs = _subscribe_and_fill(raw, "client-individual", 1)
    assert c.receipt("UNSUBSCRIBE", {"id": "1"}).command == "RECEIPT"
    assert c.receipt("ACK", {"id": msgs[0].headers["ack"]}).command == "RECEIPT"
    assert c.receipt("ACK", {"id": msgs[0].headers["ack"]}).command == "ERROR"  # once
    assert c.receipt("ACK", {"id": "never-sent"}).command == "ERROR"
    assert [m.body for m in _drain(raw, dest, 1)] == [b"m0"]


def test_nack_in_a_transaction_is_refused(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client-individual", 1)
    c.receipt("BEGIN", {"transaction": "t"})
    frame = c.receipt("NACK", {"id": msgs[0].headers["ack"], "transaction": "t"})
    assert frame.command == "ERROR" and "transacted" in frame.headers["message"]
    assert c.receipt("ACK", {"id": msgs[0].headers["ack"]}).command == "RECEIPT"
    c.close()
    _drain(raw, dest, 0)


def test_ack_by_message_id_on_1_0(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client", 2, version="1.0")
    c.send("ACK", {"message-id": msgs[1].headers["message-id"], "receipt": "a"})
    assert c.recv_command("RECEIPT").headers["receipt-id"] == "a"
    c.close()
    _drain(raw, dest, 0)


def test_auto_ack_consumes(raw):
    dest, c, _ = _subscribe_and_fill(raw, "auto", 3)
    c.close()
    _drain(raw, dest, 0)


def test_unacked_messages_return_in_order_marked_redelivered(raw):
    dest, c, _ = _subscribe_and_fill(raw, "client-individual", 5)
    c.close()
    got = _drain(raw, dest, 5)
    assert [m.body for m in got] == [b"m%d" % i for i in range(5)]
    assert all(m.headers["redelivered"] == "true" for m in got)


def test_unsubscribe_returns_unacked_messages(raw):
    dest, c, _ = _subscribe_and_fill(raw, "client", 2)
    assert c.receipt("UNSUBSCRIBE", {"id": "1"}).command == "RECEIPT"
    assert len(_drain(raw, dest, 2)) == 2


def test_ack_twice_is_an_error(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "client-individual", 1)
    assert c.receipt("ACK", {"id": msgs[0].headers["ack"]}).command == "RECEIPT"
    assert c.receipt("ACK", {"id": msgs[0].headers["ack"]}).command == "ERROR"


def test_ack_in_auto_mode_is_an_error(raw):
    dest, c, msgs = _subscribe_and_fill(raw, "auto", 1, version="1.1")
    frame = c.receipt("ACK", {"message-id": msgs[0].headers["message-id"], "subscription": "1"})
    assert frame.command == "ERROR"


# -- NACK and the DLQ ----------------------------------------------------------------------

def test_nack_sends_persistent_message_to_dlq(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client-individual"})
    c.receipt("SEND", {"destination": dest, "persistent": "true", "marker": dest}, b"poison")
    m = c.recv_command("MESSAGE")
    assert c.receipt("NACK", {"id": m.headers["ack"]}).command == "RECEIPT"
    dlq = raw()
    dlq.receipt("SUBSCRIBE", {"destination": "/queue/ActiveMQ.DLQ", "id": "dlq",
                              "selector": "marker = '%s'" % dest})
    d = dlq.recv_command("MESSAGE")
    assert d.body == b"poison"
    assert d.headers["message-id"] == m.headers["message-id"]
    assert d.headers["original-destination"] == dest
    assert d.headers["persistent"] == "true"
    assert "dlqDeliveryFailureCause" not in d.headers  # ActiveMQ names no cause for a NACK
    c.close()
    _drain(raw, dest, 0)


def test_nack_drops_non_persistent_message(raw):
    dest = q()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client"})
    c.receipt("SEND", {"destination": dest, "marker": dest}, b"gone")
    m = c.recv_command("MESSAGE")
    assert c.receipt("NACK", {"id": m.headers["ack"]}).command == "RECEIPT"
    c.close()
    _drain(raw, dest, 0)
    dlq = raw()
    dlq.receipt("SUBSCRIBE", {"destination": "/queue/ActiveMQ.DLQ", "id": "dlq",
                              "selector": "marker = '%s'" % dest})
    assert dlq.maybe_recv(0.3) is None


def test_no_redelivery_limit_by_default(raw):
    dest = q()
    p = raw()
    p.receipt("SEND", {"destination": dest, "persistent": "true"}, b"again")
    for attempt in range(8):
        c = raw()
        c.receipt("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client"})
        m = c.recv_command("MESSAGE")
        assert m.body == b"again"
        c.close()
    assert m.headers["redelivered"] == "true"


def test_a_header_without_a_name_is_not_passed_on(raw):
    """A SEND header line ":v" names nothing: the MESSAGE must not carry a line ":v" (that
    would break its reader's parser); the rest of the frame is delivered as sent."""
    dest = "/queue/" + unique()
    c = raw()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.sock.sendall(b"SEND\ndestination:%s\n:v\nkept:yes\nreceipt:r\n\nbody\x00" % dest.encode())
    got = [c.recv(5) for _ in range(2)]
    message = next(f for f in got if f.command == "MESSAGE")
    assert message.body == b"body" and message.headers["kept"] == "yes"
    assert "" not in message.headers
