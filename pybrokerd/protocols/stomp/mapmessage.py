"""A map message (JMS MapMessage) as ActiveMQ 5.17 writes it into a STOMP MESSAGE body.

Sans-I/O: dict in, bytes out.  ActiveMQ's JmsFrameTranslator marshals the map with XStream,
as XML through XStream's PrettyPrintWriter or as JSON through Jettison's mapped convention,
and these functions reproduce those bytes exactly (checked against XStream 1.4.20 and
Jettison 1.5.3, the versions ActiveMQ 5.17 ships with):

    XML:   <map>
             <entry>
               <string>size</string>
               <long>2</long>
             </entry>
             ...
           </map>                                  (an empty map is <map/>)
    JSON:  {"map":{"entry":[{"string":"size","long":2},{"string":["brokerName","b1"]},...]}}
           (one entry: "entry" is that object, not a list; an empty map is {"map":""})

Details that are ActiveMQ's, kept on purpose:

* entries come in java.util.HashMap iteration order (bucket of the key's String.hashCode),
  which is what a Java map message holds;
* Jettison turns every text that reads back as the same Java number or boolean into a JSON
  number or boolean: a string value "12" is written 12, a double 31.0 is written 31, and a
  double whose text is like 1.25E-5 stays a quoted string;
* JSON escapes "/" as "\\/" (inside the key/value list of a string entry always, elsewhere
  only after "<"); XML writes control characters as &#x..; references.

Value types: bool -> boolean, Int32 -> int, int -> long, float -> double, str -> string.
"""

from __future__ import annotations

import decimal
import json
import math
import re

from pybrokerd.broker.message import Int32

JSON = "jms-map-json"
XML = "jms-map-xml"

# Transformation names ActiveMQ's STOMP transport knows (its frame translator registry); all
# of them render a map message.  Any other value (they are case-sensitive) gets an empty body.
KNOWN_TRANSFORMATIONS = frozenset((
    "jms-advisory-json", "jms-advisory-xml", "jms-byte", "jms-json", "jms-map-json",
    "jms-map-xml", "jms-object-json", "jms-object-xml", "jms-xml"))


def render(entries: dict, transformation: str | None) -> tuple[bytes, str]:
    """The MESSAGE body and `transformation` header ActiveMQ gives a broker-made (advisory
    type) map message for a subscription whose SUBSCRIBE had this `transformation` header."""
    if transformation is None:
        transformation = XML  # ActiveMQ: an advisory map message without one comes as XML
    elif transformation == "jms-xml":
        transformation = XML
    elif transformation == "jms-json":
        transformation = JSON
    if transformation not in KNOWN_TRANSFORMATIONS:
        return b"", transformation
    if transformation.lower().endswith("json"):
        return to_json(entries), transformation
    return to_xml(entries), transformation


# -- Java's view of the map ------------------------------------------------------------------

def java_string_hash(text: str) -> int:
    h = 0
    data = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h


def hashmap_order(keys) -> list:
    """The keys in the order a java.util.HashMap holding them iterates (no tree bins)."""
    keys = list(keys)
    capacity = 16
    while len(keys) > capacity * 3 // 4:
        capacity *= 2

    def bucket(key):
        h = java_string_hash(key)
        return (h ^ (h >> 16)) & (capacity - 1)
    return sorted(keys, key=bucket)  # stable: a bucket keeps its insertion order


