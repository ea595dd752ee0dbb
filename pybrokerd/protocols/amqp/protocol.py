"""Twisted glue for AMQP 1.0: the shared listener glue, making AmqpConnections."""

from pybrokerd.protocols.amqp.connection import AmqpConnection
from pybrokerd.protocols.glue import ConnectionFactory


class AmqpFactory(ConnectionFactory):
    label = "AMQP"

    def __init__(self, broker, ids, clock=None, max_connections=0, max_per_address=0,
                 max_message_size=0):
        super().__init__(broker, ids, clock, max_connections, max_per_address)
        self.max_message_size = max_message_size

    def make_connection(self, link, peer, refusal):
        return AmqpConnection(self.broker, link, clock=self.clock, id_generator=self.ids,
                              peer=peer, refusal=refusal, max_message_size=self.max_message_size)
