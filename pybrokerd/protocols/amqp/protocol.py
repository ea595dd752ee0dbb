"""Twisted glue for AMQP 1.0: a Protocol that feeds bytes to an AmqpConnection."""

from twisted.internet import interfaces, protocol
from zope.interface import implementer

from twisted.logger import Logger

from pybrokerd.protocols.amqp.connection import AmqpConnection
from pybrokerd.protocols.limits import ConnectionLimits

log = Logger()


@implementer(interfaces.IPushProducer)
class AmqpProtocol(protocol.Protocol):
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
            log.warn("refusing an AMQP connection from {address}: {reason}",
                     address=self.address, reason=refusal)
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.connection = AmqpConnection(
            factory.broker, self, clock=factory.clock, id_generator=factory.ids,
            peer="tcp://%s:%s" % (getattr(peer, "host", "?"), getattr(peer, "port", "?")),
            refusal=refusal, max_message_size=factory.max_message_size)
        self.transport.registerProducer(self, True)
        factory.connections.add(self.connection)

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

    # IPushProducer: the socket's send buffer is full, or has room again
    def pauseProducing(self):
        if self.connection is not None:
            self.connection.pause_writing()

    def resumeProducing(self):
        if self.connection is not None:
            self.connection.resume_writing()

    def stopProducing(self):
        pass


class AmqpFactory(protocol.Factory):
    protocol = AmqpProtocol
    noisy = False

    def __init__(self, broker, ids, clock=None, max_connections=0, max_per_address=0,
                 max_message_size=0):
        if clock is None:
            from twisted.internet import reactor as clock
        self.broker = broker
        self.ids = ids
        self.clock = clock
        self.connections = set()
        self.limits = ConnectionLimits(max_connections, max_per_address)
        self.max_message_size = max_message_size
