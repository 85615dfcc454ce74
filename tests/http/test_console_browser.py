"""The web console in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python package; Playwright never downloads a browser here). ``make test`` installs chromium
(tools/system-deps.sh); when it is missing this test FAILS, it does not skip.

Logs in with HTTP Basic (the browser's credentials, as a user typing them at the prompt), runs
``SELECT * FROM iasql_install('aws_s3'); SELECT * FROM bucket;`` and sees two result tables, sees
the notices of a long call before it ends, cancels one, and sees an error's position marked.
Set ``IASQL_CONSOLE_SCREENSHOT=path.png`` to keep a screenshot (docs/console.png is one).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ALICE_PASSWORD
from tests.http.conftest import PASSWORD

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
#: Flags for a root, offline, headless run (no sandbox as root; nothing phones home).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (tools/system-deps.sh); "
                    "the console's browser test cannot run without it", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser_for(playwright, tmp_path):
    """``browser_for(user, password)``: a new page in a fresh Chromium profile with those Basic credentials."""
    contexts = []

    def make(user: str, password: str):
        ctx = playwright.chromium.launch_persistent_context(
            str(tmp_path / f"profile-{len(contexts)}"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, ignore_https_errors=True, http_credentials={"username": user, "password": password},
            viewport={"width": 1100, "height": 760})
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30000)
        return page

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def alice_db(pg, pg_roles):
    name = f"console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" OWNER alice')
    yield name
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(page, sql: str) -> None:
    page.fill("#sql", sql)
    page.click("#run")


def test_login_install_and_see_two_tables(http_proxy, alice_db, browser_for):
    page = browser_for("alice", ALICE_PASSWORD)
    page.goto(f"https://localhost:{http_proxy.http_port}/?database={alice_db}")
    assert page.title() == "iasql console"
    run(page, "SELECT * FROM iasql_install('aws_s3'); SELECT * FROM bucket;")
    page.wait_for_selector('body[data-running="0"] .result[data-statement="1"][data-done="1"]')
    results = page.locator(".result")
    assert results.count() == 2
    assert results.nth(0).locator("table").count() == 1 and results.nth(1).locator("table").count() == 1
    headers0 = results.nth(0).locator("th").all_text_contents()
    assert "module_name" in headers0
    assert "aws_s3@0.1.0" in results.nth(0).locator("td").all_text_contents()
    assert "name" in results.nth(1).locator("th").all_text_contents()
    assert any(t.startswith("NOTICE: installing aws_s3") for t in page.locator("#notice-list li").all_text_contents())
    shot = os.environ.get("IASQL_CONSOLE_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)
    # a row inserted and read back, in the same tab
    run(page, "INSERT INTO bucket (name) VALUES ('console-bucket'); SELECT name FROM bucket;")
    page.wait_for_selector('body[data-running="0"] .result[data-statement="1"][data-done="1"]')
    assert page.locator(".result").nth(1).locator("td").all_text_contents() == ["console-bucket"]


def test_error_position_is_marked(http_proxy, alice_db, browser_for):
    page = browser_for("alice", ALICE_PASSWORD)
    page.goto(f"https://localhost:{http_proxy.http_port}/?database={alice_db}")
    run(page, "SELECT 1;\nSELECT x FROM no_such_table;")
    page.wait_for_selector('body[data-running="0"] .result.error')
    err = page.locator(".result.error")
    assert "ERROR 42P01: relation \"no_such_table\" does not exist" in err.locator(".message").text_content()
    assert err.locator("mark.error-pos").text_content() == "no_such_table"
    start, end = page.evaluate("[document.getElementById('sql').selectionStart, document.getElementById('sql').selectionEnd]")
    assert page.input_value("#sql")[start:end] == "no_such_table"


def test_wrong_password_gets_no_console(http_proxy, browser_for):
    page = browser_for("alice", "not-her-password")
    response = page.goto(f"https://localhost:{http_proxy.http_port}/")
    assert response.status == 401
    assert page.locator("#sql").count() == 0


def test_notices_stream_and_cancel(sleepy_proxy, browser_for):
    page = browser_for("postgres", PASSWORD)
    page.goto(f"https://localhost:{sleepy_proxy.http_port}/?database={sleepy_proxy.database}")
    t0 = time.monotonic()
    run(page, "SELECT * FROM iasql_sleep(3)")
    page.wait_for_selector("#notice-list li")
    seen_at = time.monotonic() - t0
    assert page.get_attribute("body", "data-running") == "1", "the first notice came only after the call ended"
    assert page.locator(".result").count() == 0
    page.wait_for_selector('body[data-running="0"] .result[data-done="1"]')
    ended_at = time.monotonic() - t0
    assert seen_at < ended_at - 1.5, (seen_at, ended_at)
    assert page.locator("#notice-list li").all_text_contents()[:3] == [
        "NOTICE: slept 0.00 s", "NOTICE: slept 0.50 s", "NOTICE: slept 1.00 s"]
    assert page.locator(".result td").all_text_contents() == ["3"]
    # cancel a long one
    probe = sleepy_proxy.probe
    run(page, "SELECT * FROM iasql_sleep(30); SELECT 'never'")
    page.wait_for_selector("#notice-list li")
    assert page.is_enabled("#cancel")
    t1 = time.monotonic()
    page.click("#cancel")
    page.wait_for_selector('body[data-running="0"] .result.error', timeout=10000)
    assert time.monotonic() - t1 < 5
    assert "ERROR 57014: canceling statement due to user request" in page.locator(".result.error .message").text_content()
    assert page.locator(".result").count() == 1
    assert probe.finished[-1] == "cancelled"
    # and the console goes on
    run(page, "SELECT 'again' AS a")
    page.wait_for_selector('body[data-running="0"] .result[data-done="1"]')
    assert page.locator(".result td").all_text_contents() == ["again"]
