"""Twisted glue for OpenWire: the shared listener glue, making OpenWireConnections."""

from pybrokerd.protocols.glue import ConnectionFactory
from pybrokerd.protocols.openwire.connection import OpenWireConnection


class OpenWireFactory(ConnectionFactory):
    label = "OpenWire"

    def __init__(self, broker, ids, clock=None, max_connections=0, max_per_address=0,
                 max_frame_size=100 * 1024 * 1024, max_subscriptions=0):
        super().__init__(broker, ids, clock, max_connections, max_per_address)
        self.max_frame_size = max_frame_size
        self.max_subscriptions = max_subscriptions
        self.url = "tcp://127.0.0.1:61616"  # the listener's, once it listens (BrokerInfo)

    def make_connection(self, link, peer, refusal):
        return OpenWireConnection(
            self.broker, link, clock=self.clock, id_generator=self.ids, peer=peer,
            refusal=refusal, max_frame_size=self.max_frame_size, broker_url=self.url,
            max_subscriptions=self.max_subscriptions)
