"""ActiveMQ's own Java JMS client for the OpenWire tests: tests/java/OwClient.java compiled
once with javac against Debian's activemq jars, run as `java OwClient <scenario> <url> ...`;
and a reference ActiveMQ 5.17 to run the same scenarios against."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = "/usr/share/activemq/lib"
JARS = ("activemq-client", "geronimo-jms_1.1_spec", "geronimo-j2ee-management-1.1-spec",
        "hawtbuf", "slf4j-api", "slf4j-nop")
SETUP = ("the OpenWire tests need javac and Debian's activemq jars: make test installs them "
         "(apt-get install default-jdk-headless activemq)")


def classpath_jars() -> list[str]:
    jars = []
    for name in JARS:
        found = sorted(glob.glob(os.path.join(LIB, name + ".jar")) +
                       glob.glob(os.path.join("/usr/share/java", name + ".jar")))
        if not found:
            raise RuntimeError("%s.jar not found; %s" % (name, SETUP))
        jars.append(found[0])
    return jars


class JavaClient:
    def __init__(self, build_dir: str):
        if shutil.which("javac") is None or shutil.which("java") is None:
            raise RuntimeError(SETUP)
        self.classpath = os.pathsep.join([build_dir] + classpath_jars())
        subprocess.run(["javac", "-nowarn", "-d", build_dir, "-cp", self.classpath,
                        os.path.join(HERE, "java", "OwClient.java")],
                       check=True, capture_output=True, timeout=120)

    def command(self, scenario, url, prefix, *args, jvm=()) -> list[str]:
        return ["java", "-Xss512k", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", *jvm,
                "-cp", self.classpath, "OwClient", scenario, url, prefix] + [str(a) for a in args]

    def run(self, scenario, url, prefix, *args, timeout=90, jvm=()) -> list[str]:
        """The scenario's output lines (the JMS client's SLF4J notices left out); fails
        with the output when it exits non-zero.  `jvm`: more java options."""
        result = subprocess.run(self.command(scenario, url, prefix, *args, jvm=jvm),
                                capture_output=True, text=True, timeout=timeout)
        lines = [line for line in result.stdout.splitlines() if not line.startswith("SLF4J")]
        if result.returncode != 0:
            raise AssertionError("java OwClient %s exited %s:\n%s\n%s"
                                 % (scenario, result.returncode, result.stdout, result.stderr))
        return lines

    def run_expecting_failure(self, scenario, url, prefix, *args, timeout=90,
                              jvm=()) -> list[str]:
        result = subprocess.run(self.command(scenario, url, prefix, *args, jvm=jvm),
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode == 0:
            raise AssertionError("java OwClient %s succeeded:\n%s" % (scenario, result.stdout))
        return [line for line in result.stdout.splitlines() if not line.startswith("SLF4J")]

    def start(self, scenario, url, prefix, *args) -> subprocess.Popen:
        return subprocess.Popen(self.command(scenario, url, prefix, *args),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)


class ReferenceActiveMQ:
    """ActiveMQ 5.17 from Debian's package, OpenWire on a free loopback port."""

    def __init__(self, port: int):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="activemq-ref-")
        self.proc = None

    def start(self, timeout=120.0):
        jar = "/usr/share/activemq/bin/activemq.jar"
        if not os.path.exists(jar):
            raise RuntimeError("ActiveMQ is not installed; " + SETUP)
        conf = os.path.join(HERE, "data", "openwire")
        self.proc = subprocess.Popen(
            ["java", "-Xms256M", "-Xmx256M", "-Dactivemq.home=/usr/share/activemq",
             "-Dactivemq.base=%s" % self.dir, "-Dactivemq.conf=%s" % conf,
             "-Dactivemq.data=%s" % self.dir, "-Damq.openwire.port=%d" % self.port,
             "-jar", jar, "start", "xbean:file:%s" % os.path.join(conf, "activemq.xml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ActiveMQ exited with %s" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("ActiveMQ did not open port %d" % self.port)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
