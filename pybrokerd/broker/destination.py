"""Destination names: parsing the STOMP forms, wildcard patterns, and formatting them back.

A destination is a (kind, name) pair.  Kinds are ``queue``, ``topic``, ``temp-queue`` and
``temp-topic``; a temporary destination's name is unique broker-wide (its owner's connection
id plus a sequence), and only the owning connection sees it under the short name it chose.
"""

from __future__ import annotations

from typing import NamedTuple

QUEUE = "queue"
TOPIC = "topic"
TEMP_QUEUE = "temp-queue"
TEMP_TOPIC = "temp-topic"

PREFIXES = {
    "/queue/": QUEUE,
    "/topic/": TOPIC,
    "/temp-queue/": TEMP_QUEUE,
    "/temp-topic/": TEMP_TOPIC,
    "/remote-temp-queue/": TEMP_QUEUE,
    "/remote-temp-topic/": TEMP_TOPIC,
}
ACCEPTED_PREFIXES = "/queue/, /topic/, /temp-queue/, /temp-topic/ (or /remote-temp-queue/, /remote-temp-topic/)"


# ActiveMQ's default virtual topics: a send to /topic/VirtualTopic.X also goes to every queue
# Consumer.<anything without a dot>.VirtualTopic.X
VIRTUAL_TOPIC_PREFIX = "VirtualTopic."
_VIRTUAL_CONSUMER_PREFIX = "Consumer."


def virtual_topic_of(queue_name: str) -> str | None:
    """The virtual topic a queue consumes ("Consumer.A.VirtualTopic.X" -> "VirtualTopic.X")."""
    if not queue_name.startswith(_VIRTUAL_CONSUMER_PREFIX):
        return None
    consumer, dot, topic = queue_name[len(_VIRTUAL_CONSUMER_PREFIX):].partition(".")
    if not consumer or not dot or not topic.startswith(VIRTUAL_TOPIC_PREFIX) \
            or has_wildcard(queue_name):
        return None
    return topic


class DestinationError(ValueError):
    """A destination header that names no destination we know how to route to."""


class Destination(NamedTuple):
    kind: str
    name: str

    @property
    def is_queue(self) -> bool:
        return self.kind in (QUEUE, TEMP_QUEUE)

    @property
    def is_topic(self) -> bool:
        return self.kind in (TOPIC, TEMP_TOPIC)

    @property
    def is_temporary(self) -> bool:
        return self.kind in (TEMP_QUEUE, TEMP_TOPIC)

    @property
    def is_wildcard(self) -> bool:
        return not self.is_temporary and has_wildcard(self.name)

    def activemq(self) -> str:
        """ActiveMQDestination.toString(): queue://a, topic://b, temp-queue://ID:..."""
        return "%s://%s" % (self.kind, self.name)

    def stomp(self) -> str:
        """The name as any connection other than a temporary destination's owner sees it."""
        if self.kind == TEMP_QUEUE:
            return "/remote-temp-queue/" + self.name
        if self.kind == TEMP_TOPIC:
            return "/remote-temp-topic/" + self.name
        return "/%s/%s" % (self.kind, self.name)

    def __str__(self) -> str:
        return self.stomp()


def split_stomp(text: str, fallback: bool = False, on_fallback=None) -> list[tuple[str, str]]:
    """Split a (possibly composite) STOMP destination header into (prefix, name) pairs.

    fallback=True (a SEND's or SUBSCRIBE's destination): a name without a known prefix is a
    queue of exactly that name, as ActiveMQ's unresolvable-destination fallback makes it
    ("orders" and "/foo/x" are queues, seen again as "/queue/orders" and "/queue//foo/x");
    `on_fallback(name)` hears of each such name.
    Raises DestinationError with a message a user can act on.
    """
    parts = [p.strip() for p in text.split(",")]
    result = []
    if not any(parts):
        raise DestinationError("Empty destination name in %r" % (text,))
    for part in parts:
        if not part:
            continue  # "/queue/a," is /queue/a (ActiveMQ's tokenizer skips empty members)
        for prefix in PREFIXES:
            if part.startswith(prefix):
                name = part[len(prefix):]
                if not name:
                    raise DestinationError("Destination %r has no name after %s" % (part, prefix))
                result.append((prefix, name))
                break
        else:
            # each member of a composite stands alone (ActiveMQ 5.17: "/topic/a,b" is the
            # topic a and the queue b)
            if fallback:
                result.append(("/queue/", part))
                if on_fallback is not None:
                    on_fallback(part)
                continue
            raise DestinationError(
                "Unknown destination %r: STOMP destinations must begin with one of %s"
                % (part, ACCEPTED_PREFIXES))
    return result


def has_wildcard(name: str) -> bool:
    # asked on every send: the plain substring test settles almost every name
    if "*" not in name and ">" not in name:
        return False
    return any(seg in ("*", ">") for seg in name.split("."))


def compile_pattern(name: str):
    """Return a predicate on destination names for a '.'-separated pattern with * and >."""
    if not has_wildcard(name):
        return lambda other: other == name
    segments = name.split(".")

    def match(other: str) -> bool:
        return _match(segments, other.split("."))
    return match


def _match(pattern: list[str], parts: list[str]) -> bool:
    i = 0
    for i, seg in enumerate(pattern):
        if seg == ">":
            # ActiveMQ: "a.>" also matches "a" itself
            return True
        if i >= len(parts):
            return False
        if seg != "*" and seg != parts[i]:
            return False
    return len(parts) == len(pattern)
