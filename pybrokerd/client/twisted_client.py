"""The Twisted face of the STOMP failover client (Deferreds).

    client = StompClient("failover:(tcp://a:61613,tcp://b:61613)?randomize=false")
    yield client.connect()
    yield client.subscribe("/queue/orders", on_message, ack="client-individual")
    yield client.send("/queue/orders", b"hello", persistent=True)   # fires on the RECEIPT
    yield client.disconnect()

All state lives in :class:`pybrokerd.client.core.ClientCore`; this module only moves bytes,
runs timers and walks the failover URL's endpoints with its reconnect delays.
"""

from __future__ import annotations

import itertools
import time

from twisted.internet import defer, protocol, task
from twisted.python import failure
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger

from pybrokerd.client.core import (
    BrokerErrorFrame, ClientCore, ClientError, ConnectFailed, Connected, ConnectionLost,
    ConnectPlan, Delivered, ErrorReceived, FailoverTimeout, Receipted, TransactionInDoubt,
    TransactionRolledBack)
from pybrokerd.client.url import parse_url
from pybrokerd.protocols.stomp.codec import FrameError

log = Logger()

__all__ = ["StompClient"]


class _Link(protocol.Protocol):
    def __init__(self, client, endpoint):
        self.client = client
        self.endpoint = endpoint
        self.connected_d = defer.Deferred()  # fires on CONNECTED (or fails)
        self.last_read = self.last_write = time.monotonic()
        self.timers = []
        self.gone = False
        self.lost_d = defer.Deferred()  # fires when the socket is closed

    def connectionMade(self):
        self.client._link_made(self)

    def dataReceived(self, data):
        self.last_read = time.monotonic()
        self.client._data(self, data)

    def write(self, data):
        if data and not self.gone:
            self.last_write = time.monotonic()
            self.transport.write(data)

    def connectionLost(self, reason=None):
        self.gone = True
        for timer in self.timers:
            if timer.running:
                timer.stop()
        self.client._link_lost(self)
        self.lost_d.callback(None)


class _Factory(protocol.Factory):
    def __init__(self, client, endpoint):
        self.client = client
        self.endpoint = endpoint

    def buildProtocol(self, addr):
        return _Link(self.client, self.endpoint)


def _tls_options(endpoint, ca_file=None):
    from twisted.internet import ssl
    if ca_file:
        with open(ca_file, "rb") as f:
            authority = ssl.Certificate.loadPEM(f.read())
        return ssl.optionsForClientTLS(endpoint.host, trustRoot=authority)
    return ssl.optionsForClientTLS(endpoint.host)


