"""Twisted glue for OpenWire: a Protocol that feeds bytes to an OpenWireConnection."""

from twisted.internet import interfaces, protocol
from twisted.logger import Logger
from zope.interface import implementer

from pybrokerd.protocols.limits import ConnectionLimits
from pybrokerd.protocols.openwire.connection import OpenWireConnection

log = Logger()


@implementer(interfaces.IPushProducer)
class OpenWireProtocol(protocol.Protocol):
    connection = None
    counted = False

    def connectionMade(self):
        peer = self.transport.getPeer()
        factory = self.factory
        self.address = getattr(peer, "host", "?")
        refusal = factory.limits.refusal(self.address)
        if refusal is None:
            factory.limits.count(self.address, +1)
            self.counted = True
        else:
            log.warn("refusing an OpenWire connection from {address}: {reason}",
                     address=self.address, reason=refusal)
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.connection = OpenWireConnection(
            factory.broker, self, clock=factory.clock, id_generator=factory.ids,
            peer="tcp://%s:%s" % (getattr(peer, "host", "?"), getattr(peer, "port", "?")),
            refusal=refusal, max_frame_size=factory.max_frame_size,
            broker_url=factory.url, max_subscriptions=factory.max_subscriptions)
        self.transport.registerProducer(self, True)
        factory.connections.add(self.connection)
        self.connection.start()

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


class OpenWireFactory(protocol.Factory):
    protocol = OpenWireProtocol
    noisy = False

    def __init__(self, broker, ids, clock=None, max_connections=0, max_per_address=0,
                 max_frame_size=100 * 1024 * 1024, max_subscriptions=0):
        if clock is None:
            from twisted.internet import reactor as clock
        self.broker = broker
        self.ids = ids
        self.clock = clock
        self.connections = set()
        self.limits = ConnectionLimits(max_connections, max_per_address)
        self.max_frame_size = max_frame_size
        self.max_subscriptions = max_subscriptions
        self.url = "tcp://127.0.0.1:61616"
