"""pybrokerd: a message broker on Twisted that speaks STOMP like ActiveMQ Classic."""

__version__ = "0.1.0"
