"""The blocking face of the STOMP failover client, for scripts.

    from pybrokerd.client import connect

    with connect("failover:(tcp://a:61613,tcp://b:61613)") as c:
        c.send("/queue/orders", "hello", persistent=True)      # returns after the RECEIPT
        for message in c.subscribe("/queue/orders", ack="client-individual"):
            print(message.text)
            message.ack()

One background thread per client owns the socket's reading side, the heart-beats and the
failover; the application's threads call in freely.  Over TLS every call into the socket's
SSL object is made under one lock: OpenSSL does not allow an SSL_read in one thread while
another thread is in SSL_write on the same connection (records come out corrupted, the broker
drops the connection, the process may even crash), so the reader waits for data outside the
lock and then reads under it without blocking.  State is the same sans-I/O
:class:`~pybrokerd.client.core.ClientCore` the Twisted face uses.
"""

from __future__ import annotations

import itertools
import logging
import queue
import select
import socket
import ssl
import threading
import time

from pybrokerd.client.core import (
    BrokerErrorFrame, ClientCore, ClientError, Connected, ConnectionLost, ConnectPlan,
    Delivered, ErrorReceived, FailoverTimeout, Receipted, TransactionInDoubt,
    TransactionRolledBack)
from pybrokerd.client.url import parse_url
from pybrokerd.protocols.stomp.codec import FrameError

__all__ = ["connect", "BlockingClient", "MessageStream"]

_log = logging.getLogger("pybrokerd.client")

_END = object()


class _Waiter:
    __slots__ = ("event", "error", "resolve_on_loss", "detached")

    def __init__(self):
        self.event = threading.Event()
        self.error = None
        self.resolve_on_loss = False
        self.detached = False   # nobody waits on it: an error is reported by flush()

    def done(self, error=None):
        self.error = error
        self.event.set()

    def wait(self, timeout=None):
        if not self.event.wait(timeout):
            raise FailoverTimeout("no answer from the broker within %.1f s" % timeout)
        if self.error is not None:
            raise self.error


class MessageStream:
    """The messages of one subscription: iterate, or call :meth:`receive`."""

    def __init__(self, client, sub_id):
        self.client = client
        self.id = sub_id
        self.queue: queue.Queue = queue.Queue()

    def receive(self, timeout=None):
        """The next message, or None after `timeout` seconds (None: wait for ever)."""
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self.queue.put(_END)
            return None
        if isinstance(item, Exception):
            self.queue.put(item)
            raise item
        return item

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _END:
                self.queue.put(_END)
                return
            if isinstance(item, Exception):
                self.queue.put(item)
                raise item
            yield item

    def unsubscribe(self):
        self.client.unsubscribe(self.id)


