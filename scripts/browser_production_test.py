#!/usr/bin/env python3
"""Browser test of the operator console outside demo mode, run by scripts/operator-test against a live `pkr serve`
with DEBUG=0 and PKR_ADMIN_TOKEN set (its own empty SQLite file, nothing seeded).

Checks:
  - GET /metrics answers 401 {"error": "unauthorized"} without the operator token and 200 text with it (urllib);
  - the console (headless Chromium, Selenium) asks for the token: the token form shows, no operator data does;
  - a wrong token is reported as refused and not kept;
  - the right token shows the health section with every invariant check holding; the token is in the tab's
    sessionStorage under 'pkr-operator-token' and nowhere else (no localStorage entry, no cookie holds it);
  - there is no demo customer outside demo mode, and the page does not ask for one: the customer section asks
    for a customer id, and no request goes to GET /api/me or to GET /api/balance without a user_id, before or
    after the token is accepted (checked over HTTP that those two would answer 409 demo_not_seeded);
  - with the token, the New customer form creates a customer (the bearer token, no CSRF token) and the page then
    shows that customer's balance and ledger; the server agrees;
  - reloading the tab keeps it; a new tab and a new browser session ask for it again;
  - "Forget token" clears it and brings the form back;
  - the browser logged no SEVERE message other than Chrome's own "Failed to load resource" network lines for the
    401 answers of the operator endpoints without the token (Chrome logs every non-2xx response so; page code
    cannot prevent it). Anything else SEVERE, a 409 or a JavaScript error above all, fails the run.

Environment: PKR_BASE_URL, PKR_ADMIN_TOKEN, PKR_ARTIFACTS (temp dir for the screenshots).
Exit status 0 when every check passes, 1 otherwise.
"""

import functools
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from console_browser import balance, check, clear_requests, fill, results, start_browser, text, wait_until

BASE = os.environ["PKR_BASE_URL"].rstrip("/")
TOKEN = os.environ["PKR_ADMIN_TOKEN"]
ARTIFACTS = os.environ.get("PKR_ARTIFACTS") or "/tmp"
TOKEN_KEY = "pkr-operator-token"
# Chrome's own console line for an HTTP error answer, e.g.
# "http://127.0.0.1:1234/api/debug/summary - Failed to load resource: the server responded with a status of 401
# (Unauthorized)".
NETWORK_ERROR = re.compile(r"^(?P<url>\S+) - Failed to load resource: the server responded with a status of "
                           r"(?P<status>\d{3}) \([^)]*\)\s*$")
# Outside demo mode there is no demo customer (only the demo seed creates one), so these answer 409
# demo_not_seeded (check_customer_endpoints); the page must not ask for them there.
UNSEEDED_PATHS = ("/api/me", "/api/balance")



# ---- /metrics without a browser ------------------------------------------------------------------------------

