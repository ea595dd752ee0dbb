"""BrokerService: starts the pieces in the order ARCHITECTURE.md gives, stops them in reverse."""

import gc
import os

from twisted.application import service
from twisted.internet import defer, endpoints, task
from twisted.logger import Logger

from pybrokerd import __version__
from pybrokerd.broker.core import Broker
from pybrokerd.broker.message import IdGenerator
from pybrokerd.broker.usage import human
from pybrokerd.ha.locker import FileLocker, LeaseLocker
from pybrokerd.protocols.stomp.codec import Limits
from pybrokerd.protocols.stomp.protocol import StompFactory
from pybrokerd.protocols.stomp.session import StompConfig
from stores import registry

log = Logger()


def _freeze_startup_heap():
    """Set what start-up made (modules, classes, functions: some 50,000 objects that live
    until exit) aside from Python's cyclic garbage collector.  Its full collection walks
    every object it tracks: those alone made it a pause of about 10 ms, felt by every client
    as a latency spike several times a minute under load.  Objects freed by reference count
    are freed as ever; only a cycle among these would never be collected.

    The youngest generation is collected every 10,000 allocations instead of 700: nearly
    every object of a message's path is freed by its reference count long before, so the
    frequent collections found little and cost 4-5 % of a non-persistent message's CPU."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10000, 10, 10)


class BrokerService(service.Service):
    def __init__(self, options, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.options = options
        self.reactor = reactor
        self.store = None
        self.scheduler_store = None
        self.scheduler = None
        self.broker = None
        self.ports = []
        self.stomp_factory = None
        self.amqp_factory = None
        self.openwire_factory = None
        self.admin_port = None
        self.locker = None
        self._acquiring = None
        self._keep_alive = None
        self._lock_lost = False
        self.ready = defer.Deferred()  # fires with self once the listeners are open

    def startService(self):
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._failed_to_start)

    def _make_locker(self):
        opts = self.options
        if opts["locker"] == "file":
            return FileLocker(opts["dir"], opts["broker-name"], retry=opts["lock-retry"],
                              clock=self.reactor)
        if opts["locker"] == "lease":
            locker = LeaseLocker(opts["dir"], opts["broker-name"], duration=opts["lease-duration"],
                                 retry=opts["lock-retry"], clock=self.reactor)
            locker.lost = self._lost_lock
            return locker
        return None

    async def _start(self):
        opts = self.options
        log.info("pybrokerd {version} starting: broker={name} store={store} dir={dir}",
                 version=__version__, name=opts["broker-name"], store=opts["store"], dir=opts["dir"])
        for line in getattr(opts, "config_report", None) or []:
            (log.warn if line.startswith("NOT") else log.info)(
                "--config {path}: {line}", path=opts["config"], line=line)
        os.makedirs(opts["dir"], exist_ok=True)
        # 0. the admin HTTP listener: a slave answers health checks with its role too
        admin = opts.get("admin") or "none"
        if admin.lower() != "none":
            from twisted.web import server as web_server
            from pybrokerd.admin.api import AdminResource
            site = web_server.Site(AdminResource(self, admin_group=opts.get("admin-group",
                                                                            "admins")))
            site.noisy = False
            site.log = lambda request: None  # no access log line per request
            self.admin_port = await self._listen_optional("admin", "admin HTTP", admin, site)
            if self.admin_port is not None:
                log.info("admin HTTP listening on {address}", address=_address(self.admin_port))
        # 1. the lock: a slave waits here and has opened nothing else
        self.locker = self._make_locker()
        if self.locker is not None:
            self._acquiring = self.locker.acquire()
            try:
                await self._acquiring
            except defer.CancelledError:
                return  # stopped while waiting as a slave
            finally:
                self._acquiring = None
            if opts["lock-check"] > 0:
                self._keep_alive = task.LoopingCall(self._check_lock)
                self._keep_alive.clock = self.reactor
                self._keep_alive.start(opts["lock-check"], now=False)
        # 2. the store (recovery happens here), 3. the broker, 4. the listeners
        adapter_class = registry.load(opts["store"])
        _freeze_startup_heap()
        self.store = adapter_class(opts["dir"], sync=opts["sync"], reactor=self.reactor,
                                   ack_wait=opts.get("ack-wait", 5.0) / 1000.0)
        await self.store.open()
        self.broker = Broker(self.store, clock=self.reactor, name=opts["broker-name"],
                             prioritized=bool(opts["prioritized-messages"]),
                             max_redeliveries=opts["max-redeliveries"],
                             page_size=opts["page-size"],
                             redelivery_delay=opts["redelivery-delay"],
                             redelivery_backoff=opts["redelivery-backoff"])
        self.broker.topic_pending_limit = opts.get("topic-pending-limit", 10000)
        self._configure_flow_control(opts)
        security = getattr(opts, "security", None)
        if security is not None:
            self.broker.security = security
            log.info("security: {users} user(s); anonymous clients {anonymous}; authorization "
                     "{authz}", users=len(security.users),
                     anonymous="allowed" if security.anonymous else "refused",
                     authz=("%d entries" % len(security.entries)) if security.entries is not None
                     else "off (every client may do everything)")
        await self.broker.start()
        data_dir = opts.get("data-dir") or opts["dir"]
        self.broker.management.data_directory = os.path.realpath(data_dir)
        if opts.get("delete-all-messages-on-startup"):
            await self._delete_all_messages()
        # 3. the scheduler, on its own store of the same kind in --scheduler-dir
        if opts.get("scheduler-support", True):
            from scheduler.scheduler import Scheduler
            os.makedirs(opts["scheduler-dir"], exist_ok=True)
            self.scheduler_store = adapter_class(opts["scheduler-dir"], sync=opts["sync"],
                                                 reactor=self.reactor)
            await self.scheduler_store.open()
            self.scheduler = Scheduler(self.broker, self.scheduler_store, clock=self.reactor)
            self.broker.scheduler = self.scheduler
            self.broker.flow.scheduler.measure = self.scheduler_store.stored_bytes
            await self.scheduler.start()
        else:
            log.info("scheduler support is off: AMQ_SCHEDULED_* headers are ignored")
        config = StompConfig(
            limits=Limits(max_command_length=opts["max-command-length"],
                          max_header_length=opts["max-header-length"],
                          max_headers=opts["max-headers"],
                          max_body_length=opts["max-body-length"]),
            heartbeat_grace=opts["heartbeat-grace"], connect_timeout=opts["connect-timeout"],
            max_connections=opts.get("max-connections", 1000),
            max_connections_per_address=opts.get("max-connections-per-address", 0),
            max_subscriptions=opts.get("max-subscriptions", 0))
        ids = IdGenerator()
        # one factory for every STOMP listener (TCP, TLS, WebSocket): the connection limits
        # count them together
        ws = opts.get("stomp-ws") or "none"
        if any((a or "none").lower() != "none"
               for a in (opts["stomp"], opts.get("stomp-ssl"), ws)):
            self.stomp_factory = StompFactory(self.broker, ids, clock=self.reactor, config=config)
        for label, address in (("STOMP", opts["stomp"]), ("STOMP+SSL", opts.get("stomp-ssl"))):
            if (address or "none").lower() == "none":
                continue
            endpoint = endpoints.serverFromString(self.reactor, address)
            client_ca = opts.get("stomp-ssl-client-ca") or opts.get("ssl-client-ca")
            if client_ca and address.lower().startswith("ssl:"):
                _require_client_certificates(endpoint, client_ca)
            port = await endpoint.listen(self.stomp_factory)
            self.ports.append(port)
            log.info("{label} listening on {address}", label=label, address=_address(port))
            scheme = "stomp+ssl" if address.lower().startswith("ssl:") else "stomp"
            self.broker.management.connectors[scheme] = "%s://%s" % (scheme, _address(port))
        if ws.lower() != "none":
            from pybrokerd.protocols.stomp.protocol import WebSocketFactory
            port = await self._listen_optional("stomp-ws", "STOMP over WebSocket", ws,
                                               WebSocketFactory(self.stomp_factory))
            if port is not None:
                self.ports.append(port)
                log.info("STOMP over WebSocket listening on {address}", address=_address(port))
                scheme = "wss" if ws.lower().startswith("ssl:") else "ws"
                self.broker.management.connectors[scheme] = "%s://%s" % (scheme, _address(port))
        amqp = opts.get("amqp") or "none"
        if amqp.lower() != "none":
            from pybrokerd.protocols.amqp.protocol import AmqpFactory
            self.amqp_factory = AmqpFactory(
                self.broker, ids, clock=self.reactor,
                max_connections=opts.get("max-connections", 1000),
                max_per_address=opts.get("max-connections-per-address", 0),
                max_message_size=opts.get("max-body-length", 0))
            port = await self._listen_optional("amqp", "AMQP", amqp, self.amqp_factory)
            if port is not None:
                self.ports.append(port)
                log.info("AMQP listening on {address}", address=_address(port))
                scheme = "amqp+ssl" if amqp.lower().startswith("ssl:") else "amqp"
                self.broker.management.connectors[scheme] = "%s://%s" % (scheme, _address(port))
        openwire = opts.get("openwire") or "none"
        if openwire.lower() != "none":
            from pybrokerd.protocols.openwire.protocol import OpenWireFactory
            body_limit = opts.get("max-body-length", 0) or 0
            self.openwire_factory = OpenWireFactory(
                self.broker, ids, clock=self.reactor,
                max_connections=opts.get("max-connections", 1000),
                max_per_address=opts.get("max-connections-per-address", 0),
                max_frame_size=body_limit + 65536 if body_limit else 100 * 1024 * 1024,
                max_subscriptions=opts.get("max-subscriptions", 0) or 0)
            port = await self._listen_optional("openwire", "OpenWire", openwire,
                                               self.openwire_factory)
            if port is not None:
                self.ports.append(port)
                log.info("OpenWire listening on {address}", address=_address(port))
                scheme = "ssl" if openwire.lower().startswith("ssl:") else "tcp"
                self.openwire_factory.url = "%s://%s" % (scheme, _address(port))
                # ActiveMQ's statistics name a TLS OpenWire connector "ssl"
                key = "ssl" if scheme == "ssl" else "openwire"
                self.broker.management.connectors[key] = self.openwire_factory.url
        self.ready.callback(self)

    async def _listen_optional(self, option, label, address, factory):
        """Listen; a listener left at its default whose port is taken (a second broker on
        the same host, started for its STOMP port) is skipped with a warning instead of
        stopping the broker.  One asked for explicitly must open, as STOMP must.  An ssl:
        listener demands client certificates under --ssl-client-ca."""
        from twisted.internet.error import CannotListenError
        endpoint = endpoints.serverFromString(self.reactor, address)
        client_ca = self.options.get("ssl-client-ca")
        if client_ca and address.lower().startswith("ssl:") and option != "admin":
            _require_client_certificates(endpoint, client_ca)
        try:
            return await endpoint.listen(factory)
        except CannotListenError as e:
            default = _default_of(option)
            if address != default:
                raise
            log.warn("{label} listener not started: {address} is not free ({error}); set "
                     "--{option}=... to another address, or --{option}=none", label=label,
                     address=address, error=e.socketError, option=option)
            return None

    def _configure_flow_control(self, opts):
        flow = self.broker.flow
        flow.memory.limit = opts.get("memory-limit", 0) or 0
        flow.store.limit = opts.get("store-limit", 0) or 0
        flow.scheduler.limit = opts.get("scheduler-limit", 0) or 0
        flow.send_fail_timeout = opts.get("send-fail-timeout", 30.0)
        if flow.store.limit and self.store.durable:
            # as ActiveMQ: a limit the disk cannot hold is lowered to what it can
            try:
                st = os.statvfs(opts["dir"])
            except OSError:
                return
            room = st.f_bavail * st.f_frsize + flow.store.current()
            if room < flow.store.limit:
                log.warn("--store-limit {limit} exceeds what the disk under {dir} can hold; "
                         "lowered to {room}", limit=human(flow.store.limit), dir=opts["dir"],
                         room=human(room))
                flow.store.limit = room
        log.info("flow control: memory {memory}, store {store}, scheduler {scheduler}; a "
                 "blocked send fails after {timeout}", memory=_limit(flow.memory),
                 store=_limit(flow.store), scheduler=_limit(flow.scheduler),
                 timeout=("%g s" % flow.send_fail_timeout) if flow.send_fail_timeout >= 0
                 else "never")

    def _check_lock(self):
        if not self.locker.keep_alive():
            self._lost_lock("the lock file %s is gone, replaced or names another holder"
                            % self.locker.path)

    def _lost_lock(self, reason):
        """Another broker may be master now: stop serving and writing at once, exit non-zero."""
        if self._lock_lost:
            return
        self._lock_lost = True
        log.critical("lost the lock on {dir} ({reason}); stopping", dir=self.options["dir"],
                     reason=reason)
        for port in self.ports:
            port.stopListening()
        self.ports = []
        self._abort_connections()
        for store in (self.store, self.scheduler_store):
            if store is not None:
                store.abandon()
        self.reactor.callLater(0.1, os._exit, 3)

    async def _delete_all_messages(self):
        broker = self.broker
        purged = 0
        for queue in list(broker.queues.values()):
            purged += await broker.management.purge_queue(queue)
        subs = list(broker.durable.values())
        for sub in subs:
            await broker.remove_durable(*sub.durable_key)
        log.warn("--delete-all-messages-on-startup: deleted {n} messages and {s} durable "
                 "subscriptions", n=purged, s=len(subs))

    @defer.inlineCallbacks
    def _close_connections(self, grace=2.0):
        """On a stop: STOMP connections answer what they still owe and close cleanly (a
        FIN, as ActiveMQ); whatever is still open after `grace` seconds, and every other
        protocol's connection, is aborted."""
        factories = self._factories()
        for factory in factories:
            for connection in list(factory.connections):
                shutdown = getattr(connection, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                else:
                    connection.link.transport.abortConnection()
        deadline = self.reactor.seconds() + grace
        while any(f.connections for f in factories) and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        self._abort_connections()

    def _abort_connections(self):
        for factory in self._factories():
            for connection in list(factory.connections):
                connection.link.transport.abortConnection()

    def _factories(self):
        return [f for f in (self.stomp_factory, self.amqp_factory, self.openwire_factory)
                if f is not None]

    def _failed_to_start(self, failure):
        log.failure("pybrokerd failed to start", failure)
        if not self.ready.called:
            self.ready.errback(failure)
            self.ready.addErrback(lambda f: None)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self):
        if not self.options.get("use-shutdown-hook", True):
            # as an ActiveMQ started with useShutdownHook="false": no orderly stop
            log.warn("--use-shutdown-hook=false: exiting without stopping the broker")
            os._exit(0)
        super().stopService()
        if self._acquiring is not None:
            self._acquiring.cancel()
        if self._keep_alive is not None and self._keep_alive.running:
            self._keep_alive.stop()
        for port in self.ports:
            yield port.stopListening()
        self.ports = []
        yield self._close_connections()
        if self.broker is not None:
            self.broker.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if not self._lock_lost:
            for store in (self.scheduler_store, self.store):
                if store is not None:
                    yield store.close()
        # only now, with the store closed, may the next master open it
        if self.locker is not None and not self._lock_lost:
            yield self.locker.release()
        if self.admin_port is not None:
            yield self.admin_port.stopListening()
            self.admin_port = None
        log.info("pybrokerd stopped")


