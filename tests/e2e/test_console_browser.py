"""The web console in a real headless Chromium (Debian's, driven by Playwright): an operator logs
in, finds a real update conflict made by a real sync, presses Synchronize → erp wins, watches
the row go, and reads the resolve entry with their name in the record's log.

With TABLESYNC_UPDATE_SCREENSHOTS=1 the errors page's screenshot replaces docs/console-errors.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tablesync.console.web.auth import hash_password
from tests.conftest import free_port, require_tool, wait_for
from tests.integration.helpers import sync
from tests.integration.test_bidirectional import execute, rows, setup

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "operator password 1"


def start_web(env, port: int) -> subprocess.Popen:  # type: ignore[no-untyped-def,type-arg]
    log = open(env.tmp / "web.log", "w")
    users = json.dumps({"alice": hash_password(PASSWORD)})
    proc = subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", "web", "--port", str(port)],
                            env=env.environ(TABLESYNC_WEB_USERS=users, TABLESYNC_WEB_SECRET_KEY="e2e-secret"),
                            cwd=env.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env.processes.append(proc)

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout=30, what="the web console")
    return proc


def test_operator_resolves_a_real_update_conflict_in_the_browser(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chromium = require_tool("chromium", "chromium")
    erp, crm = setup(env, erp_rows=3, crm_rows=1)
    env.start_worker()
    assert sync(env)["inserted"] == 4
    execute(erp, "UPDATE customers SET phone = '+47 1111' WHERE name = 'ERP 2'")
    execute(crm, "UPDATE accounts SET telephone1 = '+47 2222' WHERE name = 'ERP 2'")
    execute(crm, "DELETE FROM accounts WHERE name = 'ERP 3'")  # a deletion conflict too, which stays
    assert sync(env)["conflicts"] == 2
    port = free_port()
    start_web(env, port)
    base = f"http://127.0.0.1:{port}"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(base + "/errors")
        expect(page).to_have_url(f"{base}/login?next=%2Ferrors")
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(base + "/errors")

        listed = page.locator("table.errors tbody tr[data-coupling]")
        expect(listed).to_have_count(2)
        row = listed.filter(has_text="update conflict")
        expect(row).to_have_count(1)
        deletion = listed.filter(has_text="deletion conflict")
        expect(deletion.get_by_role("button", name="Retry")).to_be_disabled()  # its integration record is gone
        expect(deletion.get_by_role("button", name="Restore records")).to_be_enabled()
        expect(row).to_contain_text("phone")
        expect(row).to_contain_text("erp customers")  # records named by app and table, not only by side
        expect(row).to_contain_text("crm accounts")
        expect(row.get_by_role("button", name="Retry")).to_be_enabled()
        expect(row.get_by_role("button", name="Restore records")).to_be_disabled()  # both records exist
        log_href = row.locator("a.key").first.get_attribute("href")
        shot = tmp_path / "console-errors.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("TABLESYNC_UPDATE_SCREENSHOTS"):
            shutil.copy(shot, ROOT / "docs" / "console-errors.png")

        row.get_by_role("button", name="Synchronize → erp wins").click()
        expect(page).to_have_url(f"{base}/jobs/" + page.url.rsplit("/", 1)[-1])
        expect(page.locator("h1")).to_contain_text("resolve of CUSTOMER")
        expect(page.locator("h1 .status")).to_have_text("succeeded", timeout=60_000)  # the page refreshes itself
        expect(page.locator("main")).to_contain_text("alice")

        page.goto(base + "/errors")
        expect(page.locator("table.errors tbody tr[data-coupling]")).to_have_count(1)
        expect(page.locator("table.errors tbody tr", has_text="update conflict")).to_have_count(0)
        # Delete records says which app loses which record, and asks first
        page.locator("table.errors tbody tr", has_text="deletion conflict").get_by_role("button", name="Delete records").click()
        expect(page.locator("h1")).to_have_text("Delete records?")
        expect(page.locator("table.confirm tbody tr")).to_contain_text("erp")
        expect(page.locator("table.confirm tbody tr")).to_contain_text("customers")
        page.get_by_role("link", name="Cancel").click()
        expect(page.locator("table.errors tbody tr[data-coupling]")).to_have_count(1)  # nothing was deleted

        page.goto(base + log_href)  # type: ignore[operator]
        resolved = page.locator("tbody tr", has_text="resolve")
        expect(resolved.first).to_be_visible()
        expect(resolved.first.locator("td.operator")).to_have_text("alice")
        expect(resolved.first).to_contain_text("an operator chose the local values")
        browser.close()

    assert rows(crm, "SELECT name, telephone1 FROM accounts WHERE name = 'ERP 2'") == {"ERP 2": ("+47 1111",)}
    assert rows(erp, "SELECT name, phone FROM customers WHERE name = 'ERP 2'") == {"ERP 2": ("+47 1111",)}
