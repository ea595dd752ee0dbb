"""Twisted glue for STOMP: the shared connection glue, making a StompSession per socket; and
the same over WebSocket."""

from twisted.internet import protocol

from pybrokerd.protocols.glue import ConnectionFactory, ConnectionProtocol
from pybrokerd.protocols.stomp.codec import serialize
from pybrokerd.protocols.stomp.session import StompConfig, StompSession
from pybrokerd.protocols.websocket import WebSocketLink


class StompFactory(ConnectionFactory):
    label = "STOMP"

    def __init__(self, broker, ids, clock=None, config: StompConfig | None = None):
        self.config = config or StompConfig()
        super().__init__(broker, ids, clock=clock, max_connections=self.config.max_connections,
                         max_per_address=self.config.max_connections_per_address)

    def make_connection(self, link, peer: str, refusal):
        if refusal is not None:
            # a clear answer instead of a silent close (ActiveMQ just drops the socket)
            link.write(serialize("ERROR", {"message": refusal}, (refusal + "\n").encode()))
            link.close()
            return None
        session = StompSession(self.broker, link, clock=self.clock, id_generator=self.ids,
                               config=self.config)
        session.peer = peer
        return session


class WebSocketStompProtocol(ConnectionProtocol):
    """STOMP over WebSocket: the same session, each direction through a WebSocketLink."""

    scheme = "ws"

    def connectionMade(self):
        self.ws = WebSocketLink()
        self._held: list[bytes] = []  # written before the handshake was answered
        super().connectionMade()

    def dataReceived(self, data):
        out, payload = self.ws.receive(data)
        if out:
            self.transport.write(out)
        if self.ws.open and self._held:
            held, self._held = self._held, []
            for chunk in held:
                self.transport.write(self.ws.send(chunk))
        for chunk in payload:
            if self.connection is None:
                break
            self.connection.data_received(chunk)
        if self.ws.closed:
            self.transport.loseConnection()

    def write(self, data: bytes) -> None:
        if self.ws.open:
            self.transport.write(self.ws.send(data))
        else:
            self._held.append(data)

    def write_many(self, chunks: list) -> None:
        for data in chunks:  # a WebSocket message per frame
            self.write(data)

    def close(self) -> None:
        if not self.ws.open and self._held and not self.ws.closed:
            # refused before any handshake (a connection limit): say so in HTTP
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain;"
                                 b" charset=utf-8\r\ncontent-length: %d\r\n\r\n%s"
                                 % (sum(map(len, self._held)), b"".join(self._held)))
            self._held = []
        else:
            self.transport.write(self.ws.close())
        self.transport.loseConnection()


class WebSocketFactory(protocol.Factory):
    """The listener for STOMP over WebSocket (ActiveMQ's ws://): its connections belong to the
    STOMP factory (one set of connection limits, one configuration)."""

    noisy = False

    def __init__(self, stomp_factory: StompFactory):
        self.stomp_factory = stomp_factory

    def buildProtocol(self, addr):
        p = WebSocketStompProtocol()
        p.factory = self.stomp_factory
        return p
