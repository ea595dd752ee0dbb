"""The bad-input catalogue: malformed STOMP, each answered with an ERROR a human can act on;
framing errors close the connection, semantic ones leave it usable (as ActiveMQ); the broker
keeps serving everybody else and loses nothing of theirs."""

import socket

import pytest

from support import BrokerProcess, RawStomp, unique

CONNECT = b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\x00"
BIG = 100 * 1024 * 1024

# (id, bytes sent after a good CONNECT (or instead of it, see RAW), what happens)
#   "fatal":  an ERROR, then the connection is closed
#   "usable": an ERROR, and a SEND with a receipt still works afterwards
CATALOGUE = [
    ("unknown-command", b"FOO\n\n\x00", "fatal"),
    ("lowercase-command", b"send\ndestination:/queue/x\n\n\x00", "fatal"),
    ("send-no-destination", b"SEND\n\nbody\x00", "usable"),
    ("send-empty-destination", b"SEND\ndestination:\n\nbody\x00", "usable"),
    ("send-no-name", b"SEND\ndestination:/queue/\n\nbody\x00", "usable"),
    ("send-bad-priority", b"SEND\ndestination:/queue/x\npriority:high\n\n\x00", "usable"),
    ("send-bad-expires", b"SEND\ndestination:/queue/x\nexpires:soon\n\n\x00", "usable"),
    ("send-bad-delay", b"SEND\ndestination:/queue/x\nAMQ_SCHEDULED_DELAY:later\n\n\x00", "usable"),
    ("send-bad-cron", b"SEND\ndestination:/queue/x\nAMQ_SCHEDULED_CRON:61 * * * *\n\n\x00", "usable"),
    ("send-bad-repeat", b"SEND\ndestination:/queue/x\nAMQ_SCHEDULED_DELAY:10\nAMQ_SCHEDULED_REPEAT:x\n\n\x00", "usable"),
    ("send-unknown-transaction", b"SEND\ndestination:/queue/x\ntransaction:nope\n\n\x00", "usable"),
    ("send-bad-producer-seq", b"SEND\ndestination:/queue/x\npybrokerd-producer:p\npybrokerd-seq:x\n\n\x00", "usable"),
    ("content-length-not-a-number", b"SEND\ndestination:/queue/x\ncontent-length:abc\n\nbody\x00", "fatal"),
    ("content-length-negative", b"SEND\ndestination:/queue/x\ncontent-length:-1\n\nbody\x00", "fatal"),
    ("content-length-too-short", b"SEND\ndestination:/queue/x\ncontent-length:2\n\nbody\x00", "fatal"),
    ("content-length-over-limit", b"SEND\ndestination:/queue/x\ncontent-length:%d\n\n" % (BIG + 1), "fatal"),
    ("header-line-too-long", b"SEND\ndestination:/queue/x\nx:" + b"a" * 20000 + b"\n\n\x00", "fatal"),
    ("too-many-headers", b"SEND\ndestination:/queue/x\n" + b"".join(b"h%d:v\n" % i for i in range(1100)) + b"\n\x00", "fatal"),
    ("command-too-long", b"S" * 2000 + b"\n\n\x00", "fatal"),
    ("invalid-utf8-header", b"SEND\ndestination:/queue/\xff\xfe\n\n\x00", "fatal"),
    ("invalid-utf8-command", b"SE\xffND\n\n\x00", "fatal"),
    ("subscribe-no-destination", b"SUBSCRIBE\nid:1\n\n\x00", "usable"),
    ("subscribe-no-id", b"SUBSCRIBE\ndestination:/queue/x\n\n\x00", "usable"),
    ("subscribe-bad-selector", b"SUBSCRIBE\ndestination:/queue/x\nid:1\nselector:a = = 1\n\n\x00", "usable"),
    ("subscribe-selector-unclosed-string", b"SUBSCRIBE\ndestination:/queue/x\nid:1\nselector:a = 'x\n\n\x00", "usable"),
    ("subscribe-durable-queue", b"SUBSCRIBE\ndestination:/queue/x\nid:1\nactivemq.subscriptionName:s\n\n\x00", "usable"),
    ("unsubscribe-no-id", b"UNSUBSCRIBE\n\n\x00", "usable"),
    ("unsubscribe-unknown-id", b"UNSUBSCRIBE\nid:nope\n\n\x00", "usable"),
    ("ack-no-id", b"ACK\n\n\x00", "usable"),
    ("ack-unknown-id", b"ACK\nid:nope\n\n\x00", "usable"),
    ("nack-unknown-id", b"NACK\nid:nope\n\n\x00", "usable"),
    ("ack-unknown-transaction", b"ACK\nid:x\ntransaction:nope\n\n\x00", "usable"),
    ("begin-no-transaction", b"BEGIN\n\n\x00", "usable"),
    ("begin-twice", b"BEGIN\ntransaction:t\n\n\x00BEGIN\ntransaction:t\n\n\x00", "usable"),
    ("commit-unknown", b"COMMIT\ntransaction:nope\n\n\x00", "usable"),
    ("commit-no-transaction", b"COMMIT\n\n\x00", "usable"),
    ("abort-unknown", b"ABORT\ntransaction:nope\n\n\x00", "usable"),
    ("connect-twice", CONNECT, "fatal"),
    ("server-frame-from-client", b"MESSAGE\ndestination:/queue/x\n\n\x00", "fatal"),
    ("receipt-frame-from-client", b"RECEIPT\nreceipt-id:1\n\n\x00", "fatal"),
    ("error-frame-from-client", b"ERROR\nmessage:hi\n\n\x00", "fatal"),
    ("scheduler-bad-action", b"SEND\ndestination:/topic/ActiveMQ.Scheduler.Management\nAMQ_SCHEDULER_ACTION:EXPLODE\n\n\x00", "usable"),
    ("stats-without-reply-to", b"SEND\ndestination:/queue/ActiveMQ.Statistics.Destination.x\n\n\x00", "usable"),
    ("purge-unknown-queue", b"SEND\ndestination:/queue/pybrokerd.Admin.Purge.%s\nreply-to:/queue/r\n\n\x00" % unique("nope").encode(), "usable"),
    ("selector-too-deep", b"SUBSCRIBE\ndestination:/queue/x\nid:1\nselector:" + b"(" * 5000 + b"\n\n\x00", "usable"),
]