def _default_of(option):
    from pybrokerd.options import Options
    return Options()[option]


def _limit(usage):
    return human(usage.limit) if usage.limit else "no limit"


def _address(port):
    host = port.getHost()
    return "%s:%s" % (getattr(host, "host", "?"), getattr(host, "port", "?"))


def make_service(options, reactor=None):
    return BrokerService(options, reactor)


def _require_client_certificates(endpoint, ca_file):
    """Make a Twisted ssl: server endpoint demand a client certificate signed by a CA in
    ca_file (its endpoint string has no option for that)."""
    from OpenSSL import crypto
    from twisted.internet import ssl
    with open(ca_file, "rb") as f:
        pem = f.read()
    cas = []
    marker = b"-----END CERTIFICATE-----"
    for chunk in pem.split(marker)[:-1]:
        cas.append(crypto.load_certificate(crypto.FILETYPE_PEM, chunk + marker))
    if not cas:
        raise ValueError("no CA certificate in %s (--ssl-client-ca, --stomp-ssl-client-ca)"
                         % ca_file)
    original = endpoint._sslContextFactory  # the CertificateOptions made from the string
    endpoint._sslContextFactory = ssl.CertificateOptions(
        privateKey=original.privateKey, certificate=original.certificate,
        extraCertChain=getattr(original, "extraCertChain", None), verify=True, caCerts=cas,
        requireCertificate=True)

