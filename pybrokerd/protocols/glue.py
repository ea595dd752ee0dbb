"""Twisted glue shared by the STOMP, AMQP and OpenWire listeners: a Protocol that counts
itself against the connection limits, turns on TCP_NODELAY, feeds bytes to its protocol
connection object (sans Twisted) and tells it when the socket's send buffer is full or has
room."""

from twisted.internet import interfaces, protocol
from twisted.logger import Logger
from zope.interface import implementer

from pybrokerd.protocols.limits import ConnectionLimits

log = Logger()


@implementer(interfaces.IPushProducer)
class ConnectionProtocol(protocol.Protocol):
    connection = None
    counted = False
    scheme = "tcp"  # of the peer's address as the admin API shows it

    def connectionMade(self):
        peer = self.transport.getPeer()
        factory = self.factory
        self.address = getattr(peer, "host", "?")
        refusal = factory.limits.refusal(self.address)
        if refusal is None:
            factory.limits.count(self.address, +1)
            self.counted = True
        else:
            log.warn("refused a connection ({label}) from {address}: {reason}",
                     label=factory.label, address=self.address, reason=refusal)
        # small frames (a RECEIPT behind a stream of MESSAGEs) must not wait for the peer's
        # delayed ACK (Nagle): 40 ms each otherwise
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.connection = factory.make_connection(
            self, "%s://%s:%s" % (self.scheme, getattr(peer, "host", "?"),
                                  getattr(peer, "port", "?")),
            refusal)
        if self.connection is None:
            return  # refused, and told so by the factory
        # the transport says when its send buffer is full: deliveries pause until it drains
        self.transport.registerProducer(self, True)
        factory.connections.add(self.connection)
        start = getattr(self.connection, "start", None)
        if start is not None:
            start()  # a protocol where the server speaks first

    def dataReceived(self, data):
        if self.connection is not None:
            self.connection.data_received(data)

    def connectionLost(self, reason=protocol.connectionDone):
        if self.counted:
            self.factory.limits.count(self.address, -1)
            self.counted = False
        if self.connection is not None:
            self.factory.connections.discard(self.connection)
            self.connection.connection_lost()

    # the link the connection writes through
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def write_many(self, chunks: list) -> None:
        self.transport.writeSequence(chunks)

    def close(self) -> None:
        self.transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    # IPushProducer: the socket's send buffer is full, or has room again
    def pauseProducing(self):
        if self.connection is not None:
            self.connection.pause_writing()

    def resumeProducing(self):
        if self.connection is not None:
            self.connection.resume_writing()

    def stopProducing(self):
        pass


class ConnectionFactory(protocol.Factory):
    protocol = ConnectionProtocol
    noisy = False
    label = "?"

    def __init__(self, broker, ids, clock=None, max_connections=0, max_per_address=0):
        if clock is None:
            from twisted.internet import reactor as clock
        self.broker = broker
        self.ids = ids
        self.clock = clock
        self.connections = set()
        self.limits = ConnectionLimits(max_connections, max_per_address)

    def make_connection(self, link, peer: str, refusal):
        """The protocol's connection object for a new socket; with a refusal (a connection
        limit), one that tells the client and closes, or None once the factory has."""
        raise NotImplementedError