def get(path, headers=None):
    request = urllib.request.Request(BASE + path, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@functools.lru_cache(maxsize=None)
def expected_checks():
    """How many invariant checks the server reports, as the console must show them."""
    status, _, raw = get("/api/debug/summary", {"Authorization": "Bearer " + TOKEN})
    if status != 200:
        raise SystemExit(f"GET /api/debug/summary with the token answered {status}: {raw[:200]!r}")
    return len(json.loads(raw)["invariants"]["checks"])


def check_metrics():
    status, headers, raw = get("/metrics")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    check("GET /metrics without a token answers 401 {\"error\": \"unauthorized\"}",
          status == 401 and (headers.get("Content-Type") or "").startswith("application/json")
          and isinstance(body, dict) and body.get("error") == "unauthorized",
          f"{status} {headers.get('Content-Type')} {raw[:200]!r}")
    status, headers, raw = get("/metrics", {"Authorization": "Bearer " + "0" * len(TOKEN)})
    check("GET /metrics with a wrong token answers 401", status == 401, f"{status} {raw[:200]!r}")
    status, headers, raw = get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
    content_type = headers.get("Content-Type") or ""
    text = raw.decode("utf-8", "replace")
    check("GET /metrics with the operator token answers 200 text (Prometheus exposition)",
          status == 200 and content_type.startswith("text/plain") and "# TYPE pkr_" in text,
          f"{status} {content_type} {text[:200]!r}")


def check_customer_endpoints():
    """The demo customer's endpoints on an unseeded production gateway: 409 demo_not_seeded, which is why the page
    must not poll them there."""
    for path in UNSEEDED_PATHS:
        status, _, raw = get(path)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        check(f"GET {path} answers 409 demo_not_seeded (no customer outside demo mode)",
              status == 409 and isinstance(body, dict) and body.get("error") == "demo_not_seeded",
              f"{status} {raw[:200]!r}")


# ---- the page ------------------------------------------------------------------------------------------------

def visible(driver, element_id):
    try:
        return driver.find_element(By.ID, element_id).is_displayed()
    except WebDriverException:
        return False


def session_token(driver):
    return driver.execute_script("return window.sessionStorage.getItem(arguments[0]);", TOKEN_KEY)


def storage_entries(driver, kind):
    """Every key and value of window.localStorage or window.sessionStorage, as [key, value] pairs."""
    return driver.execute_script(
        "const s = window[arguments[0]]; const out = [];"
        "for (let i = 0; i < s.length; i++) { const k = s.key(i); out.push([k, s.getItem(k)]); }"
        "return out;", kind)


def holding(entries, secret):
    return [key for key, value in entries if secret in (key or "") or secret in (value or "")]


def cookies_holding(driver, secret):
    return [c.get("name") for c in driver.get_cookies()
            if secret in (c.get("name") or "") or secret in (c.get("value") or "")]


def operator_checks(driver):
    """The invariant checks the page shows, as [class, text] pairs: the li elements of #checks but the 'needs the
    token' placeholder. Read in one script, since every refresh re-renders the list (elements would go stale)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#checks li'), (li) => [li.className, li.textContent])"
        ".filter(([cls]) => !cls.split(' ').includes('empty'));")


def shows_no_operator_data(driver):
    """True when no operator section holds data: the checks list has no check, the health section no tiles, and
    the deliveries, inbound and quarantine sections hold nothing but their placeholder."""
    if operator_checks(driver) or driver.find_elements(By.CSS_SELECTOR, "#health .tile, #health dl"):
        return False
    for section in ("deliveries", "inbound", "quarantine"):
        if driver.find_elements(By.CSS_SELECTOR, f"#{section} table, #{section} ul"):
            return False
    return True


def is_locked(driver):
    """The page's state after a 401: the token form shows and no operator data does."""
    return visible(driver, "token-form") and shows_no_operator_data(driver)


def submit_token(driver, token):
    field = driver.find_element(By.ID, "token-input")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type='submit']").click()


def unlocked(driver):
    checks = operator_checks(driver)
    return (len(checks) == expected_checks() and not visible(driver, "token-form")
            and "all hold" in text(driver, "health") and checks)


def expected_network_line(entry):
    """Chrome's network line for a 401 answer from this server."""
    match = NETWORK_ERROR.match(entry.get("message") or "")
    if entry.get("source") != "network" or not match:
        return False
    return match["status"] == "401" and match["url"].startswith(BASE + "/")


