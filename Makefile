VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install browser java run test bench clean

# the console's end-to-end test drives Debian's headless Chromium through chromedriver
BROWSER_PACKAGES := chromium chromium-driver
# the OpenWire tests compile and run Java programs with ActiveMQ's own JMS client, and run
# them against ActiveMQ itself too (Debian's activemq package brings both)
JAVA_PACKAGES := default-jdk-headless activemq

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

install: $(VENV)/.installed

run: install
	mkdir -p data
	$(VENV)/bin/twistd -n --pidfile= pybrokerd --dir=./data

browser:
	@command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "the console test needs: apt-get install $(BROWSER_PACKAGES)"; exit 0; fi; \
	  $$SUDO apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; } || \
	  echo "could not install $(BROWSER_PACKAGES): the console test will fail"; }

java:
	@{ command -v javac >/dev/null && [ -e /usr/share/activemq/lib/activemq-client.jar ]; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "the OpenWire tests need: apt-get install $(JAVA_PACKAGES)"; exit 0; fi; \
	  $$SUDO apt-get install -y -q --no-install-recommends $(JAVA_PACKAGES) >/dev/null || \
	  { $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO apt-get install -y -q --no-install-recommends $(JAVA_PACKAGES) >/dev/null; } || \
	  echo "could not install $(JAVA_PACKAGES): the OpenWire tests will fail"; }

test: install browser java
	$(VENV)/bin/python -m pytest -q

bench: install
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
