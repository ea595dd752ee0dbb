"""BrokerService: starts the pieces in the order ARCHITECTURE.md gives, stops them in reverse."""

import os

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from pybrokerd import __version__
from pybrokerd.broker.core import Broker
from pybrokerd.broker.message import IdGenerator
from pybrokerd.protocols.stomp.codec import Limits
from pybrokerd.protocols.stomp.protocol import StompFactory
from pybrokerd.protocols.stomp.session import StompConfig
from stores import registry

log = Logger()


class BrokerService(service.Service):
    def __init__(self, options, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.options = options
        self.reactor = reactor
        self.store = None
        self.broker = None
        self.ports = []
        self.stomp_factory = None
        self.ready = defer.Deferred()  # fires with self once the listeners are open

    def startService(self):
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._failed_to_start)

    async def _start(self):
        opts = self.options
        log.info("pybrokerd {version} starting: broker={name} store={store} dir={dir}",
                 version=__version__, name=opts["broker-name"], store=opts["store"], dir=opts["dir"])
        os.makedirs(opts["dir"], exist_ok=True)
        adapter_class = registry.load(opts["store"])
        self.store = adapter_class(opts["dir"], sync=opts["sync"], reactor=self.reactor)
        await self.store.open()
        self.broker = Broker(self.store, clock=self.reactor, name=opts["broker-name"],
                             prioritized=bool(opts["prioritized-messages"]),
                             max_redeliveries=opts["max-redeliveries"])
        await self.broker.start()
        config = StompConfig(
            limits=Limits(max_command_length=opts["max-command-length"],
                          max_header_length=opts["max-header-length"],
                          max_headers=opts["max-headers"],
                          max_body_length=opts["max-body-length"]),
            heartbeat_grace=opts["heartbeat-grace"], connect_timeout=opts["connect-timeout"])
        ids = IdGenerator()
        if (opts["stomp"] or "none").lower() != "none":
            self.stomp_factory = StompFactory(self.broker, ids, clock=self.reactor, config=config)
            endpoint = endpoints.serverFromString(self.reactor, opts["stomp"])
            port = await endpoint.listen(self.stomp_factory)
            self.ports.append(port)
            log.info("STOMP listening on {address}", address=_address(port))
        self.ready.callback(self)

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
        super().stopService()
        for port in self.ports:
            yield port.stopListening()
        self.ports = []
        if self.stomp_factory is not None:
            for session in list(self.stomp_factory.sessions):
                session.link.transport.abortConnection()
        if self.broker is not None:
            self.broker.stop()
        if self.store is not None:
            yield self.store.close()
        log.info("pybrokerd stopped")


def _address(port):
    host = port.getHost()
    return "%s:%s" % (getattr(host, "host", "?"), getattr(host, "port", "?"))


def make_service(options, reactor=None):
    return BrokerService(options, reactor)