def java_double(value: float) -> str:
    """Double.toString: shortest digits (as JDK 19+; older JDKs print one digit more for a
    few rare values), plain between 1e-3 and 1e7, else d.dddE<n>."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digits, exponent = decimal.Decimal(repr(value)).as_tuple()
    text = "".join(map(str, digits))
    stripped = text.rstrip("0") or "0"
    exponent += len(text) - len(stripped)
    point = len(stripped) - 1 + exponent  # value = d.ddd x 10^point
    minus = "-" if sign else ""
    if -3 <= point < 7:
        if point >= 0:
            whole = stripped[:point + 1].ljust(point + 1, "0")
            return "%s%s.%s" % (minus, whole, stripped[point + 1:] or "0")
        return "%s0.%s%s" % (minus, "0" * (-point - 1), stripped)
    return "%s%s.%sE%d" % (minus, stripped[0], stripped[1:] or "0", point)


def _typed(value) -> tuple[str, str]:
    """(XStream element name, text) of one map value."""
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, Int32):
        return "int", str(int(value))
    if isinstance(value, int):
        return "long", str(value)
    if isinstance(value, float):
        return "double", java_double(value)
    if isinstance(value, str):
        return "string", value
    raise TypeError("map message values are bool, int, float or str, not %r" % (value,))


# -- XML (XStream PrettyPrintWriter) -----------------------------------------------------------

_XML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;",
                "\r": "&#xd;"}
_XML_SPECIAL = re.compile("[&<>\"'\r\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _xml_text(text: str) -> str:
    return _XML_SPECIAL.sub(
        lambda m: _XML_ESCAPES.get(m.group(), None) or "&#x%x;" % ord(m.group()), text)


def to_xml(entries: dict) -> bytes:
    if not entries:
        return b"<map/>"
    lines = ["<map>"]
    for key in hashmap_order(entries):
        kind, text = _typed(entries[key])
        lines += ["  <entry>",
                  "    <string>%s</string>" % _xml_text(key),
                  "    <%s>%s</%s>" % (kind, _xml_text(text), kind),
                  "  </entry>"]
    lines.append("</map>")
    return "\n".join(lines).encode("utf-8")


# -- JSON (Jettison mapped convention) -------------------------------------------------------

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "</": "<\\/", "\b": "\\b",
                 "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
# Jettison escapes every "/" inside a list, elsewhere only "</" (org.json's rule)
_JSON_SPECIAL_IN_LIST = re.compile('["\\\\/\x00-\x1f\u2028\u2029]')
_JSON_SPECIAL = re.compile('</|["\\\\\x00-\x1f\u2028\u2029]')
_JAVA_LONG = re.compile(r"-?(0|[1-9][0-9]*)\Z")


def _json_string(text: str, in_list: bool) -> str:
    special = _JSON_SPECIAL_IN_LIST if in_list else _JSON_SPECIAL
    return '"%s"' % special.sub(
        lambda m: _JSON_ESCAPES.get(m.group()) or "\\u%04x" % ord(m.group()), text)


def _json_value(text: str, in_list: bool = False) -> str:
    """Jettison's DefaultConverter: text that reads back identically as a Java long or double
    (no negative exponent) becomes a number, "true"/"false" a boolean, the rest a string."""
    if text in ("true", "false"):
        return text
    if _JAVA_LONG.match(text) and text != "-0" and -2 ** 63 <= int(text) < 2 ** 63:
        return text
    if text[:1] in "-0123456789" and "E-" not in text and "e" not in text:
        try:
            number = float(text)
        except ValueError:
            return _json_string(text, in_list)
        if math.isfinite(number) and java_double(number) == text:
            if "E" not in text:  # JSONObject.numberToString drops a zero fraction
                text = text.rstrip("0").rstrip(".")
            return text
    return _json_string(text, in_list)


def to_json(entries: dict) -> bytes:
    if not entries:
        return b'{"map":""}'
    items = []
    for key in hashmap_order(entries):
        kind, text = _typed(entries[key])
        if kind == "string":
            items.append('{"string":[%s,%s]}' % (_json_value(key, True), _json_value(text, True)))
        else:
            items.append('{"string":%s,"%s":%s}' % (_json_value(key), kind, _json_value(text)))
    entry = items[0] if len(items) == 1 else "[%s]" % ",".join(items)
    return ('{"map":{"entry":%s}}' % entry).encode("utf-8")


def parse_json(body: bytes) -> dict:
    """The map back from a jms-map-json body (numbers as Jettison wrote them); for tests and
    clients."""
    doc = json.loads(body)["map"]
    if doc == "":
        return {}
    entries = doc["entry"]
    if isinstance(entries, dict):
        entries = [entries]
    result = {}
    for entry in entries:
        if isinstance(entry["string"], list):
            key, value = entry["string"]
        else:
            key = entry["string"]
            value = next(v for k, v in entry.items() if k != "string")
        result[str(key)] = value
    return result
