"""Log observers for `twistd --logger=...` (a factory twistd calls with no arguments).

    twistd -n --logger=pybrokerd.logs.json_stdout pybrokerd ...

writes every event as one JSON object per line on standard output (Twisted's JSON log format,
each record preceded by an ASCII record separator, 0x1E), with the structured fields the
broker logs (``queue``, ``connection``, ``error``...) as keys; `PYBROKERD_JSON_LOG=path` makes
`json_file` append to a file instead.
"""

import os
import sys

from twisted.logger import jsonFileLogObserver


def json_stdout():
    return jsonFileLogObserver(sys.stdout)


def json_file():
    path = os.environ.get("PYBROKERD_JSON_LOG", "pybrokerd.log.json")
    return jsonFileLogObserver(open(path, "a", encoding="utf-8"))
