"""The admin console end to end in headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by `make test`): load the page, see a queue a STOMP client made,
purge it from the page."""

import json
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from support import BrokerProcess, RawStomp, unique


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def test_see_a_queue_and_purge_it_from_the_page(tmp_path, browser):
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        admin = broker.admin_port()
        name = unique("console")
        c = RawStomp(broker.port)
        c.connect()
        for i in range(3):
            c.receipt("SEND", {"destination": "/queue/" + name, "persistent": "true"}, b"m")
        c.close()
        browser.get("http://127.0.0.1:%d/#destinations" % admin)
        wait = WebDriverWait(browser, 15)
        row = '#destination-table tr[data-name="/queue/%s"]' % name

        # the table is redrawn every 2 s: an element found just before may be gone, so each
        # look (and the click) is retried until it works
        def pending(driver):
            try:
                found = driver.find_elements(By.CSS_SELECTOR, row + " td:nth-child(2)")
                return found[0].text if found else None
            except StaleElementReferenceException:
                return None

        def purge(driver):
            try:
                driver.find_element(By.CSS_SELECTOR, row + " button.purge").click()
                return True
            except StaleElementReferenceException:
                return False
        wait.until(lambda d: pending(d) == "3")
        assert "master" in browser.find_element(By.ID, "summary").text
        wait.until(purge)
        wait.until(lambda d: pending(d) == "0")
        with urllib.request.urlopen("http://127.0.0.1:%d/api/destinations" % admin) as r:
            rows = {d["name"]: d for d in json.load(r)}
        assert rows["/queue/" + name]["pending"] == 0 and rows["/queue/" + name]["dequeued"] == 3
    finally:
        broker.stop()


def test_a_browser_page_speaks_stomp_over_websocket(tmp_path, browser):
    """What stomp.js does in a page: a WebSocket offering the STOMP subprotocols, CONNECT,
    SUBSCRIBE, and a MESSAGE sent by a STOMP client over TCP arriving in the page."""
    from support import free_port
    ws_port = free_port()
    broker = BrokerProcess("--stomp-ws=tcp:%d:interface=127.0.0.1" % ws_port,
                           directory=str(tmp_path)).start()
    try:
        dest = "/queue/" + unique("page")
        browser.get("http://127.0.0.1:%d/" % broker.admin_port())
        browser.set_script_timeout(15)
        opened = browser.execute_async_script("""
            const [url, dest, done] = arguments;
            const ws = new WebSocket(url, ['v10.stomp', 'v11.stomp', 'v12.stomp']);
            window.received = [];
            ws.onmessage = (e) => {
                window.received.push(e.data);
                if (e.data.startsWith('RECEIPT')) done(ws.protocol);
            };
            ws.onerror = () => done('error');
            ws.onopen = () => {
                ws.send('CONNECT\\naccept-version:1.1,1.2\\nhost:localhost\\n\\n\\0');
                ws.send('SUBSCRIBE\\ndestination:' + dest + '\\nid:0\\nreceipt:sub\\n\\n\\0');
            };
            window.stompSocket = ws;
        """, "ws://127.0.0.1:%d/stomp" % ws_port, dest)
        assert opened == "v12.stomp"
        c = RawStomp(broker.port)
        c.connect()
        c.receipt("SEND", {"destination": dest}, "to the page, ünïcode".encode())
        c.close()
        WebDriverWait(browser, 15).until(lambda d: d.execute_script(
            "return window.received.some(f => f.startsWith('MESSAGE'))"))
        message = browser.execute_script(
            "return window.received.find(f => f.startsWith('MESSAGE'))")
        assert ("destination:" + dest) in message
        assert message.endswith("to the page, ünïcode\0\n")
    finally:
        broker.stop()
