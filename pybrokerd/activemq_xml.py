"""`--config activemq.xml`: the parts of an ActiveMQ 5.x configuration that map to ours.

`translate(path)` reads the file safely (defusedxml: no entities, no network) and returns
(settings, report): `settings` is {section: {key: value}} in the shape of our INI config
([pybrokerd] options, [users], [groups], [authorization]), and `report` lists, one line each,
everything it found and could not map, so that nothing is dropped silently (docs/admin.md).

Spring placeholders (`${activemq.base}`, `${activemq.password}`, ...) are resolved from the
environment, from `activemq.conf` = the file's directory, `activemq.base` = its parent,
`activemq.data` = `<base>/data`, and from the .properties files a PropertyPlaceholderConfigurer
bean names (ActiveMQ's credentials.properties).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlsplit

from defusedxml import ElementTree

from pybrokerd.broker.usage import parse_size

CORE = "{http://activemq.apache.org/schema/core}"
BEANS = "{http://www.springframework.org/schema/beans}"
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
_TRUE = ("true", "yes", "1")


class Translation:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        conf = os.path.dirname(self.path)
        base = os.path.dirname(conf)
        # as ActiveMQ's start script: the environment's ACTIVEMQ_* first, then the layout
        base = os.environ.get("ACTIVEMQ_BASE", base)
        self.properties = {"activemq.conf": os.environ.get("ACTIVEMQ_CONF", conf),
                           "activemq.base": base,
                           "activemq.home": os.environ.get("ACTIVEMQ_HOME", base),
                           "activemq.data": os.environ.get("ACTIVEMQ_DATA",
                                                           os.path.join(base, "data"))}
        self.options: dict[str, str] = {}
        self.users: dict[str, str] = {}
        self.groups: dict[str, list[str]] = {}
        self.entries: dict[str, str] = {}
        self.report: list[str] = []

    # -- values ----------------------------------------------------------------------------
    def value(self, text: str | None) -> str | None:
        if text is None:
            return None

        def resolve(match):
            name = match.group(1)
            if name in os.environ:
                return os.environ[name]
            if name in self.properties:
                return self.properties[name]
            self.report.append("unresolved placeholder ${%s} (left as it is)" % name)
            return match.group(0)
        return _PLACEHOLDER.sub(resolve, text)

    def load_properties(self, location: str) -> None:
        location = self.value(location.strip())
        if location.startswith("file:"):
            location = location[5:]
        elif location.startswith("classpath:"):
            self.report.append("properties %s: classpath resources are not read" % location)
            return
        try:
            with open(location, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith(("#", "!")) and "=" in line:
                        key, _, value = line.partition("=")
                        value = value.strip()
                        if value.startswith("ENC("):
                            self.report.append("property %s in %s is encrypted (jasypt): not "
                                               "readable here" % (key.strip(), location))
                            continue
                        self.properties.setdefault(key.strip(), value)
        except OSError as e:
            self.report.append("properties %s: cannot read (%s)" % (location, e.strerror))

    def set(self, option: str, value, source: str) -> None:
        self.options[option] = str(value)
        self.mapped.append("%s -> --%s=%s" % (source, option, value))

    # -- the document ----------------------------------------------------------------------
    def translate(self):
        self.mapped: list[str] = []
        root = ElementTree.parse(self.path).getroot()
        for bean in root.iter(BEANS + "bean"):
            if "PropertyPlaceholderConfigurer" in (bean.get("class") or ""):
                for value in bean.iter(BEANS + "value"):
                    self.load_properties(value.text or "")
                for prop in bean.iter(BEANS + "property"):
                    if prop.get("name") in ("location", "locations") and prop.get("value"):
                        self.load_properties(prop.get("value"))
        brokers = list(root.iter(CORE + "broker"))
        if not brokers:
            raise ValueError("%s has no <broker> element in ActiveMQ's namespace" % self.path)
        if len(brokers) > 1:
            self.report.append("%d <broker> elements: only the first is read" % len(brokers))
        self.broker(brokers[0])
        for child in root:
            if child.tag not in (CORE + "broker",) and not (
                    child.tag == BEANS + "bean"
                    and "PropertyPlaceholderConfigurer" in (child.get("class") or "")):
                self.report.append("<%s> outside <broker>: not used" % _local(child.tag))
        return self

    def broker(self, broker) -> None:
        handled = {"brokerName": ("broker-name", str), "dataDirectory": ("data-dir", str),
                   "schedulerDirectory": ("scheduler-dir", str)}
        for name, raw in broker.attrib.items():
            value = self.value(raw)
            if name in handled:
                option, _ = handled[name]
                self.set(option, value, "broker@" + name)
            elif name == "persistent":
                self.set("persistent", "true" if value.lower() in _TRUE else "false",
                         "broker@persistent")
            elif name == "deleteAllMessagesOnStartup":
                if value.lower() in _TRUE:
                    self.set("delete-all-messages-on-startup", "true", "broker@" + name)
            elif name == "schedulerSupport":
                self.set("scheduler-support", "true" if value.lower() in _TRUE else "false",
                         "broker@" + name)
            elif name == "useShutdownHook":
                self.set("use-shutdown-hook", "true" if value.lower() in _TRUE else "false",
                         "broker@" + name)
            elif name == "useJmx":
                self.mapped.append("broker@useJmx: the admin HTTP API (--admin) stands in "
                                   "for JMX")
            elif name.startswith("{"):
                continue  # xmlns and friends
            else:
                self.report.append("broker@%s=%s: not mapped" % (name, value))
        if "dataDirectory" in broker.attrib and "dir" not in self.options:
            # ActiveMQ's default KahaDB directory is <dataDirectory>/kahadb
            self.set("dir", os.path.join(self.options["data-dir"], "kahadb"),
                     "broker@dataDirectory (+/kahadb)")
        for child in broker:
            tag = _local(child.tag)
            handler = getattr(self, "element_" + tag, None)
            if handler is None:
                self.report.append("<%s>: not mapped" % tag)
            else:
                handler(child)

    def element_persistenceAdapter(self, element) -> None:
        for adapter in element:
            tag = _local(adapter.tag)
            directory = self.value(adapter.get("directory"))
            if tag == "kahaDB":
                self.set("store", "kahadb", "kahaDB")
            elif tag == "levelDB":
                self.set("store", "leveldb", "levelDB")
            elif tag == "memoryPersistenceAdapter":
                self.set("store", "memory", "memoryPersistenceAdapter")
                continue
            else:
                self.report.append("<persistenceAdapter><%s>: not supported (kahaDB, levelDB "
                                   "or memoryPersistenceAdapter)" % tag)
                continue
            if directory:
                self.set("dir", directory, tag + "@directory")
            for name, raw in adapter.attrib.items():
                if name == "directory":
                    continue
                if name == "journalDiskSyncStrategy":
                    sync = {"always": "always", "periodic": "periodic",
                            "never": "never"}.get(self.value(raw).lower())
                    if sync:
                        self.set("sync", sync, tag + "@" + name)
                        continue
                if name == "concurrentStoreAndDispatchQueues" and tag == "kahaDB":
                    # false: every message is stored before it is dispatched, never
                    # cancelled by an early ack (true, ActiveMQ's default, is ours too)
                    if self.value(raw).lower() == "false":
                        self.set("ack-wait", 0, tag + "@" + name)
                    continue
                self.report.append("%s@%s=%s: not mapped (the journal keeps its own "
                                   "settings)" % (tag, name, raw))

    def element_transportConnectors(self, element) -> None:
        for connector in element:
            uri = self.value(connector.get("uri") or "")
            name = connector.get("name") or uri
            parts = urlsplit(uri)
            scheme = parts.scheme.lower()
            host = parts.hostname or "0.0.0.0"
            port = parts.port
            # an IPv6 address needs its colons escaped in a Twisted endpoint string
            endpoint = "tcp:%s:interface=%s" % (port, host.replace(":", "\\:"))
            option = {"stomp": "stomp", "stomp+nio": "stomp", "amqp": "amqp",
                      "amqp+nio": "amqp", "tcp": "openwire", "nio": "openwire",
                      "openwire": "openwire", "auto": "openwire", "auto+nio": "openwire",
                      "ws": "stomp-ws"}.get(scheme)
            if option is None:
                self.report.append("transportConnector %s (%s): %s is not supported"
                                   % (name, uri, scheme or "no scheme"))
                continue
            self.set(option, endpoint, "transportConnector " + name)
            for key, value in parse_qsl(parts.query):
                if key == "maximumConnections":
                    self.set("max-connections", value, "%s?%s" % (name, key))
                elif key in ("wireFormat.maxFrameSize", "wireFormat.maxDataLength"):
                    self.set("max-body-length", value, "%s?%s" % (name, key))
                else:
                    self.report.append("transportConnector %s: option %s=%s not mapped"
                                       % (name, key, value))

    def element_plugins(self, element) -> None:
        for plugin in element:
            tag = _local(plugin.tag)
            if tag == "simpleAuthenticationPlugin":
                self.authentication(plugin)
            elif tag == "authorizationPlugin":
                self.authorization(plugin)
            elif tag == "redeliveryPlugin":
                for policy in plugin.iter(CORE + "redeliveryPolicy"):
                    self.redelivery(policy)
                    break
            else:
                self.report.append("<plugins><%s>: not mapped" % tag)

    def authentication(self, plugin) -> None:
        if (plugin.get("anonymousAccess") or "").lower() in _TRUE:
            self.set("anonymous", "true", "simpleAuthenticationPlugin@anonymousAccess")
        for user in plugin.iter(CORE + "authenticationUser"):
            name = self.value(user.get("username"))
            password = self.value(user.get("password") or "")
            if not name:
                continue
            if _PLACEHOLDER.search(password):
                # a literal "${...}" would be a password anybody can read in the file
                self.report.append("authenticationUser %s: password %s unresolved; the user "
                                   "is left out" % (name, user.get("password")))
                continue
            self.users[name] = password  # hashed by the caller
            for group in (self.value(user.get("groups")) or "").split(","):
                if group.strip():
                    self.groups.setdefault(group.strip(), []).append(name)
        self.mapped.append("simpleAuthenticationPlugin: %d users" % len(self.users))

    def authorization(self, plugin) -> None:
        n = 0
        for entry in plugin.iter():
            tag = _local(entry.tag)
            if tag not in ("authorizationEntry", "tempDestinationAuthorizationEntry"):
                continue
            acl = "; ".join("%s: %s" % (op, self.value(entry.get(op)))
                            for op in ("read", "write", "admin") if entry.get(op))
            if tag == "tempDestinationAuthorizationEntry":
                self.entries["temp"] = acl
            elif entry.get("queue"):
                self.entries["queue:" + self.value(entry.get("queue"))] = acl
            elif entry.get("topic"):
                self.entries["topic:" + self.value(entry.get("topic"))] = acl
            else:
                self.report.append("authorizationEntry without queue or topic: not mapped")
                continue
            n += 1
        self.mapped.append("authorizationPlugin: %d entries" % n)

    def redelivery(self, policy) -> None:
        attrs = {k: self.value(v) for k, v in policy.attrib.items()}
        if "maximumRedeliveries" in attrs:
            value = attrs.pop("maximumRedeliveries")
            if value.strip().startswith("-"):
                self.mapped.append("redeliveryPolicy@maximumRedeliveries=%s: no limit, pybrokerd's "
                                   "default" % value)
            else:
                self.set("max-redeliveries", value, "redeliveryPolicy")
        delay = attrs.pop("initialRedeliveryDelay", None) or attrs.pop("redeliveryDelay", None)
        attrs.pop("redeliveryDelay", None)
        if delay:
            self.set("redelivery-delay", delay, "redeliveryPolicy")
        if (attrs.pop("useExponentialBackOff", "") or "").lower() in _TRUE:
            self.set("redelivery-backoff", attrs.pop("backOffMultiplier", "5"), "redeliveryPolicy")
        attrs.pop("backOffMultiplier", None)
        for key, value in attrs.items():
            self.report.append("redeliveryPolicy@%s=%s: not mapped" % (key, value))

    def element_systemUsage(self, element) -> None:
        usages = {"memoryUsage": "memory-limit", "storeUsage": "store-limit",
                  "jobSchedulerUsage": "scheduler-limit"}
        for usage in element.iter():
            tag = _local(usage.tag)
            if tag in usages and usage.get("limit"):
                limit = self.value(usage.get("limit"))
                try:
                    parse_size(limit)
                except ValueError:
                    self.report.append("<%s limit=%r>: not a size" % (tag, limit))
                    continue
                self.set(usages[tag], limit.replace(" ", ""), tag + "@limit")
            elif tag in usages and usage.get("percentOfJvmHeap"):
                self.report.append("<%s percentOfJvmHeap=%s>: there is no JVM heap; set "
                                   "--memory-limit" % (tag, usage.get("percentOfJvmHeap")))
            elif tag == "tempUsage":
                self.report.append("<tempUsage>: pybrokerd has no temporary store (non-persistent"
                                   " messages stay in memory, bounded by --memory-limit)")

    def element_destinationPolicy(self, element) -> None:
        for entry in element.iter(CORE + "policyEntry"):
            for child in entry:
                if _local(child.tag) == "redeliveryPolicy":
                    self.redelivery(child)
            attrs = ", ".join("%s=%s" % kv for kv in entry.attrib.items())
            self.report.append("policyEntry (%s): per-destination policies are not mapped"
                               % attrs)

    def element_redeliveryPolicyMap(self, element) -> None:
        for policy in element.iter(CORE + "redeliveryPolicy"):
            self.redelivery(policy)
            break

    def element_managementContext(self, element) -> None:
        self.mapped.append("managementContext: the admin HTTP API (--admin) stands in for JMX")

    def element_shutdownHooks(self, element) -> None:
        self.mapped.append("shutdownHooks: pybrokerd stops cleanly on SIGTERM")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else str(tag)


def translate(path: str) -> Translation:
    return Translation(path).translate()
