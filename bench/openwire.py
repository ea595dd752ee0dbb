"""OpenWire side by side: ActiveMQ's own Java JMS client against pybrokerd and ActiveMQ 5.17.

    .venv/bin/python bench/openwire.py [--count 10000] [--rounds 3]

The `rate` scenario of tests/java/OwClient.java: N text messages of 1 KiB sent by one
producer (persistent: each send() waits for the broker's answer, as the JMS client does by
default; non-persistent: sent without waiting), then received by one auto-ack consumer.
Brokers alternate from round to round; prints every round and the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from java_client import JavaClient, ReferenceActiveMQ  # noqa: E402
from support import BrokerProcess, free_port, unique  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    java = JavaClient(tempfile.mkdtemp(prefix="openwire-bench-"))
    results: dict = {}
    for rnd in range(args.rounds):
        for name in (["pybrokerd", "activemq"] if rnd % 2 == 0 else ["activemq", "pybrokerd"]):
            if name == "pybrokerd":
                broker = BrokerProcess().start()
                port = broker.openwire_port
            else:
                broker = ReferenceActiveMQ(free_port()).start()
                port = broker.port
            try:
                url = "tcp://127.0.0.1:%d" % port
                java.run("rate", url, unique("warm"), 2000, "persistent")  # JIT warm-up
                for mode in ("persistent", "nonpersistent"):
                    line = java.run("rate", url, unique("rate"), args.count, mode)[0]
                    send, receive = (float(x) for x in re.findall(r"([\d.]+) msgs/s", line))
                    results.setdefault((name, mode), []).append((send, receive))
                    print("round %d %-9s %-13s %s" % (rnd + 1, name, mode, line), flush=True)
            finally:
                broker.stop()
    print("\n%-13s %-8s %10s %10s %6s" % ("mode", "", "pybrokerd", "activemq", "ratio"))
    for mode in ("persistent", "nonpersistent"):
        for i, what in enumerate(("send", "receive")):
            py = statistics.median(r[i] for r in results[("pybrokerd", mode)])
            amq = statistics.median(r[i] for r in results[("activemq", mode)])
            print("%-13s %-8s %10.0f %10.0f %5.2fx" % (mode, what, py, amq, py / amq))


if __name__ == "__main__":
    main()
