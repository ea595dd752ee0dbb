"""STOMP client with ActiveMQ failover URLs: a blocking face for scripts and a Twisted one.

    from pybrokerd.client import connect
    with connect("failover:(tcp://a:61613,tcp://b:61613)") as c:
        c.send("/queue/x", "hello", persistent=True)

See docs/client.md.
"""

from pybrokerd.client.blocking import BlockingClient, MessageStream, connect
from pybrokerd.client.core import (
    PRODUCER_ID, PRODUCER_SEQ, BrokerErrorFrame, ClientError, ConnectFailed, ConnectionLost,
    FailoverTimeout, Message, TransactionInDoubt, TransactionRolledBack)
from pybrokerd.client.url import URLError, parse_url

__all__ = ["connect", "BlockingClient", "MessageStream", "Message", "ClientError",
           "ConnectFailed", "ConnectionLost", "FailoverTimeout", "BrokerErrorFrame",
           "URLError", "parse_url", "PRODUCER_ID", "PRODUCER_SEQ", "TransactionRolledBack",
           "TransactionInDoubt"]
