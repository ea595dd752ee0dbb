"""CONNECT, version negotiation, framing errors and limits, over raw sockets."""

import socket

import pytest

from support import RawStomp, unique


def connected(broker, **headers):
    c = RawStomp(broker.port)
    c.send("CONNECT", headers)
    return c, c.recv()


@pytest.mark.parametrize("accept,expected", [
    ("1.0,1.1,1.2", "1.2"), ("1.1", "1.1"), ("1.0", "1.0"), ("1.1,1.9", "1.1"), ("1.2,1.0", "1.2"),
    # versions are not trimmed (ActiveMQ 5.17): " 1.1" is no version it knows
    ("1.0, 1.1", "1.0")])
def test_version_negotiation(broker, accept, expected):
    c, frame = connected(broker, **{"accept-version": accept, "host": "localhost"})
    assert frame.command == "CONNECTED"
    assert frame.headers.get("version") == expected
    assert frame.headers["server"].startswith("pybrokerd/")
    assert frame.headers["session"]
    c.close()


def test_connected_session_is_the_client_id(broker):
    cid = unique("cid")
    c, frame = connected(broker, **{"accept-version": "1.2", "host": "localhost",
                                    "client-id": cid})
    assert frame.headers["session"] == cid  # as ActiveMQ
    c.close()


def test_no_accept_version_is_stomp_1_0(broker):
    c, frame = connected(broker)
    assert frame.command == "CONNECTED"
    assert frame.headers["version"] == "1.0"  # ActiveMQ names it even on 1.0
    c.close()


def test_stomp_command_connects(broker):
    c = RawStomp(broker.port)
    c.send("STOMP", {"accept-version": "1.2", "host": "x"})
    assert c.recv().headers["version"] == "1.2"
    c.close()


def test_unsupported_version_is_fatal(broker):
    c, frame = connected(broker, **{"accept-version": "1.3"})
    assert frame.command == "ERROR"
    assert "version" in frame.headers["message"].lower()
    assert c.wait_closed()


def test_connect_receipt_and_request_id(broker):
    # as ActiveMQ 5.17: a request-id is answered in both headers, and wins over a receipt
    c, frame = connected(broker, **{"accept-version": "1.2", "receipt": "c-1", "request-id": "q-1"})
    assert frame.headers["receipt-id"] == frame.headers["response-id"] == "q-1"
    c.close()
    c, frame = connected(broker, **{"accept-version": "1.2", "request-id": "q-2"})
    assert frame.headers["receipt-id"] == frame.headers["response-id"] == "q-2"
    c.close()
    c, frame = connected(broker, **{"accept-version": "1.2", "receipt": "c-2"})
    assert frame.headers["receipt-id"] == frame.headers["response-id"] == "c-2"  # as ActiveMQ
    c.close()


def test_heart_beat_header_is_answered_swapped(broker):
    c, frame = connected(broker, **{"accept-version": "1.2", "heart-beat": "0,60000"})
    assert frame.headers["heart-beat"] == "60000,0"
    c.close()


@pytest.mark.parametrize("bad", ["a,b", "1000", "-1,0", "1,2,3"])
def test_bad_heart_beat_is_fatal(broker, bad):
    c, frame = connected(broker, **{"accept-version": "1.2", "heart-beat": bad})
    assert frame.command == "ERROR"
    assert "heart-beat" in frame.headers["message"]
    assert c.wait_closed()


def test_frame_before_connect_is_an_error_but_connection_stays(broker):
    c = RawStomp(broker.port)
    c.send("SEND", {"destination": "/queue/x", "receipt": "r1"}, b"x")
    frame = c.recv()
    assert frame.command == "ERROR"
    assert frame.headers["receipt-id"] == "r1"
    assert "connect" in frame.headers["message"].lower()
    assert c.connect().command == "CONNECTED"
    c.close()


def test_second_connect_is_an_error_but_connection_stays(raw):
    c = raw()
    c.send("CONNECT", {"accept-version": "1.2", "receipt": "r2"})
    frame = c.recv()
    assert frame.command == "ERROR" and frame.headers["receipt-id"] == "r2"
    assert c.receipt("SUBSCRIBE", {"destination": "/queue/" + unique(), "id": "1"}).command == "RECEIPT"


@pytest.mark.parametrize("command", ["FOO", "send", "SENDX", "MESSAGE", "CONNECTED"])
def test_unknown_or_server_command_is_fatal(raw, command):
    c = raw()
    c.send(command, {"destination": "/queue/x", "receipt": "r"})
    frame = c.recv()
    assert frame.command == "ERROR"
    assert command in frame.headers["message"]
    assert c.wait_closed()


def test_error_frames_are_plain_text_one_line(raw):
    c = raw()
    c.send("SEND", {"receipt": "r9"}, b"no destination")
    frame = c.recv()
    assert frame.command == "ERROR"
    assert frame.headers["content-type"] == "text/plain"
    assert frame.headers["receipt-id"] == "r9"
    assert frame.body.decode().strip() == frame.headers["message"]
    assert "\n" not in frame.body.decode().strip()
    assert "Traceback" not in frame.body.decode()


@pytest.mark.parametrize("headers", [
    {"content-length": "-1"}, {"content-length": "abc"}])
def test_bad_content_length_is_fatal(raw, headers):
    c = raw()
    c.send("SEND", dict(headers, destination="/queue/x"), b"body")
    frame = c.recv()
    assert frame.command == "ERROR"
    assert "content-length" in frame.headers["message"]
    assert c.wait_closed()


