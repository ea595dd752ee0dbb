"""Twisted glue for STOMP: a Protocol that feeds bytes to a StompSession."""

from twisted.internet import interfaces, protocol
from twisted.logger import Logger
from zope.interface import implementer

from pybrokerd.protocols.limits import ConnectionLimits
from pybrokerd.protocols.stomp.codec import serialize
from pybrokerd.protocols.stomp.session import StompConfig, StompSession

log = Logger()


@implementer(interfaces.IPushProducer)
class StompProtocol(protocol.Protocol):
    session = None

    def connectionMade(self):
        factory = self.factory
        peer = self.transport.getPeer()
        self.address = getattr(peer, "host", "?")
        refusal = factory.refusal(self.address)
        if refusal is not None:
            # a clear answer instead of a silent close (ActiveMQ just drops the socket)
            log.warn("refusing a STOMP connection from {address}: {reason}",
                     address=self.address, reason=refusal)
            self.transport.write(serialize("ERROR", {"message": refusal}, (refusal + "\n").encode()))
            self.transport.loseConnection()
            return
        factory.count(self.address, +1)
        self.counted = True
        # small frames (a RECEIPT behind a stream of MESSAGEs) must not wait for the peer's
        # delayed ACK (Nagle): 40 ms per receipt otherwise
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.session = StompSession(factory.broker, self, clock=factory.clock,
                                    id_generator=factory.ids, config=factory.config)
        self.session.peer = "tcp://%s:%s" % (getattr(peer, "host", "?"), getattr(peer, "port", "?"))
        # The transport tells us when its send buffer is full: deliveries pause until it drains.
        self.transport.registerProducer(self, True)
        factory.sessions.add(self.session)

    def dataReceived(self, data):
        if self.session is not None:
            self.session.data_received(data)

    counted = False

    def connectionLost(self, reason=protocol.connectionDone):
        if self.counted:
            self.factory.count(self.address, -1)
            self.counted = False
        if self.session is not None:
            self.factory.sessions.discard(self.session)
            self.session.connection_lost()

    # link API used by the session
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.transport.loseConnection()

    def pause_reading(self) -> None:
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        self.transport.resumeProducing()

    # IPushProducer
    def pauseProducing(self):
        if self.session is not None:
            self.session.pause_writing()

    def resumeProducing(self):
        if self.session is not None:
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
        self.limits = ConnectionLimits(self.config.max_connections,
                                       self.config.max_connections_per_address)

    def refusal(self, address: str):
        return self.limits.refusal(address)

    def count(self, address: str, delta: int) -> None:
        self.limits.count(address, delta)
