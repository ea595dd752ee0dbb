"""Twisted glue for STOMP: the shared connection glue, making a StompSession per socket."""

from pybrokerd.protocols.glue import ConnectionFactory
from pybrokerd.protocols.stomp.codec import serialize
from pybrokerd.protocols.stomp.session import StompConfig, StompSession


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