class BlockingClient:
    connect_timeout = 10.0   # seconds for one TCP connect + CONNECTED
    answer_timeout = None    # seconds to wait for a receipt once connected (None: for ever)

    def __init__(self, url="tcp://127.0.0.1:61613", *, login=None, passcode=None,
                 client_id=None, heartbeats=(10000, 10000), dedup=True, ca_file=None,
                 cert_file=None, key_file=None, connect_headers=None):
        self.url = parse_url(url) if isinstance(url, str) else url
        self.options = self.url.options
        self.ca_file = ca_file
        self.cert_file, self.key_file = cert_file, key_file  # a client certificate, for ssl://
        self.core = ClientCore(login=login, passcode=passcode, client_id=client_id,
                               heartbeats=heartbeats, dedup=dedup,
                               max_cache_size=self.options.max_cache_size,
                               headers=connect_headers)
        self.core.owner = self
        self.failovers = 0
        self.endpoint = None          # the broker we are connected to
        self._lock = threading.Condition(threading.RLock())
        self._write_lock = threading.Lock()
        self._ssl_lock = threading.Lock()  # held for every read and write of an ssl:// socket
        self._sock = None
        self._thread = None
        self._closing = False
        self._failed: Exception | None = None
        self._connected_before = False
        self._failed_endpoint = None
        self._streams: dict[str, MessageStream] = {}
        self._tx_seq = itertools.count(1)
        self._last_write = time.monotonic()
        self.async_errors: list = []  # ERROR frames nobody waited for (raised by flush)

    # -- context manager ---------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.disconnect()
        return False

    # -- connecting --------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None and self.core.connected

    def connect(self) -> "BlockingClient":
        """Connect (walking the failover URL); raise ConnectFailed if no broker answers."""
        with self._lock:
            self._closing = False
            self._failed = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pybroker-client",
                                                daemon=True)
                self._thread.start()
            self._wait_connected(for_startup=True)
        return self

    def _wait_connected(self, for_startup=False):
        """Block (holding nothing) until connected; honours the failover timeout."""
        timeout = self.options.timeout
        deadline = None if timeout <= 0 or for_startup else time.monotonic() + timeout / 1000.0
        with self._lock:
            while not self.connected:
                if self._failed is not None:
                    raise self._failed
                if self._closing and not for_startup:
                    raise ConnectionLost("client is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FailoverTimeout("Failover timeout of %d ms reached." % timeout)
                self._lock.wait(remaining if remaining is not None else 1.0)

    def _run(self):
        try:
            while not self._closing:
                sock, endpoint = self._connect_once()
                self._read_loop(sock, endpoint)
                self._failed_endpoint = endpoint
                if self._closing:
                    break
                if not self.url.failover:
                    raise ConnectionLost("connection to %s:%d lost" % (endpoint.host, endpoint.port))
        except ClientError as e:
            self._give_up(e)
        except Exception as e:  # pragma: no cover - a bug; never leave callers hanging
            self._give_up(ClientError("client thread failed: %r" % (e,)))
        finally:
            with self._lock:
                self._thread = None
                for stream in self._streams.values():
                    stream.queue.put(_END)
                self._lock.notify_all()

    def _connect_once(self):
        plan = ConnectPlan(self.url, self._connected_before, self._failed_endpoint)
        while True:
            for endpoint in plan.endpoints():
                if self._closing:
                    raise ConnectionLost("client closed while connecting")
                try:
                    sock = self._open(endpoint)
                except BrokerErrorFrame as e:
                    raise plan.refused(endpoint, e) from None
                except (OSError, ClientError, FrameError) as e:
                    plan.failed(endpoint, e)
                    continue
                with self._lock:
                    if self._connected_before:
                        self.failovers += 1
                    self._connected_before = True
                    self.endpoint = endpoint
                    self._lock.notify_all()
                return sock, endpoint
            delay = plan.next_delay()
            if delay is None:
                raise plan.error()
            if plan.warning():
                _log.warning("%s", plan.warning())
            time.sleep(delay)

    def _open(self, endpoint):
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.scheme == "ssl":
                context = ssl.create_default_context(cafile=self.ca_file)
                if self.cert_file:
                    context.load_cert_chain(self.cert_file, self.key_file)
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
            with self._lock:
                self.core.connection_made(endpoint.host)
                hello = self.core.take_output()
            self._sendall(sock, hello)
            deadline = time.monotonic() + self.connect_timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError("no CONNECTED frame within %.0f s" % self.connect_timeout)
                sock.settimeout(remaining)
                data = self._recv(sock)
                if data is None:
                    continue  # TLS: nothing (or half a record) within the timeout
                if not data:
                    raise ClientError("connection closed before CONNECTED")
                with self._lock:
                    events = self.core.data_received(data)
                    for event in events:
                        if isinstance(event, ErrorReceived):
                            raise event.error
                    if self.core.connected:
                        self._sock = sock
                        self._last_write = time.monotonic()
                        self._lock.notify_all()
                        rest = [e for e in events if not isinstance(e, Connected)]
                        break
            self._handle(rest)
            self._flush()  # the replay: subscriptions and unreceipted sends
            return sock
        except BaseException:
            with self._lock:
                if self._sock is sock:
                    self._sock = None
            sock.close()
            raise

    def _recv(self, sock):
        """What the socket has, waiting up to its timeout: bytes, b"" (closed), or None or
        socket.timeout if nothing came.  A TLS socket is waited on outside the SSL lock and
        then read under it without blocking, so that no write runs inside OpenSSL at the
        same time (and a write never waits for a read)."""
        if not isinstance(sock, ssl.SSLSocket):
            return sock.recv(65536)
        timeout = sock.gettimeout()
        with self._ssl_lock:
            buffered = sock.pending()
        if not buffered:
            poller = select.poll()  # (no file descriptor of its own, unlike epoll)
            poller.register(sock, select.POLLIN)
            if not poller.poll(None if timeout is None else timeout * 1000):
                return None
        with self._ssl_lock:
            sock.settimeout(0.0)
            try:
                return sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None  # part of a record: the rest comes later
            finally:
                sock.settimeout(timeout)

    def _sendall(self, sock, data):
        if isinstance(sock, ssl.SSLSocket):
            with self._ssl_lock:
                sock.sendall(data)
        else:
            sock.sendall(data)

    def _read_loop(self, sock, endpoint):
        core = self.core
        last_read = time.monotonic()
        tick = [t for t in (core.send_interval / 2, core.read_timeout / 3) if t > 0]
        sock.settimeout(min(tick + [1.0]))
        try:
            while not self._closing or self.connected:
                try:
                    data = self._recv(sock)
                except socket.timeout:
                    data = None
                except OSError:
                    break
                now = time.monotonic()
                if data == b"":
                    break
                if data:
                    last_read = now
                    try:
                        with self._lock:
                            events = core.data_received(data)
                    except FrameError:
                        break
                    self._handle(events)
                elif core.read_timeout and now - last_read > core.read_timeout:
                    break  # the broker went silent: dead
                if core.send_interval and now - self._last_write >= core.send_interval * 0.9:
                    self._write(core.heartbeat())
                self._flush()
        finally:
            with self._lock:
                self._sock = None
                lost = core.connection_lost()
                self._lock.notify_all()
            for tag in lost:
                if isinstance(tag, _Waiter):
                    tag.done(None if getattr(tag, "resolve_on_loss", False) else
                             ConnectionLost("connection lost before the broker confirmed"))
            try:
                sock.close()
            except OSError:
                pass

    def _handle(self, events):
        for event in events:
            if isinstance(event, Delivered):
                stream = self._streams.get(event.message.subscription)
                if stream is not None:
                    stream.queue.put(event.message)
            elif isinstance(event, Receipted):
                if isinstance(event.tag, _Waiter):
                    event.tag.done()
                with self._lock:
                    self._lock.notify_all()
            elif isinstance(event, ErrorReceived):
                tag = event.receipt_tag
                if isinstance(tag, _Waiter):
                    tag.done(event.error)
                if not isinstance(tag, _Waiter) or tag.detached:
                    with self._lock:
                        self.async_errors.append(event.error)
                with self._lock:
                    self._lock.notify_all()


    def _give_up(self, error):
        with self._lock:
            self._failed = error
            tags = [t.tag for t in self.core.tracked.values()]
            self.core.tracked.clear()
            self.core.tracked_bytes = 0
            self._lock.notify_all()
        for tag in tags:
            if isinstance(tag, _Waiter):
                tag.done(error)
        for stream in list(self._streams.values()):
            stream.queue.put(error)

    def _write(self, data):
        with self._write_lock:
            sock = self._sock
            if sock is not None and data:
                try:
                    self._sendall(sock, data)
                    self._last_write = time.monotonic()
                except OSError:
                    pass  # the reader notices the dead socket and fails over

    def _flush(self):
        with self._write_lock:
            with self._lock:
                data = self.core.take_output()
                sock = self._sock
            if sock is not None and data:
                try:
                    self._sendall(sock, data)
                    self._last_write = time.monotonic()
                except OSError:
                    pass

    def _check(self):
        if self._failed is not None:
            raise self._failed
        if self._thread is None and not self.connected:
            raise ConnectionLost("not connected (call connect() first)")

    # -- operations --------------------------------------------------------------------
    def send(self, destination, body=b"", headers=None, *, persistent=False, wait=True,
             receipt=None, transaction=None):
        """Send a message.  With a receipt (the default, except in a transaction) it is
        tracked until the broker confirms it and re-sent after a failover; wait=False
        returns as soon as it is written (call :meth:`flush` later)."""
        self._check()
        if receipt is None:
            receipt = transaction is None
        body_size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
        waiter = _Waiter() if receipt else None
        if waiter is not None:
            waiter.detached = not wait
        self._wait_connected()
        with self._lock:
            while receipt and transaction is None and self.core.cache_full(body_size):
                self._check()
                self._lock.wait(1.0)
            self.core.send(destination, body, headers, persistent=persistent, receipt=receipt,
                           transaction=transaction, tag=waiter)
        self._flush()
        if waiter is not None and wait:
            waiter.wait(self.answer_timeout)

    def flush(self, timeout=None):
        """Wait until every tracked send has its receipt; raise the first ERROR the broker
        sent for a send nobody waited for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.core.tracked or self.async_errors:
                if self.async_errors:
                    error = self.async_errors.pop(0)
                    raise error
                self._check()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FailoverTimeout("%d sends still unconfirmed after %.1f s"
                                          % (len(self.core.tracked), timeout))
                self._lock.wait(min(remaining, 1.0) if remaining is not None else 1.0)

    @property
    def unconfirmed(self) -> int:
        return len(self.core.tracked)

    def subscribe(self, destination, *, ack="auto", headers=None, id=None) -> MessageStream:
        """Subscribe; -> a MessageStream to iterate (after the broker confirmed it)."""
        self._check()
        self._wait_connected()
        waiter = _Waiter()
        with self._lock:
            sub, receipt_id = self.core.subscribe(destination, ack=ack, headers=headers, id=id,
                                                  receipt_tag=waiter)
            stream = self._streams[sub.id] = MessageStream(self, sub.id)
        self._flush()
        if receipt_id is not None:
            try:
                waiter.wait(self.answer_timeout)
            except ConnectionLost:
                pass  # re-subscribed by the failover
            except BrokerErrorFrame:
                with self._lock:
                    self.core.subscriptions.pop(sub.id, None)
                    self._streams.pop(sub.id, None)
                raise
        return stream

    def unsubscribe(self, sub_id):
        waiter = _Waiter()
        waiter.resolve_on_loss = True
        with self._lock:
            receipt_id = self.core.unsubscribe(sub_id, receipt_tag=waiter)
            stream = self._streams.pop(sub_id, None)
        if stream is not None:
            stream.queue.put(_END)
        self._flush()
        if receipt_id is not None:
            waiter.wait(self.answer_timeout)

    def ack(self, message, transaction=None):
        with self._lock:
            self.core.acknowledge(message, "ACK", transaction)
        self._flush()

    def nack(self, message, transaction=None):
        with self._lock:
            self.core.acknowledge(message, "NACK", transaction)
        self._flush()

    def begin(self) -> str:
        self._check()
        self._wait_connected()
        tx = "tx-%d" % next(self._tx_seq)
        with self._lock:
            self.core.begin(tx)
        self._flush()
        return tx

    def commit(self, transaction):
        self._end("COMMIT", transaction)

    def abort(self, transaction):
        self._end("ABORT", transaction)

    def _end(self, command, transaction):
        waiter = _Waiter()
        with self._lock:
            receipt_id = self.core.end_transaction(command, transaction, waiter)
        if receipt_id is None:
            raise TransactionRolledBack("transaction %s was rolled back: its connection was lost"
                                        % transaction)
        self._flush()
        try:
            waiter.wait(self.answer_timeout)
        except ConnectionLost:
            if command != "COMMIT":
                raise TransactionRolledBack("transaction %s was rolled back: its connection "
                                            "was lost" % transaction) from None
            raise TransactionInDoubt("the connection was lost after COMMIT of %s was sent: it "
                                     "may or may not have been committed" % transaction) from None

    def disconnect(self, timeout=30.0):
        """Wait (up to `timeout` s) for unconfirmed sends, say goodbye and close."""
        if self._thread is None and self._sock is None:
            return
        try:
            if self._failed is None:
                self.flush(timeout)
        except ClientError:
            pass
        finally:
            waiter = _Waiter()
            waiter.resolve_on_loss = True
            with self._lock:
                self._closing = True
                receipt_id = self.core.disconnect(waiter)
            self._flush()
            if receipt_id is not None:
                try:
                    waiter.wait(5.0)
                except ClientError:
                    pass
            with self._lock:
                sock = self._sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(5.0)

    close = disconnect


def connect(url="tcp://127.0.0.1:61613", **kwargs) -> BlockingClient:
    """A connected BlockingClient (use it as a context manager)."""
    return BlockingClient(url, **kwargs).connect()
