"""The dashboard's page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against embedded okq servers over TCP.

Live updates within a second, the plot, peeks, writes refused without ``--allow-writes``
and confirmed with it, the escaping of hostile contents and names, the server-down banner
and the recovery, several tabs on one sampler, ten thousand queues paged, the keyboard and
a phone-sized window.  The screenshots in docs/images are made here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from okq_transports.dashboard import Dashboard
from okq_transports.dashboard._sampler import name_key
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "needs Debian's chromium and chromium-driver (apt install them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer("127.0.0.1", 0) as srv:
        yield srv


def open_dashboard(
    browser: WebDriver, servers: list[ThreadedServer], *, writes: bool = False
) -> Dashboard:
    dashboard = Dashboard(
        [s.url for s in servers], listen=("127.0.0.1", 0), allow_writes=writes, interval_s=0.2
    )
    dashboard.start()
    browser.set_window_size(1280, 1000)
    browser.get(dashboard.url)
    return dashboard


def wait(browser: WebDriver, check: Callable[[WebDriver], Any], seconds: float = 5.0) -> Any:
    return WebDriverWait(
        browser, seconds, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,)
    ).until(check)


def cell(browser: WebDriver, server: int, queue: str, field: str) -> str | None:
    rows = browser.find_elements(
        By.CSS_SELECTOR, f'#server-{server} tr[data-key="{name_key(queue)}"] td.{field}'
    )
    return rows[0].text if rows else None


def row_exists(browser: WebDriver, queue: str) -> bool:
    key = name_key(queue)
    return bool(browser.find_elements(By.CSS_SELECTOR, f'tr[data-key="{key}"]'))


def select(browser: WebDriver, queue: str) -> None:
    key = name_key(queue)
    wait(browser, lambda b: row_exists(b, queue))
    browser.find_element(By.CSS_SELECTOR, f'tr[data-key="{key}"] button').click()  # kept rows
    wait(browser, lambda b: b.find_element(By.ID, "detail").is_displayed())


def test_the_queue_list_updates_within_a_second_and_the_plot_draws(
    browser: WebDriver, server: ThreadedServer
) -> None:
    with Client(server.address) as client:
        client.push("live", b"first")
        dashboard = open_dashboard(browser, [server])
        try:
            wait(browser, lambda b: cell(b, 0, "live", "total") == "1")
            pushed = time.monotonic()
            client.push("live", b"second")
            client.push("live", b"third")
            wait(browser, lambda b: cell(b, 0, "live", "total") == "3", seconds=2)
            assert time.monotonic() - pushed < 1.0
            assert "Reachable" in browser.find_element(By.CSS_SELECTOR, "#server-0 .state").text
            select(browser, "live")

            def plotted(b: WebDriver) -> bool:
                lines = b.find_elements(By.CSS_SELECTOR, "#plot polyline.total")
                return bool(lines) and len((lines[0].get_attribute("points") or "").split()) >= 3

            wait(browser, plotted)
            label = browser.find_element(By.ID, "plot-label").get_attribute("textContent") or ""
            assert "Depth of live" in label
            assert "total 3" in label
            IMAGES.mkdir(parents=True, exist_ok=True)
            browser.find_element(By.ID, "peek-next").click()
            wait(browser, lambda b: "first" in b.find_element(By.ID, "event").text)
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(IMAGES / "dashboard.png"))
            browser.find_element(By.ID, "peek-last").click()
            wait(browser, lambda b: "third" in b.find_element(By.ID, "event").text)
            assert "size: 5 bytes" in browser.find_element(By.ID, "event").text
        finally:
            dashboard.stop()
            client.flush("live")


def test_writes_are_refused_without_allow_writes(
    browser: WebDriver, server: ThreadedServer
) -> None:
    with Client(server.address) as client:
        client.push("keep", b"x")
        dashboard = open_dashboard(browser, [server])
        try:
            select(browser, "keep")
            assert not browser.find_element(By.ID, "flush").is_displayed()
            status = browser.execute_async_script(
                """
                const done = arguments[arguments.length - 1];
                const token = document.querySelector('meta[name="okq-token"]').content;
                fetch("/api/flush", {method: "POST", headers: {"Content-Type":
                  "application/json", "X-OKQ-Token": token},
                  body: JSON.stringify({server: 0, queue: arguments[0]})})
                  .then(r => r.json().then(j => done([r.status, j.error])));
                """,
                name_key("keep"),
            )
            assert status == [403, "writes are off (start with --allow-writes)"]
            assert client.status("keep")[0].total == 1
        finally:
            dashboard.stop()
            client.flush("keep")


def test_writes_with_allow_writes_need_a_confirmation(
    browser: WebDriver, server: ThreadedServer
) -> None:
    with Client(server.address) as client:
        client.push("doomed", b"x")
        dashboard = open_dashboard(browser, [server], writes=True)
        try:
            select(browser, "doomed")
            browser.find_element(By.ID, "flush").click()
            alert = wait(browser, lambda b: b.switch_to.alert)
            assert "Every event in it is deleted" in alert.text
            alert.dismiss()  # no: nothing happens
            time.sleep(0.5)
            assert client.status("doomed")[0].total == 1
            browser.find_element(By.ID, "push").click()
            wait(browser, lambda b: b.switch_to.alert).accept()
            wait(browser, lambda b: "Pushed event" in b.find_element(By.ID, "action-result").text)
            assert client.status("doomed")[0].total == 2
            browser.find_element(By.ID, "flush").click()
            wait(browser, lambda b: b.switch_to.alert).accept()
            wait(browser, lambda b: b.find_element(By.ID, "action-result").text == "Flushed.")
            assert client.status("doomed")[0].total == 0
            wait(browser, lambda b: not row_exists(b, "doomed"))
        finally:
            with_no_alert(browser)
            dashboard.stop()


def with_no_alert(browser: WebDriver) -> None:
    with contextlib.suppress(NoAlertPresentException):
        browser.switch_to.alert.dismiss()


HOSTILE = [
    b"<script>window.pwned = 1</script>",
    b'"><img src=x onerror="window.pwned = 2">',
    b'<svg onload="window.pwned = 3"></svg>\' + "',
]


def test_nothing_in_contents_or_names_runs(browser: WebDriver, server: ThreadedServer) -> None:
    queue = '<img src=x onerror="window.pwned = 4">'
    with Client(server.address) as client:
        for contents in HOSTILE:
            client.push(queue, contents)
        dashboard = open_dashboard(browser, [server], writes=True)
        try:
            select(browser, queue)
            title = browser.find_element(By.ID, "detail-title").text
            assert queue in title  # shown as text
            browser.find_element(By.ID, "peek-next").click()
            wait(browser, lambda b: "window.pwned = 1" in b.find_element(By.ID, "event").text)
            browser.find_element(By.ID, "peek-last").click()
            wait(browser, lambda b: "svg onload" in b.find_element(By.ID, "event").text)
            assert browser.find_element(By.ID, "event").text.endswith(HOSTILE[2].decode())
            time.sleep(0.3)  # anything that would run has run
            assert browser.execute_script("return window.pwned") is None
            assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
        finally:
            dashboard.stop()
            client.flush(queue)


def test_the_banner_says_a_server_is_down_and_goes_when_it_is_back(
    browser: WebDriver,
) -> None:
    up = ThreadedServer("127.0.0.1", 0)
    down = ThreadedServer("127.0.0.1", 0)
    up.start()
    down.start()
    try:
        dashboard = open_dashboard(browser, [up, down])
        try:
            wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".server")) == 2)
            down.stop()

            def banner(b: WebDriver) -> str:
                state = b.find_element(By.CSS_SELECTOR, "#server-1 .state")
                return state.text if state.get_attribute("role") == "alert" else ""

            text = wait(browser, banner)
            assert text.startswith("Unreachable since")
            assert "Reachable" in browser.find_element(By.CSS_SELECTOR, "#server-0 .state").text
            browser.save_screenshot(str(IMAGES / "dashboard-server-down.png"))
            down.start()
            wait(browser, lambda b: not banner(b))
            assert "Reachable" in browser.find_element(By.CSS_SELECTOR, "#server-1 .state").text
        finally:
            dashboard.stop()
    finally:
        up.stop()
        down.stop()


def test_many_tabs_share_one_sampler(browser: WebDriver, server: ThreadedServer) -> None:
    dashboard = open_dashboard(browser, [server])
    first = browser.current_window_handle
    try:
        for _ in range(3):
            browser.switch_to.new_window("tab")
            browser.get(dashboard.url)
        samplers = [t for t in threading.enumerate() if t.name == "okq-dashboard-sampler"]
        assert len(samplers) == 1
        before = dashboard.sampler.version
        time.sleep(1.0)
        assert dashboard.sampler.version - before <= 6  # ~5 at 0.2 s, whatever the tabs
    finally:
        for handle in browser.window_handles:
            if handle != first:
                browser.switch_to.window(handle)
                browser.close()
        browser.switch_to.window(first)
        dashboard.stop()


def test_ten_thousand_queues_are_paged_and_filtered(
    browser: WebDriver, server: ThreadedServer
) -> None:
    with Client(server.address) as client:
        for n in range(10_000):
            client.push(f"q{n:05d}", b"x")
        dashboard = open_dashboard(browser, [server])
        try:
            caption = "#server-0 caption"
            wait(
                browser,
                lambda b: "of 10000 queues" in b.find_element(By.CSS_SELECTOR, caption).text,
            )
            assert len(browser.find_elements(By.CSS_SELECTOR, "#server-0 tbody tr")) == 50
            assert browser.find_element(By.ID, "pageinfo").text == "Page 1 of 200"
            browser.find_element(By.ID, "next").click()
            wait(browser, lambda b: row_exists(b, "q00050"))
            field = browser.find_element(By.ID, "match")
            field.send_keys("q0999")
            wait(
                browser,
                lambda b: "10 of 10000 queues" in b.find_element(By.CSS_SELECTOR, caption).text,
            )
            sample_s = dashboard.sampler.servers[0].sample_s
            assert sample_s < 2.0  # one QSTATUS for all of them
        finally:
            dashboard.stop()


def test_keyboard_and_a_phone_sized_window(browser: WebDriver, server: ThreadedServer) -> None:
    with Client(server.address) as client:
        client.push("small-screen-queue-with-a-long-name", b"hello")
        dashboard = open_dashboard(browser, [server])
        try:
            wait(browser, lambda b: row_exists(b, "small-screen-queue-with-a-long-name"))
            browser.set_window_size(390, 844)
            body = browser.find_element(By.TAG_NAME, "body")
            for _ in range(10):  # Tab to the queue's button, Enter opens it
                body.send_keys(Keys.TAB)
                active = browser.switch_to.active_element
                if active.get_attribute("aria-label") == (
                    "Show queue small-screen-queue-with-a-long-name"
                ):
                    break
            else:
                pytest.fail("the queue's button is not reachable with Tab")
            active.send_keys(Keys.ENTER)
            wait(browser, lambda b: b.find_element(By.ID, "detail").is_displayed())
            assert browser.switch_to.active_element.get_attribute("id") == "peek-next"
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0
            for control in browser.find_elements(By.CSS_SELECTOR, "button, input"):
                if not control.is_displayed():
                    continue
                named = control.text or control.get_attribute("aria-label") or ""
                labelled = browser.find_elements(
                    By.CSS_SELECTOR, f'label[for="{control.get_attribute("id")}"]'
                )
                assert named.strip() or labelled, control.get_attribute("outerHTML")
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(IMAGES / "dashboard-phone.png"))
        finally:
            browser.set_window_size(1280, 900)
            dashboard.stop()
            client.flush("small-screen-queue-with-a-long-name")


def test_the_dashboard_going_away_is_said_on_the_page(
    browser: WebDriver, server: ThreadedServer
) -> None:
    dashboard = open_dashboard(browser, [server])
    wait(browser, lambda b: "Updated" in b.find_element(By.ID, "updated").text)
    dashboard.stop()
    try:
        wait(browser, lambda b: b.find_element(By.ID, "offline").is_displayed())
    except TimeoutException:  # pragma: no cover - the failure message
        pytest.fail("no banner once the dashboard stopped")
    assert "cannot be reached" in browser.find_element(By.ID, "offline").text
