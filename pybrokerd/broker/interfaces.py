"""What the broker core needs from a protocol session that consumes messages."""

from zope.interface import Attribute, Interface


class IConsumerSession(Interface):
    """Implemented by every protocol's session (STOMP now; AMQP and OpenWire later).

    The broker's Consumer objects (one per subscription) call these; nothing else about the
    protocol reaches the core.
    """

    writable = Attribute("False while the connection's send buffer is full: no deliveries then")
    protocol = Attribute("its protocol's name: 'stomp', 'amqp' (the admin API and metrics)")
    subscriptions = Attribute("its consumers, keyed by subscription id or link name")

    def next_ack_id():
        """A new delivery tag, unique on this connection."""

    def deliver(consumer, message, ack_id):
        """Send one message to the client for `consumer` (ack_id is None for a browser)."""
