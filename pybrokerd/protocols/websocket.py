"""STOMP over WebSocket (RFC 6455), as ActiveMQ's ws:// transport: sans I/O, no Twisted.

A `WebSocketLink` sits between the socket and a STOMP session: bytes from the socket go in,
the STOMP bytes carried by the client's messages and the bytes to write back come out; STOMP
bytes the session writes go in and come out as WebSocket messages.  The framing itself is
wsproto's (python-hyper, also sans I/O).

As ActiveMQ: any request path is accepted; a client that offers subprotocols gets the highest
of ``v12.stomp``, ``v11.stomp``, ``v10.stomp`` and ``stomp`` it offers (stomp.js offers them
all; the STOMP version itself is CONNECT's accept-version), a client that offers none is spoken
STOMP to anyway, and one that offers only others (``mqtt``) is turned away with an HTTP 400
that says what to offer.  Frames go out as text messages (what
stomp.js and ActiveMQ use), or as binary ones when a body is not UTF-8.
"""

from __future__ import annotations

from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping,
                            RejectConnection, RejectData, Request, TextMessage)
from wsproto.utilities import RemoteProtocolError

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp", "stomp")

_NOT_STOMP = ("This is a STOMP over WebSocket listener: offer the subprotocol v12.stomp, "
              "v11.stomp, v10.stomp or stomp, or none.\n").encode()


class WebSocketLink:
    """One connection's WebSocket state.  `receive` returns what the peer sent; `send`
    and `close` return the bytes to write."""

    def __init__(self):
        self._ws = WSConnection(ConnectionType.SERVER)
        self.open = False      # the handshake is done: STOMP bytes flow
        self.closed = False    # the socket should be closed once the returned bytes are written
        self.subprotocol: str | None = None

    def receive(self, data: bytes) -> tuple[bytes, list[bytes]]:
        """-> (bytes to write back, STOMP bytes the peer sent, in order)."""
        out: list[bytes] = []
        payload: list[bytes] = []
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, Request):
                    out.append(self._handshake(event))
                elif isinstance(event, Message):
                    if self.open:
                        data = event.data
                        payload.append(data.encode("utf-8") if isinstance(event, TextMessage)
                                       else bytes(data))
                elif isinstance(event, Ping):
                    out.append(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if not self.closed:
                        out.append(self._send_quietly(event.response()))
                    self.closed = True
        except RemoteProtocolError as e:
            out.append(self._refuse(e))
        return b"".join(out), payload

    def _handshake(self, request: Request) -> bytes:
        offered = list(request.subprotocols)
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        if offered and chosen is None:
            self.closed = True
            return self._reject(400, _NOT_STOMP)
        self.subprotocol = chosen
        self.open = True
        return self._ws.send(AcceptConnection(subprotocol=chosen))

    def _refuse(self, error: RemoteProtocolError) -> bytes:
        """Not a WebSocket handshake (a plain HTTP request), or a broken frame."""
        self.closed = True
        hint = error.event_hint
        if not self.open:
            status = hint.status_code if isinstance(hint, RejectConnection) else 400
            return self._reject(status, ("Not a WebSocket request: %s. This listener speaks "
                                         "STOMP over WebSocket.\n" % error).encode())
        # a protocol violation after the handshake: close with the code wsproto chose
        if isinstance(hint, CloseConnection):
            return self._send_quietly(hint)
        return b""

    def _reject(self, status: int, text: bytes) -> bytes:
        """An HTTP answer with a plain-text reason instead of the handshake."""
        try:
            return (self._ws.send(RejectConnection(
                status_code=status, has_body=True,
                headers=[(b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", b"%d" % len(text))]))
                    + self._ws.send(RejectData(data=text)))
        except Exception:  # wsproto cannot answer in its state: plain HTTP, no reason
            return b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"

    def send(self, data: bytes) -> bytes:
        """The WebSocket message carrying these STOMP bytes."""
        if not self.open or self.closed:
            return b""
        try:
            return self._ws.send(TextMessage(data=data.decode("utf-8")))
        except UnicodeDecodeError:
            return self._ws.send(BytesMessage(data=data))

    def close(self, code: int = 1000, reason: str | None = None) -> bytes:
        """The closing handshake's first frame (nothing if it is under way or never opened)."""
        if not self.open or self.closed:
            return b""
        self.closed = True
        return self._send_quietly(CloseConnection(code=code, reason=reason))

    def _send_quietly(self, event) -> bytes:
        try:
            return self._ws.send(event)
        except Exception:  # wsproto's state does not allow it any more: nothing to send
            return b""