# sent instead of CONNECT, on a fresh connection
RAW = [
    ("frame-before-connect", b"SEND\ndestination:/queue/x\n\nhi\x00", "fatal"),
    ("no-common-version", b"CONNECT\naccept-version:9.9\nhost:localhost\n\n\x00", "fatal"),
    ("bad-heart-beat", b"CONNECT\naccept-version:1.2\nheart-beat:often\n\n\x00", "fatal"),
    ("http-request", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "fatal"),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, "fatal"),
    ("binary-garbage", bytes(range(256)) * 4, "fatal"),
]


@pytest.fixture(scope="module")
def bystanding(tmp_path_factory):
    """Its own broker, and a client whose persistent messages must all survive the abuse."""
    broker = BrokerProcess(directory=str(tmp_path_factory.mktemp("bad-input"))).start()
    dest = "/queue/" + unique("bystander")
    c = RawStomp(broker.port)
    c.connect()
    for i in range(20):
        c.receipt("SEND", {"destination": dest, "persistent": "true"}, b"keep-%d" % i)
    yield broker, dest
    broker.stop()


def _error_then(c, outcome, case):
    frame = c.recv(5)
    assert frame.command == "ERROR", (case, frame)
    text = frame.headers.get("message", "")
    assert text and "Traceback" not in text and "Internal error" not in text, (case, text)
    if outcome == "fatal":
        c.wait_closed(5)
    else:
        while c.maybe_recv(0.05) is not None:  # a second ERROR (begin-twice) or a RECEIPT
            pass
        assert c.receipt("SEND", {"destination": "/queue/" + unique()}, b"ok").command == "RECEIPT", case
    return text


@pytest.mark.parametrize("case, data, outcome", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_malformed_frame_after_connect(bystanding, case, data, outcome):
    broker, _ = bystanding
    c = RawStomp(broker.port)
    c.connect()
    try:
        c.send_raw(data)
    except OSError:
        pass  # the broker may close before a huge input is all written
    _error_then(c, outcome, case)


@pytest.mark.parametrize("case, data, outcome", RAW, ids=[c[0] for c in RAW])
def test_malformed_input_instead_of_connect(bystanding, case, data, outcome):
    broker, _ = bystanding
    c = RawStomp(broker.port)
    c.send_raw(data)
    _error_then(c, outcome, case)


def test_unknown_command_error_names_the_receipt(bystanding):
    """As ActiveMQ: the ERROR for an unknown command carries its receipt-id, then closes."""
    broker, _ = bystanding
    c = RawStomp(broker.port)
    c.connect()
    c.send_raw(b"FOO\nreceipt:r1\n\nbody\x00")
    frame = c.recv(5)
    assert frame.command == "ERROR" and frame.headers.get("receipt-id") == "r1", frame
    assert "FOO" in frame.headers["message"]
    c.wait_closed(5)


def test_abrupt_disconnects_mid_frame(bystanding):
    broker, _ = bystanding
    for cut in (b"SEN", b"SEND\ndestination:/queue/x\n", b"SEND\ndestination:/queue/x\n\nhal"):
        s = socket.create_connection(("127.0.0.1", broker.port))
        s.sendall(CONNECT + cut)
        s.close()


def test_the_broker_kept_serving_and_lost_nothing(bystanding):
    """Runs last in this module: after all of the above, the bystander's messages are intact
    and the log has no traceback."""
    broker, dest = bystanding
    c = RawStomp(broker.port)
    c.connect()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    assert [c.recv_command("MESSAGE").body for _ in range(20)] == [b"keep-%d" % i for i in range(20)]
    log = broker.log()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]
