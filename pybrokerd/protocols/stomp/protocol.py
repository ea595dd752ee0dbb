"""Twisted glue for STOMP: a Protocol that feeds bytes to a StompSession."""

from twisted.internet import interfaces, protocol
from twisted.logger import Logger
from zope.interface import implementer

from pybrokerd.protocols.stomp.session import StompConfig, StompSession

log = Logger()


@implementer(interfaces.IPushProducer)
class StompProtocol(protocol.Protocol):
    session = None

    def connectionMade(self):
        factory = self.factory
        self.session = StompSession(factory.broker, self, clock=factory.clock,
                                    id_generator=factory.ids, config=factory.config)
        peer = self.transport.getPeer()
        self.session.peer = "tcp://%s:%s" % (getattr(peer, "host", "?"), getattr(peer, "port", "?"))
        # The transport tells us when its send buffer is full: deliveries pause until it drains.
        self.transport.registerProducer(self, True)
        factory.sessions.add(self.session)

    def dataReceived(self, data):
        self.session.data_received(data)

    def connectionLost(self, reason=protocol.connectionDone):
        if self.session is not None:
            self.factory.sessions.discard(self.session)
            self.session.connection_lost()

    # link API used by the session
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.transport.loseConnection()

    # IPushProducer
    def pauseProducing(self):
        self.session.pause_writing()

    def resumeProducing(self):
        self.session.resume_writing()

    def stopProducing(self):
        pass


class StompFactory(protocol.Factory):
    protocol = StompProtocol
    noisy = False

    def __init__(self, broker, ids, clock=None, config: StompConfig | None = None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.broker = broker
        self.ids = ids
        self.clock = clock
        self.config = config or StompConfig()
        self.sessions = set()