class StompClient:
    """A STOMP client that fails over between the brokers of an ActiveMQ-style URL."""

    connect_timeout = 10.0  # seconds for one TCP connect + CONNECTED

    def __init__(self, url="tcp://127.0.0.1:61613", *, login=None, passcode=None,
                 client_id=None, heartbeats=(10000, 10000), dedup=True, reactor=None,
                 ca_file=None, connect_headers=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.url = parse_url(url) if isinstance(url, str) else url
        self.options = self.url.options
        self.ca_file = ca_file
        self.core = ClientCore(login=login, passcode=passcode, client_id=client_id,
                               heartbeats=heartbeats, dedup=dedup,
                               max_cache_size=self.options.max_cache_size,
                               headers=connect_headers)
        self.core.owner = self
        self.link: _Link | None = None
        self.failovers = 0             # reconnections after the first connect
        self.on_message = None         # fallback handler for messages of unknown subscriptions
        self.on_failover = []          # callables(endpoint) run after each reconnection
        self._connected_before = False
        self._failed_endpoint = None
        self._closing = False
        self._closed = False
        self._connecting = None        # Deferred of the running connect loop
        self._ready_waiters: list[defer.Deferred] = []
        self._cache_waiters: list = []
        self._tx_seq = itertools.count(1)

    # -- connecting --------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.link is not None and self.core.connected

    def connect(self) -> defer.Deferred:
        """Connect to the first broker that answers. -> Deferred firing with self."""
        self._closing = self._closed = False
        if self.connected:
            return defer.succeed(self)
        d = defer.Deferred()
        self._ready_waiters.append(d)
        self._start_loop()
        return d.addCallback(lambda _: self)

    def _start_loop(self):
        if self._connecting is not None:
            return

        def done(result):
            self._connecting = None
            if isinstance(result, failure.Failure):
                self._give_up(result.value if isinstance(result.value, ClientError)
                              else ConnectFailed(str(result.value)))
            return None
        self._connecting = self._connect_loop()
        self._connecting.addBoth(done)

    @defer.inlineCallbacks
    def _connect_loop(self):
        plan = ConnectPlan(self.url, self._connected_before, self._failed_endpoint)
        while True:
            for endpoint in plan.endpoints():
                if self._closing:
                    raise ConnectionLost("client closed while connecting")
                try:
                    link = yield self._attempt(endpoint)
                except BrokerErrorFrame as e:
                    raise plan.refused(endpoint, e) from None
                except Exception as e:
                    plan.failed(endpoint, getattr(e, "value", e) or type(e).__name__)
                    continue
                if self._connected_before:
                    self.failovers += 1
                    log.info("failover: reconnected to {host}:{port}", host=endpoint.host,
                             port=endpoint.port)
                    for hook in list(self.on_failover):
                        hook(endpoint)
                self._connected_before = True
                waiters, self._ready_waiters = self._ready_waiters, []
                for w in waiters:
                    w.callback(None)
                self._wake_cache_waiters()
                return link
            delay = plan.next_delay()
            if delay is None:
                raise plan.error()
            if plan.warning():
                log.warn("{warning}", warning=plan.warning())
            yield task.deferLater(self.reactor, delay, lambda: None)

    def _attempt(self, endpoint):
        if endpoint.scheme == "ssl":
            from twisted.internet.endpoints import wrapClientTLS
            ep = wrapClientTLS(_tls_options(endpoint, self.ca_file),
                               HostnameEndpoint(self.reactor, endpoint.host, endpoint.port,
                                                timeout=self.connect_timeout))
        else:
            ep = HostnameEndpoint(self.reactor, endpoint.host, endpoint.port,
                                  timeout=self.connect_timeout)
        d = ep.connect(_Factory(self, endpoint))

        def made(link):
            timeout = self.reactor.callLater(self.connect_timeout, link.transport.abortConnection)

            def settled(result):
                if timeout.active():
                    timeout.cancel()
                return result
            return link.connected_d.addBoth(settled)
        return d.addCallback(made)

    def _link_made(self, link):
        self.core.connection_made(link.endpoint.host)
        link.write(self.core.take_output())

    def _data(self, link, data):
        try:
            events = self.core.data_received(data)
        except FrameError as e:
            log.warn("bad frame from {host}: {error}", host=link.endpoint.host, error=e)
            link.transport.abortConnection()
            return
        for event in events:
            if isinstance(event, Connected):
                self.link = link
                self._start_heartbeats(link)
                link.write(self.core.take_output())  # the replay
                link.connected_d.callback(link)
            elif isinstance(event, Delivered):
                self._deliver(event.message)
            elif isinstance(event, Receipted):
                if isinstance(event.tag, defer.Deferred) and not event.tag.called:
                    event.tag.callback(None)
                self._wake_cache_waiters()
            elif isinstance(event, ErrorReceived):
                if not link.connected_d.called:
                    link.connected_d.errback(event.error)
                    link.transport.loseConnection()
                    continue
                if isinstance(event.receipt_tag, defer.Deferred) and not event.receipt_tag.called:
                    event.receipt_tag.errback(event.error)
                else:
                    log.warn("ERROR from the broker: {error}", error=event.error)
        out = self.core.take_output()
        if out and self.link is link:
            link.write(out)

    def _deliver(self, message):
        sub = self.core.subscriptions.get(message.subscription)
        handler = sub.handler if sub is not None and sub.handler else self.on_message
        if handler is None:
            return
        try:
            handler(message)
        except Exception:
            log.failure("message handler failed for {id}", id=message.message_id)

    def _start_heartbeats(self, link):
        core = self.core
        if core.send_interval:
            def beat():
                if time.monotonic() - link.last_write >= core.send_interval * 0.9:
                    link.write(core.heartbeat())
            timer = task.LoopingCall(beat)
            timer.clock = self.reactor
            timer.start(core.send_interval / 2, now=False)
            link.timers.append(timer)
        if core.read_timeout:
            def check():
                if time.monotonic() - link.last_read > core.read_timeout:
                    log.warn("no data nor heart-beat from {host}:{port} for {s:.1f}s: "
                             "connection considered dead", host=link.endpoint.host,
                             port=link.endpoint.port, s=core.read_timeout)
                    link.transport.abortConnection()
            timer = task.LoopingCall(check)
            timer.clock = self.reactor
            timer.start(core.read_timeout / 3, now=False)
            link.timers.append(timer)

    def _link_lost(self, link):
        if not link.connected_d.called:
            link.connected_d.errback(ConnectionLost("connection closed before CONNECTED"))
        if self.link is not link:
            return
        self.link = None
        self._failed_endpoint = link.endpoint
        for tag in self.core.connection_lost():
            if isinstance(tag, defer.Deferred) and not tag.called:
                if getattr(tag, "resolve_on_loss", False):
                    tag.callback(None)
                else:
                    tag.errback(ConnectionLost("connection lost before the broker confirmed"))
        if self._closing:
            self._closed = True
            return
        if self.url.failover:
            log.info("connection to {host}:{port} lost; failing over", host=link.endpoint.host,
                     port=link.endpoint.port)
            self._start_loop()
        else:
            self._give_up(ConnectionLost("connection to %s:%d lost" % (link.endpoint.host,
                                                                       link.endpoint.port)))

    def _give_up(self, error):
        waiters, self._ready_waiters = self._ready_waiters, []
        for w in waiters:
            w.errback(error)
        cache_waiters, self._cache_waiters = self._cache_waiters, []
        for _, w in cache_waiters:
            w.errback(error)
        for tracked in list(self.core.tracked.values()):
            if isinstance(tracked.tag, defer.Deferred) and not tracked.tag.called:
                tracked.tag.errback(error)
        self.core.tracked.clear()
        self.core.tracked_bytes = 0
        self._closed = True

    def _ready(self) -> defer.Deferred:
        """Fires when connected; fails after the failover timeout or when we give up."""
        if self.connected:
            return defer.succeed(None)
        if self._closed or (self._connecting is None and not self._connected_before):
            return defer.fail(ConnectionLost("not connected (call connect() first)"))
        d = defer.Deferred()
        self._ready_waiters.append(d)
        timeout = self.options.timeout
        if timeout > 0:
            def expire():
                if not d.called:
                    self._ready_waiters.remove(d)
                    d.errback(FailoverTimeout("Failover timeout of %d ms reached." % timeout))
            call = self.reactor.callLater(timeout / 1000.0, expire)
            d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def _flush(self):
        out = self.core.take_output()
        if out and self.link is not None:
            self.link.write(out)

    # -- operations --------------------------------------------------------------------
    def send(self, destination, body=b"", headers=None, *, persistent=False, receipt=None,
             transaction=None) -> defer.Deferred:
        """Send; fires on the broker's RECEIPT (always asked for persistent sends, which are
        then tracked and re-sent after a failover).  receipt=False: fire-and-forget."""
        if receipt is None:
            receipt = persistent or transaction is None
        if isinstance(body, str):
            body_size = len(body.encode("utf-8"))
        else:
            body_size = len(body)

        @defer.inlineCallbacks
        def go():
            yield self._ready()
            if receipt and transaction is None and (
                    self._cache_waiters or self.core.cache_full(body_size)):
                # wait in line: sends keep their order (and sequence numbers)
                w = defer.Deferred()
                self._cache_waiters.append((body_size, w))
                yield w
                yield self._ready()
            done = defer.Deferred() if receipt else None
            self.core.send(destination, body, headers, persistent=persistent, receipt=receipt,
                           transaction=transaction, tag=done)
            self._flush()
            if done is not None:
                yield done
        return go()

    def _wake_cache_waiters(self):
        """Let waiting senders go, oldest first, as long as their sends fit (each resumes
        synchronously and takes its room before the next is considered)."""
        waiters = self._cache_waiters
        while waiters and (not self.connected or not self.core.cache_full(waiters[0][0])):
            _, w = waiters.pop(0)
            w.callback(None)
            if not self.connected:
                break

    def subscribe(self, destination, handler, *, ack="auto", headers=None, id=None):
        """Subscribe; handler(message) runs for each MESSAGE.  -> Deferred firing with the
        subscription id once the broker confirmed it."""
        @defer.inlineCallbacks
        def go():
            yield self._ready()
            done = defer.Deferred()
            sub, receipt_id = self.core.subscribe(destination, ack=ack, headers=headers, id=id,
                                                  handler=handler, receipt_tag=done)
            self._flush()
            if receipt_id is not None:
                yield done
            return sub.id
        return go()

    def unsubscribe(self, sub_id) -> defer.Deferred:
        done = defer.Deferred()
        done.resolve_on_loss = True
        if self.core.unsubscribe(sub_id, receipt_tag=done) is None:
            return defer.succeed(None)
        self._flush()
        return done

    def ack(self, message, transaction=None) -> defer.Deferred:
        self.core.acknowledge(message, "ACK", transaction)
        self._flush()
        return defer.succeed(None)

    def nack(self, message, transaction=None) -> defer.Deferred:
        self.core.acknowledge(message, "NACK", transaction)
        self._flush()
        return defer.succeed(None)

    def begin(self) -> str:
        tx = "tx-%d" % next(self._tx_seq)
        if not self.connected:
            raise ConnectionLost("not connected")
        self.core.begin(tx)
        self._flush()
        return tx

    def commit(self, transaction) -> defer.Deferred:
        return self._end("COMMIT", transaction)

    def abort(self, transaction) -> defer.Deferred:
        return self._end("ABORT", transaction)

    def _end(self, command, transaction):
        done = defer.Deferred()
        if self.core.end_transaction(command, transaction, done) is None:
            return defer.fail(TransactionRolledBack(
                "transaction %s was rolled back: its connection was lost" % transaction))
        self._flush()

        def lost(failure):
            failure.trap(ConnectionLost)
            if command != "COMMIT":
                raise TransactionRolledBack("transaction %s was rolled back: its connection "
                                            "was lost" % transaction)
            raise TransactionInDoubt("the connection was lost after COMMIT of %s was sent: it "
                                     "may or may not have been committed" % transaction)
        return done.addErrback(lost)

    def disconnect(self) -> defer.Deferred:
        """Wait for every tracked send's receipt, say goodbye, close."""
        self._closing = True
        link = self.link
        if link is None:
            self._closed = True
            return defer.succeed(None)
        done = defer.Deferred()
        done.resolve_on_loss = True
        self.core.disconnect(done)
        self._flush()

        def close(_):
            if not link.gone:
                link.transport.loseConnection()
                timeout = self.reactor.callLater(5, link.transport.abortConnection)
                link.timers.append(_Canceller(timeout))
            return link.lost_d
        return done.addBoth(close)


class _Canceller:
    """Lets a pending callLater sit in a link's timers so connectionLost cancels it."""

    def __init__(self, call):
        self.call = call

    @property
    def running(self):
        return self.call.active()

    def stop(self):
        self.call.cancel()