def test_content_length_without_nul_is_fatal(raw):
    c = raw()
    c.send_raw(b"SEND\ndestination:/queue/x\ncontent-length:2\n\nabcdef\x00")
    frame = c.recv()
    assert frame.command == "ERROR"
    assert c.wait_closed()


def test_header_without_colon_is_an_empty_header(raw):
    c = raw()
    dest = "/queue/" + unique()
    c.receipt("SUBSCRIBE", {"destination": dest, "id": "1"})
    c.send_raw(("SEND\ndestination:%s\nnocolonhere\n\nbody\x00" % dest).encode())
    m = c.recv_command("MESSAGE")
    assert m.body == b"body" and m.headers["nocolonhere"] == ""


def test_command_line_too_long_is_fatal(raw):
    c = raw()
    c.send_raw(b"S" * 2000)
    frame = c.recv()
    assert frame.command == "ERROR"
    assert "command" in frame.headers["message"]
    assert c.wait_closed()


def test_header_line_too_long_is_fatal(raw):
    c = raw()
    c.send_raw(b"SEND\ndestination:/queue/x\nbig:" + b"v" * 11000 + b"\n\nx\x00")
    frame = c.recv()
    assert frame.command == "ERROR"
    assert "header" in frame.headers["message"]
    assert c.wait_closed()


def test_too_many_headers_is_fatal(raw):
    c = raw()
    headers = b"".join(b"h%d:v\n" % i for i in range(1001))
    c.send_raw(b"SEND\ndestination:/queue/x\n" + headers + b"\nx\x00")
    frame = c.recv()
    assert frame.command == "ERROR"
    assert c.wait_closed()


def test_crlf_line_endings(raw):
    c = raw()
    q = "/queue/" + unique()
    c.send_raw(("SUBSCRIBE\r\ndestination:%s\r\nid:1\r\n\r\n\x00" % q).encode())
    c.send_raw(("SEND\r\ndestination:%s\r\n\r\nhi\x00\r\n" % q).encode())
    frame = c.recv()
    assert frame.command == "MESSAGE" and frame.body == b"hi"


def test_heart_beat_eols_between_frames_are_ignored(raw):
    c = raw()
    c.send_raw(b"\n\r\n\n")
    assert c.receipt("BEGIN", {"transaction": "t"}).command == "RECEIPT"


def test_disconnect_receipt_then_close(raw):
    c = raw()
    c.send("DISCONNECT", {"receipt": "bye"})
    frame = c.recv()
    assert frame.command == "RECEIPT" and frame.headers["receipt-id"] == "bye"
    assert c.wait_closed()


def test_frames_sent_behind_a_disconnect_are_refused_in_order_then_closed(raw, broker):
    """As ActiveMQ: the DISCONNECT's RECEIPT, then "Not connected." for each frame that came
    after it (naming its receipt), then the end of the connection; nothing of them is done."""
    dest = "/queue/" + unique("after-bye")
    c = raw()
    c.send_raw(b"DISCONNECT\nreceipt:bye\n\n\x00"
               b"SEND\ndestination:%s\nreceipt:s1\n\nlost\x00"
               b"SUBSCRIBE\ndestination:%s\nid:1\n\n\x00" % (dest.encode(), dest.encode()))
    frame = c.recv()
    assert frame.command == "RECEIPT" and frame.headers["receipt-id"] == "bye"
    for receipt in ("s1", None):
        frame = c.recv()
        assert frame.command == "ERROR" and frame.headers["message"] == "Not connected."
        assert frame.headers.get("receipt-id") == receipt
    assert c.wait_closed()
    probe = RawStomp(broker.port)
    probe.connect()
    probe.receipt("SUBSCRIBE", {"destination": dest, "id": "p"})
    assert probe.maybe_recv(0.3) is None  # the SEND was not done
    probe.close()


def test_duplicate_client_id_is_refused(raw):
    cid = unique("cid")
    raw(**{"client-id": cid})
    c = raw(connect=False)
    c.send("CONNECT", {"accept-version": "1.2", "client-id": cid})
    frame = c.recv()
    assert frame.command == "ERROR"
    assert cid in frame.headers["message"]
    assert c.wait_closed()


def test_an_error_before_connected_is_not_escaped(broker, raw):
    """No version is agreed yet: the ERROR's headers are written as STOMP 1.0 (ActiveMQ)."""
    cid = unique("cid")
    raw(**{"client-id": cid})
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        s.sendall(b"CONNECT\naccept-version:1.2\nclient-id:%s\n\n\x00" % cid.encode())
        data = b""
        while b"\x00" not in data:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    assert data.startswith(b"ERROR\n")
    assert b"\nmessage:Broker: " in data and b"\\c" not in data, data


def test_client_id_is_free_again_after_disconnect(raw):
    cid = unique("cid")
    first = raw(**{"client-id": cid})
    first.send("DISCONNECT", {"receipt": "x"})
    first.recv()
    assert first.wait_closed()
    assert raw(**{"client-id": cid}).version == "1.2"


def test_oversized_body_is_refused_without_buffering_it():
    from support import BrokerProcess
    proc = BrokerProcess("--max-body-length=1000").start()
    try:
        c = RawStomp(proc.port)
        c.connect()
        c.send("SEND", {"destination": "/queue/big", "content-length": "5000000"})
        frame = c.recv()
        assert frame.command == "ERROR"
        assert "1000" in frame.headers["message"]
        assert c.wait_closed()
        c = RawStomp(proc.port)
        c.connect()
        c.send_raw(b"SEND\ndestination:/queue/big\n\n" + b"x" * 5000)
        assert c.recv().command == "ERROR"
        assert c.wait_closed()
    finally:
        proc.stop()
