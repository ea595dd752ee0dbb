"""STOMP over WebSocket (--stomp-ws, ActiveMQ's ws:// transport): stomp.py's WebSocket
connection and websocket-client against a real broker; the sans-I/O link on its own."""

import json
import socket
import threading
import urllib.request

import pytest
import stomp
import websocket
from stomp.adapter.ws import WSStompConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, CloseConnection, Ping, Pong, Request,
                            TextMessage)

from pybrokerd.protocols.websocket import WebSocketLink
from support import BrokerProcess, RawStomp, free_port, unique


@pytest.fixture(scope="module")
def broker():
    ws_port = free_port()
    b = BrokerProcess("--stomp-ws=tcp:%d:interface=127.0.0.1" % ws_port).start()
    b.ws_port = ws_port
    yield b
    b.stop()


def _ws(broker, subprotocols=None):
    return websocket.create_connection("ws://127.0.0.1:%d/stomp" % broker.ws_port,
                                       subprotocols=subprotocols, timeout=5)


def _stomp_connect(ws, heart_beat="0,0"):
    ws.send("CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:%s\n\n\x00" % heart_beat)
    frame = ws.recv()
    assert frame.startswith("CONNECTED\n"), frame
    return frame


def _next_frame(ws):
    """The next frame, past heart-beats."""
    while True:
        frame = ws.recv()
        if frame != "\n":
            return frame


class Collect(stomp.ConnectionListener):
    def __init__(self):
        self.bodies = []
        self.arrived = threading.Event()

    def on_message(self, frame):
        self.bodies.append(frame.body)
        self.arrived.set()


def test_stomp_py_over_websocket_talks_to_tcp_clients_both_ways(broker):
    dest = "/queue/" + unique("ws")
    listener = Collect()
    ws_conn = WSStompConnection([("127.0.0.1", broker.ws_port)], ws_path="/stomp")
    ws_conn.set_listener("collect", listener)
    ws_conn.connect(wait=True)
    tcp = RawStomp(broker.port)
    tcp.connect()
    try:
        ws_conn.subscribe(dest, id="1", ack="auto")
        tcp.receipt("SEND", {"destination": dest}, "from tcp, héllo".encode())
        assert listener.arrived.wait(5)
        assert listener.bodies == ["from tcp, héllo"]
        tcp.receipt("SUBSCRIBE", {"destination": dest + ".back", "id": "b"})
        ws_conn.send(dest + ".back", "from the browser side", receipt="r1")
        frame = tcp.recv_command("MESSAGE")
        assert frame.body == b"from the browser side"
        assert frame.headers["destination"] == dest + ".back"
        with urllib.request.urlopen("http://127.0.0.1:%d/api/connections"
                                    % broker.admin_port()) as answer:
            rows = json.loads(answer.read())
        mine = [r for r in rows if any(s["destinations"] == [dest] for s in r["subscriptions"])]
        assert len(mine) == 1 and mine[0]["remote"].startswith("ws://127.0.0.1:")
        assert mine[0]["protocol"] == "stomp"
    finally:
        ws_conn.disconnect()
        tcp.close()


def test_the_highest_stomp_subprotocol_offered_is_chosen(broker):
    ws = _ws(broker, ["v10.stomp", "v11.stomp", "v12.stomp"])  # stomp.js's offer
    try:
        assert ws.getsubprotocol() == "v12.stomp"
        _stomp_connect(ws)
    finally:
        ws.close()
    ws = _ws(broker, ["stomp"])
    try:
        assert ws.getsubprotocol() == "stomp"
    finally:
        ws.close()


def test_a_client_offering_only_other_subprotocols_is_told_what_to_offer(broker):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _ws(broker, ["mqtt"])
    assert refused.value.status_code == 400
    assert b"v12.stomp" in refused.value.resp_body
    _ws(broker).close()  # the listener still serves


def test_a_plain_http_request_gets_a_400_that_says_what_this_port_is(broker):
    with socket.create_connection(("127.0.0.1", broker.ws_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"STOMP over WebSocket" in answer


def test_errors_heart_beats_and_binary_bodies_over_websocket(broker):
    dest = "/queue/" + unique("wsbin")
    ws = _ws(broker)
    try:
        connected = _stomp_connect(ws, heart_beat="0,200")
        assert "heart-beat:200,0" in connected
        assert ws.recv() == "\n"  # a heart-beat is a message of its own, as from ActiveMQ
        # a semantic error: an ERROR, and the connection still works
        ws.send("SEND\ndestination:/queue/\nreceipt:bad\n\nx\x00")
        error = _next_frame(ws)
        assert error.startswith("ERROR\n") and "receipt-id:bad" in error
        ws.send("SUBSCRIBE\ndestination:%s\nid:1\nreceipt:sub\n\n\x00" % dest)
        assert _next_frame(ws).startswith("RECEIPT\nreceipt-id:sub\n")
        body = bytes(range(256))  # not UTF-8: travels in a binary message, byte for byte
        ws.send_binary(b"SEND\ndestination:%s\ncontent-length:256\n\n%s\x00"
                       % (dest.encode(), body))
        while True:
            opcode, data = ws.recv_data()
            if data != b"\n":
                break
        assert opcode == websocket.ABNF.OPCODE_BINARY
        assert data.startswith(b"MESSAGE\n")
        assert data[data.index(b"\n\n") + 2:].rstrip(b"\n")[:-1] == body
        # a framing error: an ERROR, then the broker closes the WebSocket
        ws.send("NOT-A-COMMAND\x01\n\n\x00")
        seen = []
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            seen.append(data)
        assert any(d.startswith(b"ERROR\n") for d in seen)
    finally:
        ws.close()


def _client_handshake(link, subprotocols=()):
    client = WSConnection(ConnectionType.CLIENT)
    out, payload = link.receive(client.send(Request(host="localhost", target="/",
                                                    subprotocols=list(subprotocols))))
    assert payload == []
    client.receive_data(out)
    assert isinstance(next(client.events()), AcceptConnection)
    return client


def test_link_joins_frames_split_over_messages_and_answers_pings():
    link = WebSocketLink()
    client = _client_handshake(link, ["v11.stomp"])
    assert link.open and link.subprotocol == "v11.stomp"
    frame = b"SEND\ndestination:/queue/a\n\nhello\x00"
    got = []
    for part in (frame[:7], frame[7:]):
        out, payload = link.receive(client.send(TextMessage(data=part.decode())))
        assert out == b""
        got += payload
    assert b"".join(got) == frame
    out, payload = link.receive(client.send(Ping(payload=b"p")))
    client.receive_data(out)
    assert [type(e) for e in client.events()] == [Pong] and payload == []
    out, _ = link.receive(client.send(CloseConnection(code=1000)))
    client.receive_data(out)
    assert isinstance(next(client.events()), CloseConnection) and link.closed
    assert link.send(b"MESSAGE\n\n\x00") == b""  # nothing goes out after the close


def test_a_websocket_client_over_the_connection_limit_is_told_why(tmp_path):
    ws_port = free_port()
    b = BrokerProcess("--stomp-ws=tcp:%d:interface=127.0.0.1" % ws_port, "--max-connections=1",
                      directory=str(tmp_path)).start()
    holder = RawStomp(b.port)
    try:
        holder.connect()  # STOMP over TCP and over WebSocket count together
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection("ws://127.0.0.1:%d/" % ws_port, timeout=5)
        assert refused.value.status_code == 503
        assert b"maximum" in refused.value.resp_body.lower()
    finally:
        holder.close()
        b.stop()
