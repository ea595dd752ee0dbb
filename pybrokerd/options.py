"""twistd options for `twistd pybrokerd`, and the optional config file."""

import configparser
import os

from twisted.python import usage

from pybrokerd import __version__
from pybrokerd.broker.usage import parse_size
from pybrokerd.security import ConfigError, Security

def _positive_int(value):
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Run the pybrokerd message broker. Listen addresses are Twisted endpoint "
                "strings (tcp:61613:interface=127.0.0.1, ssl:...); 'none' disables a listener.")

    optFlags = [
        ["prioritized-messages", None, "dispatch higher JMS priority first (default: FIFO, as ActiveMQ)"],
        ["version", None, "print the version and exit"],
        ["anonymous", None, "let clients in without credentials even when users are "
                            "configured (the default only when there are none)"],
        ["delete-all-messages-on-startup", None, "empty every queue and drop every durable "
                                                 "subscription when becoming master (ActiveMQ's "
                                                 "deleteAllMessagesOnStartup)"],
    ]
    optParameters = [
        ["store", None, "kahadb", "persistence store: kahadb (journal), lmdb, leveldb, memory"],
        ["sync", None, "always", "disk sync policy of the store: always, periodic (1 s) or never"],
        ["ack-wait", None, 5.0, "milliseconds a write of persistent messages already "
                                "delivered to consumers that ack them waits for those acks "
                                "while consumers ack fast (a message acked by then is never "
                                "written; its RECEIPT still means stored or consumed); 0: "
                                "write at once", float],
        ["dir", None, "./data", "persistence directory (shared by a master/slave pair)"],
        ["data-dir", None, None, "data directory for other state [default: --dir]"],
        ["scheduler-dir", None, None, "scheduler store directory [default: <data-dir>/scheduler]"],
        ["persistent", None, "true", "false: keep everything in memory (--store=memory; "
                                     "ActiveMQ's broker persistent attribute)"],
        ["use-shutdown-hook", None, "true", "false: SIGTERM exits at once without closing "
                                            "the stores or releasing the lock cleanly (recovery "
                                            "runs on the next start; ActiveMQ's useShutdownHook)"],
        ["scheduler-support", None, "true", "false: AMQ_SCHEDULED_* headers are ignored and no "
                                            "scheduler store is opened (ActiveMQ's "
                                            "schedulerSupport; there the default is false)"],
        ["stomp", None, "tcp:61613:interface=127.0.0.1", "STOMP listen address, or none"],
        ["stomp-ssl", None, "none", "a second STOMP listener, usually TLS: "
                                    "ssl:61614:privateKey=key.pem:certKey=cert.pem, or none"],
        ["stomp-ws", None, "none", "STOMP over WebSocket listen address (ActiveMQ's ws:// "
                                   "transport, for stomp.js in a browser): "
                                   "tcp:61614:interface=127.0.0.1, ssl:... for wss://, or none"],
        ["stomp-ssl-client-ca", None, None, "require TLS clients to present a certificate "
                                            "signed by a CA in this PEM file"],
        ["ssl-client-ca", None, None, "require TLS clients of every ssl: messaging listener "
                                      "(STOMP, AMQP, OpenWire) to present a certificate "
                                      "signed by a CA in this PEM file"],
        ["amqp", None, "tcp:5672:interface=127.0.0.1", "AMQP 1.0 listen address (ssl:... for "
                                                       "TLS), or none"],
        ["openwire", None, "tcp:61616:interface=127.0.0.1", "OpenWire listen address for "
                                                            "ActiveMQ's JMS client (ssl:... "
                                                            "for TLS), or none"],
        ["admin", None, "tcp:8161:interface=127.0.0.1", "admin HTTP listen address (JSON API, "
                                                        "/metrics, console; ssl:... for "
                                                        "HTTPS), or none"],
        ["admin-group", None, "admins", "the group whose users may use the admin actions "
                                        "(when users are configured)"],
        ["broker-name", None, "localhost", "broker name (logs, lock file, ids)"],
        ["locker", None, "file", "master election: file (fcntl lock on <dir>/lock), lease "
                                 "(lease file, for file systems without trustworthy locks), none"],
        ["lock-retry", None, 0.1, "seconds between a slave's attempts to take the lock", float],
        ["lock-check", None, 1.0, "seconds between a master's checks that it still holds the "
                                  "lock (0 = never)", float],
        ["lease-duration", None, 10.0, "seconds a lease is valid (--locker=lease)", float],
        ["config", None, None, "INI file with a [pybrokerd] section of these options"],
        ["max-redeliveries", None, None, "move a message to ActiveMQ.DLQ after N redeliveries "
                                         "[default: no limit, as ActiveMQ over STOMP; 6 for "
                                         "NACKs under --redelivery-delay]", _positive_int],
        ["redelivery-delay", None, 0, "ms before a NACKed queue message is redelivered (0: "
                                      "NACK sends it to the DLQ at once, as ActiveMQ without "
                                      "its RedeliveryPlugin)", _positive_int],
        ["redelivery-backoff", None, 1.0, "multiply the redelivery delay by this per attempt", float],
        ["page-size", None, 1000, "persistent messages of one destination held in memory; the "
                                  "rest stay in the store until consumers drain", int],
        ["heartbeat-grace", None, 1.5, "drop a client after its heart-beat interval times this", float],
        ["connect-timeout", None, 30.0, "seconds a connection may stay open without CONNECT", float],
        ["max-command-length", None, 1024, "STOMP command line limit (bytes)", int],
        ["max-header-length", None, 10240, "STOMP header line limit (bytes)", int],
        ["max-headers", None, 1000, "STOMP header count limit", int],
        ["max-body-length", None, 100 * 1024 * 1024, "STOMP body limit (bytes)", int],
        ["max-connections", None, 1000, "open client connections at most (0: no limit)", int],
        ["max-connections-per-address", None, 0, "connections from one IP address at most "
                                                 "(0: no limit)", int],
        ["max-subscriptions", None, 0, "subscriptions per connection at most (0: no limit)", int],
        ["memory-limit", None, "1gb", "bytes of messages held in memory (pending and in "
                                      "flight) before producers of non-persistent and topic "
                                      "messages wait (ActiveMQ's memoryUsage; 0: no limit)",
         parse_size],
        ["store-limit", None, "100gb", "bytes of persistent messages in the store before "
                                       "their producers wait (ActiveMQ's storeUsage; lowered "
                                       "to the disk's free space at start-up; 0: no limit)",
         parse_size],
        ["scheduler-limit", None, "50gb", "bytes of scheduled messages before their producers "
                                          "wait (ActiveMQ's jobSchedulerUsage; 0: no limit)",
         parse_size],
        ["send-fail-timeout", None, 30.0, "seconds a producer waits for room under a full limit "
                                          "before its send gets an ERROR (0: at once, -1: wait "
                                          "for ever, as ActiveMQ's default)", float],
        ["topic-pending-limit", None, 10000, "messages a non-durable topic subscriber that does "
                                             "not keep up may have waiting; older ones are "
                                             "discarded (0: no limit)", int],
    ]

    def opt_version(self):
        print("pybrokerd", __version__)
        raise SystemExit(0)

    def postOptions(self):
        parent = getattr(self, "parent", None)
        if parent is not None and parent.get("nodaemon") and parent.get("pidfile") == "twistd.pid":
            # In the foreground a pid file serves nobody, and twistd's default one would stop a
            # second broker started from the same directory (a master/slave pair on one host).
            # An explicit --pidfile is kept.
            parent["pidfile"] = ""
        self.security = None
        self.config_report = []  # what an activemq.xml held that could not be mapped
        if self["config"]:
            self._apply_config(self["config"])
        if self.security is None:
            self.security = Security(anonymous=True)
        elif self["anonymous"]:
            self.security.anonymous = True
        from stores import registry
        try:
            registry.load(self["store"])
        except registry.UnknownStore as e:
            raise usage.UsageError("--store: %s" % e)
        except ImportError as e:
            raise usage.UsageError("--store=%s cannot be loaded: %s" % (self["store"], e))
        if self["locker"] not in ("file", "lease", "none"):
            raise usage.UsageError("--locker must be file, lease or none")
        if self["lock-retry"] <= 0:
            raise usage.UsageError("--lock-retry must be positive")
        if self["sync"] not in ("always", "periodic", "never"):
            raise usage.UsageError("--sync must be always, periodic or never")
        if self["ack-wait"] < 0:
            raise usage.UsageError("--ack-wait must be 0 or more milliseconds")
        if self["data-dir"] is None:
            self["data-dir"] = self["dir"]
        if self["scheduler-dir"] is None:
            self["scheduler-dir"] = os.path.join(self["data-dir"], "scheduler")
        for key in ("scheduler-support", "persistent", "use-shutdown-hook"):
            if str(self[key]).lower() not in ("true", "false"):
                raise usage.UsageError("--%s must be true or false" % key)
            self[key] = str(self[key]).lower() == "true"
        if not self["persistent"]:
            self["store"] = "memory"
        for key in ("memory-limit", "store-limit", "scheduler-limit"):
            if not isinstance(self[key], int):  # the default, a string
                self[key] = parse_size(self[key])
        if self["heartbeat-grace"] < 1.0:
            raise usage.UsageError("--heartbeat-grace must be at least 1.0")

    def _apply_config(self, path):
        """An INI file ([pybrokerd] section), a TOML file (a [pybrokerd] table) or an ActiveMQ
        activemq.xml: the same settings, the command line wins."""
        self.config_report = []
        lower = path.lower()
        try:
            if lower.endswith(".xml"):
                parser = self._from_activemq_xml(path)
            elif lower.endswith(".toml"):
                parser = self._from_toml(path)
            else:
                parser = self._from_ini(path)
        except OSError as e:
            raise usage.UsageError("--config: cannot read %s: %s" % (path, e.strerror))
        except (configparser.Error, ValueError) as e:
            raise usage.UsageError("--config: %s is not valid: %s" % (path, e))
        if not parser.has_section("pybrokerd"):
            raise usage.UsageError("--config: %s has no [pybrokerd] section" % path)
        try:
            self.security = Security.from_ini(parser, anonymous=True if self["anonymous"] else None,
                                              where=path)
        except ConfigError as e:
            raise usage.UsageError("--config: %s" % e)
        self._apply_settings(parser, path)

    @staticmethod
    def _parser(allow_no_value=False):
        # keys keep their case and may hold ':' (users, authorization entries)
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None, strict=False,
                                           allow_no_value=allow_no_value)
        parser.optionxform = str
        return parser

    def _from_ini(self, path):
        parser = self._parser(allow_no_value=True)
        with open(path) as f:
            parser.read_file(f)
        for section in ("users", "groups", "authorization"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    if value is None:
                        raise ValueError("[%s] %r: expected name = value" % (section, key))
        # [pybrokerd] takes "key: value" too (the other sections' keys may hold ':')
        plain = configparser.ConfigParser(strict=False, interpolation=None)
        with open(path) as f:
            plain.read_file(f)
        if plain.has_section("pybrokerd"):
            parser.remove_section("pybrokerd")
            parser.add_section("pybrokerd")
            for key, value in plain.items("pybrokerd"):
                parser.set("pybrokerd", key, value)
        return parser

    def _from_toml(self, path):
        import tomllib
        with open(path, "rb") as f:
            data = tomllib.load(f)
        parser = self._parser()
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ValueError("top-level key %r: settings go in tables such as [pybrokerd]"
                                 % section)
            parser.add_section(section)
            for key, value in values.items():
                if isinstance(value, bool):
                    value = "true" if value else "false"
                elif isinstance(value, list):
                    value = ", ".join(str(v) for v in value)
                parser.set(section, key, str(value))
        return parser

    def _from_activemq_xml(self, path):
        from pybrokerd.activemq_xml import translate
        from pybrokerd.security import hash_password
        found = translate(path)
        parser = self._parser()
        parser.add_section("pybrokerd")
        for key, value in found.options.items():
            parser.set("pybrokerd", key, value)
        if found.users:
            parser.add_section("users")
            for user, password in found.users.items():
                parser.set("users", user, hash_password(password))
            parser.add_section("groups")
            for group, members in found.groups.items():
                parser.set("groups", group, ", ".join(members))
        if found.entries:
            parser.add_section("authorization")
            for key, value in found.entries.items():
                parser.set("authorization", key, value)
        self.config_report = ["mapped: " + line for line in found.mapped] + \
            ["NOT mapped: " + line for line in found.report]
        return parser

    def _apply_settings(self, parser, path):
        defaults = Options()
        known = {p[0]: p for p in self.optParameters}
        flags = {f[0] for f in self.optFlags}
        for key, value in parser.items("pybrokerd"):
            key = key.lower()
            if key in flags:
                if value.strip().lower() in ("1", "true", "yes", "on"):
                    self[key] = 1
                continue
            if key not in known:
                raise usage.UsageError("--config: unknown option %r in %s" % (key, path))
            if self[key] != defaults[key]:
                continue  # the command line wins
            coerce = known[key][4] if len(known[key]) > 4 else None
            try:
                self[key] = coerce(value) if coerce else value
            except ValueError as e:
                raise usage.UsageError("--config: bad value for %s: %s" % (key, e))