def requests_made(driver):
    """The URLs the page requested (Resource Timing) since the last clear_requests, as (path, query) pairs."""
    return [(u.path, u.query) for u in map(urllib.parse.urlsplit, driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name);")) if u.path.startswith("/api/")]


def demo_customer_asks(requests):
    """The requests for the demo customer: GET /api/me, or /api/balance without a user_id."""
    return [(path, query) for path, query in requests
            if path == "/api/me" or (path == "/api/balance" and "user_id" not in urllib.parse.parse_qs(query))]


class BrowserLog:
    """Collects every browser log entry of every driver (get_log empties the driver's buffer) and tells the
    unexpected ones: any SEVERE entry that is not an expected network line (expected_network_line)."""

    def __init__(self):
        self.entries = []

    def collect(self, driver, label):
        try:
            fresh = driver.get_log("browser")
        except WebDriverException as error:
            fresh = [{"level": "SEVERE", "source": "harness", "message": f"get_log failed: {error}"}]
        self.entries += [dict(entry, session=label) for entry in fresh]

    def unexpected(self):
        return [e for e in self.entries if e.get("level") == "SEVERE" and not expected_network_line(e)]

    def network(self, status):
        return [e for e in self.entries if e.get("level") == "SEVERE" and (m := NETWORK_ERROR.match(e.get("message") or ""))
                and m["status"] == status]


def describe(entries):
    return "; ".join(f"[{e.get('session')}/{e.get('source')}] {e.get('message', '')}" for e in entries)


def screenshot(driver, name):
    path = os.path.join(ARTIFACTS, name)
    try:
        driver.save_screenshot(path)
        print(f"screenshot: {path}")
    except WebDriverException:
        pass


def run(driver, log):
    # 1. A fresh tab: the form asks for the token, nothing of the operator's shows, no page error.
    driver.get(BASE + "/console")
    check("the console shows the token form", wait_until(lambda: visible(driver, "token-form")),
          text(driver, "errors"))
    check("the console shows no operator data (no invariant checks, no health figures, no deliveries)",
          wait_until(lambda: is_locked(driver)), text(driver, "checks"))
    check("the open sections still load (store ok)", wait_until(lambda: text(driver, "store") == "store ok"),
          text(driver, "store"))
    check("the 'forget token' control is hidden while no token is set", not visible(driver, "forget-token"))
    check("no token is stored before one is entered", session_token(driver) is None, repr(session_token(driver)))
    check("the customer section asks for a customer id (there is no demo customer here)",
          wait_until(lambda: "Enter a customer id" in text(driver, "customer")), text(driver, "customer"))
    check("the page did not ask for the demo customer (GET /api/me, /api/balance without user_id)",
          not demo_customer_asks(requests_made(driver)), str(demo_customer_asks(requests_made(driver))))
    check("the 'demo customer' choice is hidden", not visible(driver, "customer-demo"))
    log.collect(driver, "first")
    unexpected = log.unexpected()
    check("the page logged no SEVERE message but the expected network lines", not unexpected, describe(unexpected))
    check("the operator endpoints were refused with 401 (Chrome logged them)", log.network("401"),
          "no 401 network line in the browser log")
    screenshot(driver, "console-production-locked.png")

    # 2. A wrong token: reported as refused, not kept, the form comes back.
    wrong = secrets.token_hex(16)
    submit_token(driver, wrong)
    refused = wait_until(lambda: visible(driver, "errors") and "refused" in text(driver, "errors")
                         and visible(driver, "token-form"))
    check("a wrong token is reported as refused", refused, text(driver, "errors"))
    check("the wrong token is not kept in sessionStorage", session_token(driver) is None, repr(session_token(driver)))
    check("the wrong token is in no localStorage or sessionStorage entry, nor in a cookie",
          not holding(storage_entries(driver, "localStorage"), wrong)
          and not holding(storage_entries(driver, "sessionStorage"), wrong) and not cookies_holding(driver, wrong))
    check("the wrong token left no operator data shown", shows_no_operator_data(driver), text(driver, "checks"))
    check("the token field is emptied after submitting",
          driver.find_element(By.ID, "token-input").get_attribute("value") == "")

    # 3. The right token: the operator sections fill in; the token lives in this tab's sessionStorage only.
    submit_token(driver, TOKEN)
    check(f"the right token shows the health section with {expected_checks()} invariant checks",
          wait_until(lambda: unlocked(driver)), f"{len(operator_checks(driver))} checks; {text(driver, 'errors')}")
    checks = operator_checks(driver)
    failing = [check_text for cls, check_text in checks if "ok" not in cls.split()]
    check(f"all {len(checks)} invariant checks are ok", checks and not failing, "; ".join(failing))
    check("the token form is hidden and the refusal message gone",
          not visible(driver, "token-form") and not visible(driver, "errors"), text(driver, "errors"))
    check("the 'forget token' control shows", visible(driver, "forget-token"))
    check(f"sessionStorage['{TOKEN_KEY}'] holds the token", session_token(driver) == TOKEN)
    check("no localStorage entry holds the token", not holding(storage_entries(driver, "localStorage"), TOKEN),
          str(holding(storage_entries(driver, "localStorage"), TOKEN)))
    check(f"no sessionStorage entry but '{TOKEN_KEY}' holds the token",
          holding(storage_entries(driver, "sessionStorage"), TOKEN) == [TOKEN_KEY],
          str(holding(storage_entries(driver, "sessionStorage"), TOKEN)))
    check("no cookie holds the token", not cookies_holding(driver, TOKEN),
          f"cookies {[c.get('name') for c in driver.get_cookies()]}")

    # With the token the page still does not poll the demo customer: over at least one auto-refresh (5 s) it asks
    # for the operator sections and not for /api/me or /api/balance without a user_id (each would be a 409).
    log.collect(driver, "first")
    conflicts_before = len(log.network("409"))
    clear_requests(driver)
    time.sleep(6)
    made = requests_made(driver)
    check("with the token the page keeps refreshing (GET /api/debug/summary again)",
          ("/api/debug/summary", "") in made, str(made))
    check("with the token the page does not poll /api/me or /api/balance without a user_id",
          not demo_customer_asks(made), str(demo_customer_asks(made)))
    check("the customer section still asks for a customer id", "Enter a customer id" in text(driver, "customer"),
          text(driver, "customer"))
    log.collect(driver, "first")
    check("the browser log has no 409 line after the token was accepted", len(log.network("409")) == conflicts_before,
          describe(log.network("409")))
    screenshot(driver, "console-production.png")

    # A customer created through the form with the token (a bearer token needs no CSRF token), then looked up.
    clear_requests(driver)
    fill(driver, "new-customer-email", "carol@example.com")
    fill(driver, "new-customer-account", "WALLET-C")
    fill(driver, "new-customer-name", "Carol")
    driver.find_element(By.ID, "new-customer-create").click()
    carol = wait_until(lambda: text(driver, "new-customer-id"))
    check("the New customer form creates carol@example.com with the token",
          carol and "created" in text(driver, "new-customer-result"),
          text(driver, "errors") or text(driver, "new-customer-result"))
    check("the create sent no CSRF request (the bearer token is enough)",
          not [r for r in requests_made(driver) if r[0] == "/api/csrf"], str(requests_made(driver)))
    check("the new customer is looked up: her balance shows 0.00 PKR",
          wait_until(lambda: text(driver, "customer-user-id") == carol and balance(driver) == "0.00 PKR"),
          text(driver, "customer"))
    check("and her ledger (empty) in the ledger section",
          wait_until(lambda: carol in text(driver, "ledger-scope") and "No ledger entries" in text(driver, "ledger")),
          f"{text(driver, 'ledger-scope')}: {text(driver, 'ledger')[:200]}")
    status, _, raw = get(f"/api/balance?user_id={carol}", {"Authorization": f"Bearer {TOKEN}"})
    check("the server agrees: GET /api/balance?user_id= with the token answers 0 units",
          status == 200 and json.loads(raw).get("token_balance_units") == "0", f"{status} {raw[:200]!r}")
    status, _, raw = get(f"/api/balance?user_id={carol}")
    check("and answers 401 without the token", status == 401, f"{status} {raw[:200]!r}")
    fill(driver, "customer-id", "")
    driver.find_element(By.ID, "customer-lookup").click()
    check("an empty lookup asks for a customer id again (no demo customer)",
          wait_until(lambda: "Enter a customer id" in text(driver, "customer")), text(driver, "customer"))
    fill(driver, "customer-id", carol)
    driver.find_element(By.ID, "customer-lookup").click()
    check("looking carol up by id shows her balance again",
          wait_until(lambda: text(driver, "customer-user-id") == carol and balance(driver) == "0.00 PKR"),
          text(driver, "customer"))
    check("no error is shown", not visible(driver, "errors"), text(driver, "errors"))
    check("every request of the page went without a demo customer ask",
          not demo_customer_asks(requests_made(driver)), str(demo_customer_asks(requests_made(driver))))

    # 4. Reloading the same tab keeps the token (sessionStorage survives a reload).
    driver.refresh()
    check("a reload of the same tab keeps the token and shows the checks",
          wait_until(lambda: unlocked(driver)) and session_token(driver) == TOKEN,
          f"form visible {visible(driver, 'token-form')}, {len(operator_checks(driver))} checks")

    # 5. Another tab of the same browser (opened without an opener) has its own sessionStorage: it asks again.
    first_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(BASE + "/console")
    check("a new tab of the same browser shows the token form again",
          wait_until(lambda: is_locked(driver)) and session_token(driver) is None,
          f"stored {session_token(driver) is not None}, {len(operator_checks(driver))} checks")
    driver.close()
    driver.switch_to.window(first_tab)

    # 6. A new browser session (a fresh profile): the token was not persisted beyond the tab.
    fresh = start_browser()
    try:
        fresh.get(BASE + "/console")
        check("a new browser session shows the token form again",
              wait_until(lambda: is_locked(fresh)), f"{len(operator_checks(fresh))} checks")
        check("the new session has no token in sessionStorage, localStorage or cookies",
              session_token(fresh) is None and not holding(storage_entries(fresh, "localStorage"), TOKEN)
              and not holding(storage_entries(fresh, "sessionStorage"), TOKEN) and not cookies_holding(fresh, TOKEN))
        log.collect(fresh, "new session")
    finally:
        fresh.quit()

    # 7. "Forget token" clears it and brings the form back.
    check("the first tab still has its token", wait_until(lambda: unlocked(driver)) and session_token(driver) == TOKEN)
    driver.find_element(By.ID, "forget-token").click()
    check("'Forget token' brings the token form back and empties the operator sections",
          wait_until(lambda: is_locked(driver)), f"{len(operator_checks(driver))} checks")
    check("'Forget token' clears sessionStorage", session_token(driver) is None
          and not holding(storage_entries(driver, "sessionStorage"), TOKEN), repr(session_token(driver)))
    check("'Forget token' confirms", "forgotten" in text(driver, "notice"), text(driver, "notice"))
    check("'Forget token' hides itself", not visible(driver, "forget-token"))
    check("no error is shown after forgetting the token", not visible(driver, "errors"), text(driver, "errors"))


def main():
    try:
        check_metrics()
        check_customer_endpoints()
    except Exception as error:
        check("the HTTP checks ran to the end", False, f"{type(error).__name__}: {error}")
    log = BrowserLog()
    driver = start_browser()
    try:
        try:
            run(driver, log)
        except Exception as error:  # a broken page or harness must fail the run, not hide behind a traceback
            check("test ran to the end", False, f"{type(error).__name__}: {error}")
        log.collect(driver, "first")
        unexpected = log.unexpected()
        check("no SEVERE browser console messages but the expected network lines (all sessions)", not unexpected,
              describe(unexpected))
        print(f"browser log: {len(log.entries)} entries; network lines: {len(log.network('401'))} for 401 (expected), "
              f"{len(log.network('409'))} for 409")
    finally:
        driver.quit()
    passed = sum(1 for _, ok in results if ok)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
