"""The browser console at kvserver's ``/``, driven in a real headless Chromium.

Chromium and its WebDriver come from Debian (``chromium``,
``chromium-driver``; ``scripts/test`` installs them and sets
``KV_REQUIRE_BROWSER=1``, so there a missing browser fails the test instead
of skipping it). Selenium drives the browser through WebDriver. The walk is
what a person does: log in with a token, browse a 10k-key store to a key,
edit it, lose a conflict to a concurrent ``kv set`` and see it reported,
delete, view a JSON value pretty and in hex, create a key with a TTL and
find its lease in the leases tab, find there a lease made by another client
and page through its keys, watch a prefix while ``kv`` writes, watch the dashboard move under
``kv bench``, and be refused a write with a read-only token; and browse,
open, edit and delete keys that are not UTF-8. Every step
saves a screenshot (``$KV_SCREENSHOTS``, else the test's temporary
directory) and asserts on the page, never on timing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kvserver_process import KvServer, serve
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from keyvalue import Client, KeyNotFound

ADMIN = "admin-token"
VIEWER = "viewer-token"
#: How long a step may take before the test fails (a slow shared machine).
PATIENCE = 30.0


def chromedriver() -> str | None:
    """The path of Debian's chromedriver, if installed."""
    for candidate in ("/usr/bin/chromedriver", shutil.which("chromedriver")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def console_server(
    kvserver_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KvServer]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(f"{ADMIN} readwrite\n{VIEWER} read\n")
    yield from serve(
        kvserver_bin,
        tmp_path_factory,
        ["--http-listen", "127.0.0.1:0", "--auth-token-file", str(tokens)],
        disk=True,
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver_path = chromedriver()
    if driver_path is None:
        message = "Chromium's WebDriver is not installed (Debian: chromium chromium-driver)"
        if os.environ.get("KV_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    binary = shutil.which("chromium")
    if binary:
        options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def http_url(server: KvServer) -> str:
    match = re.search(r"^http on (http://\S+)$", server.log(), re.MULTILINE)
    assert match, server.log()
    return match.group(1)


def kv(server: KvServer, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the real ``kv`` against the server with the admin token."""
    binary = os.environ.get("KV_BIN") or str(Path(server.binary).with_name("kv"))
    return subprocess.run(
        [binary, "--addr", server.address, "--token", ADMIN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class Walk:
    """The browser, the server and where screenshots go, with waiting helpers."""

    def __init__(self, driver: WebDriver, shots: Path) -> None:
        self.driver = driver
        self.shots = shots
        self.step = 0

    def el(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id: str) -> str:
        return str(self.driver.find_element(By.ID, element_id).text)

    def until(self, what: str, condition: Callable[[], object]) -> None:
        """Waits for ``condition`` to hold; fails naming ``what``."""
        WebDriverWait(self.driver, PATIENCE, poll_frequency=0.1).until(
            lambda _driver: condition(), message=f"the page never showed: {what}"
        )

    def shot(self, name: str) -> None:
        self.step += 1
        self.driver.save_screenshot(str(self.shots / f"{self.step:02d}-{name}.png"))

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def type_into(self, element_id: str, text: str) -> None:
        element = self.driver.find_element(By.ID, element_id)
        element.clear()
        element.send_keys(text)

    def open_key(self, shown: str, value: str) -> None:
        """Opens the tree's key shown as ``shown``, which holds ``value``."""
        self.driver.find_element(By.XPATH, f"//li[@data-value='{shown}']").click()
        self.until(
            f"{shown} in the editor", lambda: self.el("value").get_attribute("value") == value
        )
        assert self.el("key-input").get_attribute("value") == shown

    def log_in(self, token: str) -> None:
        self.until("the token dialog", lambda: self.el("token-dialog").is_displayed())
        self.type_into("token-input", token)
        self.click("token-save")


def test_a_person_browses_edits_watches_and_is_refused_when_read_only(
    console_server: KvServer, browser: WebDriver, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("KV_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    walk = Walk(browser, shots)
    with Client(console_server.address, token=ADMIN) as client:
        for group in range(100):
            client.batch_put(
                {f"app/{group:02d}/item{i:03d}": f"value {group}.{i}" for i in range(100)}
            )
        client.set("app/config", '{"mode": "dark", "retries": 3}')

        # Open the console: it asks for a token, and browses from the top.
        browser.get(http_url(console_server))
        walk.log_in(ADMIN)
        walk.until("the admin's identity", lambda: "readwrite" in walk.text("identity"))
        walk.until("the top of the tree", lambda: "app/" in walk.text("tree"))
        walk.shot("logged-in")

        # Every control has a name a screen reader says (a label, an
        # aria-label or its text), and the tabs move with the arrow keys.
        unnamed = browser.execute_script(
            "return Array.from(document.querySelectorAll('input, select, textarea, button'))"
            ".filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')"
            " && !e.textContent.trim()).map((e) => e.id || e.outerHTML)"
        )
        assert unnamed == [], unnamed
        walk.el("tab-key").send_keys(Keys.ARROW_RIGHT)
        walk.until("the watch tab", lambda: walk.el("pane-watch").is_displayed())
        assert walk.el("tab-watch").get_attribute("aria-selected") == "true"
        assert browser.switch_to.active_element == walk.el("tab-watch")
        assert not walk.el("pane-key").is_displayed()
        walk.el("tab-watch").send_keys(Keys.ARROW_LEFT)
        walk.until("the key tab", lambda: walk.el("pane-key").is_displayed())

        # Browse with the keyboard: into app/ and back up, in again, down
        # the list, then into app/42/ and to a key.
        walk.el("tree").send_keys(Keys.HOME, Keys.ENTER)
        walk.until("the groups of app/", lambda: "42/" in walk.text("tree"))
        walk.el("tree").send_keys(Keys.BACKSPACE)
        walk.until("the top again", lambda: "42/" not in walk.text("tree"))
        assert walk.el("prefix-input").get_attribute("value") == ""
        walk.el("tree").send_keys(Keys.HOME, Keys.ENTER)
        walk.until("the groups of app/", lambda: "42/" in walk.text("tree"))
        walk.el("tree").send_keys(Keys.HOME, Keys.ARROW_DOWN, Keys.ARROW_DOWN)
        focused = browser.switch_to.active_element
        assert focused.get_attribute("data-value") == "app/02/"
        assert focused.get_attribute("aria-selected") == "true"
        # 101 entries under app/: one page of 100, and a button for more.
        assert len(browser.find_elements(By.CSS_SELECTOR, "#tree li")) == 100
        assert walk.el("more").is_displayed()
        browser.find_element(By.XPATH, "//li[@data-value='app/42/']").click()
        walk.until("the keys of app/42/", lambda: "item007" in walk.text("tree"))
        walk.open_key("app/42/item007", "value 42.7")
        assert walk.text("meta-version") == "1"
        walk.shot("browsed-to-key")

        # Edit: a compare-and-set on the revision loaded.
        walk.type_into("value", "edited in the browser")
        walk.click("save")
        walk.until("the save", lambda: "Saved" in walk.text("message"))
        assert client.get("app/42/item007") == "edited in the browser"
        walk.until("the new version", lambda: walk.text("meta-version") == "2")
        walk.shot("edited")

        # Lose a conflict: kv writes the key after the browser loaded it.
        kv(console_server, "set", "app/42/item007", "written by kv meanwhile")
        walk.type_into("value", "this edit must not win")
        walk.click("save")
        walk.until("the conflict", lambda: walk.el("conflict").is_displayed())
        assert "written by kv meanwhile" in walk.text("conflict")
        assert client.get("app/42/item007") == "written by kv meanwhile"
        walk.shot("conflict")

        # Delete (after loading the key's current revision).
        walk.click("load")
        walk.until(
            "the reloaded key",
            lambda: (
                browser.find_element(By.ID, "value").get_attribute("value")
                == "written by kv meanwhile"
            ),
        )
        walk.click("delete")
        browser.switch_to.alert.accept()
        walk.until("the delete", lambda: "Deleted" in walk.text("message"))
        with pytest.raises(KeyNotFound):
            client.get("app/42/item007")
        walk.shot("deleted")

        # A JSON value, as pretty JSON and as hex.
        walk.type_into("key-input", "app/config")
        walk.click("load")
        walk.until("app/config", lambda: walk.text("meta-version") == "1")
        Select(walk.el("view-mode")).select_by_value("json")
        walk.until("pretty JSON", lambda: '"mode": "dark",' in walk.text("value-view"))
        assert walk.text("value-view").splitlines() == [
            "{",
            '  "mode": "dark",',
            '  "retries": 3',
            "}",
        ]
        walk.shot("pretty-json")
        Select(walk.el("view-mode")).select_by_value("hex")
        walk.until("hex", lambda: walk.text("value-view").startswith("00000000  7b 22 6d 6f"))
        walk.shot("hex")
        Select(walk.el("view-mode")).select_by_value("text")

        # A new key with a TTL: it gets a lease, which the leases tab shows
        # with its key.
        walk.click("new-key")
        walk.type_into("key-input", "app/session")
        walk.type_into("value", "short-lived")
        walk.type_into("ttl", "60s")
        walk.click("save")
        walk.until("the save", lambda: "Saved" in walk.text("message"))
        walk.until("the lease", lambda: walk.text("meta-lease").isdigit())
        described = kv(console_server, "get", "-w", "app/session").stdout
        assert f"lease: {walk.text('meta-lease')}" in described, described
        walk.click("tab-leases")
        walk.click("leases-refresh")
        walk.until("the lease's row", lambda: "app/session" in walk.text("leases"))
        row = walk.text("leases")
        assert walk.text("meta-lease") in row, row
        assert "60 s" in row, row
        walk.shot("ttl-lease")

        # A lease the console has never seen, with more keys than a row
        # shows at first: the tab lists every lease (GET /v1/leases), and
        # "More keys" pages through the rest of its keys.
        workers = client.lease_grant(120)
        client.batch_put({f"jobs/worker-{i:02d}": "busy" for i in range(12)}, lease=workers.id)
        walk.click("leases-refresh")
        row_path = f"//tr[@data-lease='{workers.id}']"
        walk.until("the unseen lease", lambda: browser.find_elements(By.XPATH, row_path))
        lease_row = browser.find_element(By.XPATH, row_path)
        assert "120 s" in lease_row.text, lease_row.text
        shown = [b.text for b in lease_row.find_elements(By.CSS_SELECTOR, ".lease-keys button")]
        assert shown == [f"jobs/worker-{i:02d}" for i in range(10)], shown
        more_keys = lease_row.find_element(By.XPATH, ".//button[text()='More keys']")
        assert more_keys.get_attribute("aria-label") == f"More keys of lease {workers.id}"
        more_keys.click()
        walk.until("the rest of its keys", lambda: "jobs/worker-11" in lease_row.text)
        assert not more_keys.is_displayed()
        walk.shot("lease-and-its-keys")
        lease_row.find_element(By.XPATH, ".//button[text()='jobs/worker-11']").click()
        walk.until(
            "the lease's key in the editor",
            lambda: walk.el("key-input").get_attribute("value") == "jobs/worker-11",
        )
        walk.until("its lease", lambda: walk.text("meta-lease") == str(workers.id))
        walk.click("tab-key")

        # Watch a prefix while kv writes under it.
        walk.click("tab-watch")
        walk.type_into("watch-prefix", "app/07/")
        walk.click("watch-start")
        walk.until("the watch", lambda: "Watching" in walk.text("watch-state"))
        kv(console_server, "set", "app/07/fresh", "hello from kv")
        kv(console_server, "del", "app/07/item001")
        walk.until(
            "the put", lambda: 'PUT app/07/fresh = "hello from kv"' in walk.text("watch-log")
        )
        walk.until("the delete", lambda: "DELETE app/07/item001" in walk.text("watch-log"))
        walk.shot("watch")
        walk.click("watch-stop")

        # The dashboard moves under kv bench.
        walk.click("tab-dashboard")
        walk.until("the key count", lambda: rate(walk.text("dash-keys")) >= 10_000)
        bench = subprocess.Popen(
            [
                os.environ.get("KV_BIN") or str(Path(console_server.binary).with_name("kv")),
                "bench",
                "--addr",
                console_server.address,
                "--token",
                ADMIN,
                "--duration",
                "4s",
                "--key-prefix",
                "bench/",
                "--concurrency",
                "8",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            walk.until("requests per second", lambda: rate(walk.text("dash-rps")) > 50)
            walk.until("commits", lambda: rate(walk.text("dash-commits")) > 0)
            walk.shot("dashboard")
        finally:
            assert bench.wait(timeout=120) == 0

        # A read-only token: the console says what it may not do, and the
        # server refuses a write the console is made to send anyway.
        walk.click("token-button")
        walk.log_in(VIEWER)
        walk.until("the read-only identity", lambda: walk.text("identity") == "token: read")
        walk.click("tab-key")
        assert not walk.el("save").is_enabled()
        assert "read-only" in (walk.el("save").get_attribute("title") or "")
        assert "may not create" in walk.text("write-note")
        walk.type_into("key-input", "app/config")
        walk.click("load")
        walk.until("the key, read-only", lambda: walk.text("meta-version") == "1")
        browser.execute_script("document.getElementById('save').disabled = false;")
        walk.type_into("value", "a write a reader may not make")
        walk.click("save")
        walk.until("the refusal", lambda: "may only read" in walk.text("message"))
        assert client.get("app/config") == '{"mode": "dark", "retries": 3}'
        walk.shot("read-only-refused")


def test_keys_that_are_not_utf8_are_browsed_opened_edited_and_deleted(
    console_server: KvServer, browser: WebDriver, tmp_path: Path
) -> None:
    r"""Keys of any bytes are browsed, opened, edited and deleted.

    The tree and the leases tab show them escaped (``\xff``), and opening,
    saving (compare-and-set) and deleting one asks for its own bytes, not
    for its text or base64.
    """
    shots = Path(os.environ.get("KV_SCREENSHOTS") or tmp_path / "screenshots") / "binary"
    shots.mkdir(parents=True, exist_ok=True)
    walk = Walk(browser, shots)
    with Client(console_server.address, token=ADMIN) as client:
        client.batch_put({b"bin/\xff\x00a": "first", b"bin/\x80dir/k": "in a group"})
        leased = client.lease_grant(120)
        client.batch_put({b"bin/\xfelease": "leased"}, lease=leased.id)

        # Logged in with the admin's token (whatever the other test left).
        browser.get(http_url(console_server))
        browser.execute_script(f"sessionStorage.setItem('kv-token', '{ADMIN}');")
        browser.get(http_url(console_server))
        walk.until("the admin's identity", lambda: "readwrite" in walk.text("identity"))

        # The tree under bin/: each key and group escaped where not UTF-8.
        walk.type_into("prefix-input", "bin/")
        walk.el("prefix-input").send_keys(Keys.ENTER)
        walk.until("the keys of bin/", lambda: "\\xff\\x00a" in walk.text("tree"))
        items = browser.find_elements(By.CSS_SELECTOR, "#tree li")
        values = [item.get_attribute("data-value") for item in items]
        # In byte order, as the server lists them.
        assert values == ["bin/\\x80dir/", "bin/\\xfelease", "bin/\\xff\\x00a"], values
        walk.shot("binary-tree")

        # Into the group whose name is not UTF-8, and to its key.
        browser.find_element(By.XPATH, "//li[@data-value='bin/\\x80dir/']").click()
        walk.until("the group's key", lambda: walk.text("tree") == "k")
        assert walk.el("prefix-input").get_attribute("value") == "bin/\\x80dir/"
        walk.open_key("bin/\\x80dir/k", "in a group")

        # Open the key 0xFF 0x00 a, edit it (compare-and-set), lose a
        # conflict, delete it.
        walk.el("tree").send_keys(Keys.BACKSPACE)
        walk.until("bin/ again", lambda: "\\xff\\x00a" in walk.text("tree"))
        walk.open_key("bin/\\xff\\x00a", "first")
        walk.type_into("value", "edited")
        walk.click("save")
        walk.until("the save", lambda: "Saved" in walk.text("message"))
        assert stored(client, b"bin/\xff\x00a") == (b"edited", 2)
        walk.until("the new version", lambda: walk.text("meta-version") == "2")
        walk.shot("binary-edited")
        client.batch_put({b"bin/\xff\x00a": "meanwhile"})
        walk.type_into("value", "must not win")
        walk.click("save")
        walk.until("the conflict", lambda: walk.el("conflict").is_displayed())
        assert "meanwhile" in walk.text("conflict")
        walk.click("load")
        walk.until("the reloaded key", lambda: walk.text("meta-version") == "3")
        walk.click("delete")
        browser.switch_to.alert.accept()
        walk.until("the delete", lambda: "Deleted" in walk.text("message"))
        assert client.get_kv(b"bin/\xff\x00a") is None
        walk.shot("binary-deleted")

        # A key typed with an escape is created with that byte.
        walk.click("new-key")
        walk.type_into("key-input", "bin/\\x01typed")
        walk.type_into("value", "typed")
        walk.click("save")
        walk.until("the save", lambda: "Saved" in walk.text("message"))
        assert stored(client, b"bin/\x01typed") == (b"typed", 1)

        # The leases tab shows the leased key escaped, and opens it.
        walk.click("tab-leases")
        walk.click("leases-refresh")
        row_path = f"//tr[@data-lease='{leased.id}']"
        walk.until("the lease", lambda: browser.find_elements(By.XPATH, row_path))
        row = browser.find_element(By.XPATH, row_path)
        shown = [b.text for b in row.find_elements(By.CSS_SELECTOR, ".lease-keys button")]
        assert shown == ["bin/\\xfelease"], shown
        row.find_element(By.CSS_SELECTOR, ".lease-keys button").click()
        walk.until(
            "the leased key in the editor",
            lambda: browser.find_element(By.ID, "value").get_attribute("value") == "leased",
        )
        assert walk.text("meta-lease") == str(leased.id)
        walk.shot("binary-lease")


def stored(client: Client, key: bytes) -> tuple[bytes, int]:
    """The value and version of ``key`` in the store, which must hold it."""
    kv = client.get_kv(key)
    assert kv is not None, key
    return kv.value, kv.version


def rate(text: str) -> float:
    """A dashboard figure as a number (``1.2 k`` is 1200; no figure yet is 0)."""
    match = re.match(r"([\d.]+)\s*([kMG]?)", text)
    if not match:
        return 0.0
    scale = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]
    return float(match.group(1)) * scale
