#!/usr/bin/env python3
"""Browser test of the operator console, run by scripts/operator-test against a live `pkr serve` in demo mode.

The server's wallet stub pushes its webhooks to a relay in this process (PKR_WEBHOOK_URL), which forwards them
to the real receiver or, while switched to failing, answers 500, so a delivery can be made dead on purpose.

Checks, through the page as an operator sees it (headless Chromium, Selenium):
  - the console loads under its CSP and shows the store healthy, the invariant checks and the demo customer;
  - a deposit made at the provider shows up in the inbound log and the transactions, and the balance shows it;
  - a deposit whose webhook cannot be delivered goes dead, is listed under the "dead" filter with a Redeliver
    button, is not minted; after Redeliver (relay forwarding again) it is delivered and the balance includes it;
  - every invariant check holds, the error area stays empty and the browser logged no SEVERE message.

`browser_test.py customers` runs the many-customer checks instead, on a server of their own: customers created
through the console's form, looked up by id (balance and ledger), a deposit to one of them by a signed webhook,
a deposit on an account nobody holds (flagged unbound_account), the same customer created again, a conflicting
one and an unknown id. The test plays the provider by signing webhooks for deposits the wallet stub never
received, so that server's reserve check fails on purpose: it must not be the server metrics_check.py checks.

Environment: PKR_BASE_URL, PKR_RELAY_PORT, PKR_ARTIFACTS (temp dir for the screenshot), PKR_REPO,
PKR_SCREENSHOT=1 to also write docs/console.png (the default run only). Exit status 0 when every check passes,
1 otherwise.
"""

import base64
import hashlib
import hmac
import http.cookiejar
import http.server
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from console_browser import balance, check, clear_requests, fill, results, start_browser, text, wait_until
from selenium.webdriver.support.ui import Select

BASE = os.environ["PKR_BASE_URL"].rstrip("/")
RELAY_PORT = int(os.environ["PKR_RELAY_PORT"])
ARTIFACTS = os.environ.get("PKR_ARTIFACTS") or "/tmp"
REPO = os.environ.get("PKR_REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The dev secret, which demo mode accepts (keys/dev-webhook-secret.txt).
DEV_SECRET = open(os.path.join(REPO, "keys", "dev-webhook-secret.txt")).read().strip()



# ---- the relay between the wallet stub and the receiver ------------------------------------------------------

class Relay(http.server.BaseHTTPRequestHandler):
    failing = False
    lock = threading.Lock()
    seen = {"forwarded": 0, "failed": 0}

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        body = self.read_body()
        with Relay.lock:
            failing = Relay.failing
            Relay.seen["failed" if failing else "forwarded"] += 1
        if failing:
            self.answer(500, b'{"error": "relay switched to failing"}')
            return
        headers = {name: self.headers[name] for name in ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")
                   if self.headers.get(name)}
        request = urllib.request.Request(BASE + "/api/webhooks/wallet", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read()
        except OSError:
            status, answer = 502, b'{"error": "receiver unreachable"}'
        self.answer(status, answer)

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def set_relay_failing(failing):
    with Relay.lock:
        Relay.failing = failing


# ---- the API as a script uses it (CSRF cookie and header) ----------------------------------------------------

jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def api(path, method="GET", body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with opener.open(request, timeout=10) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    is_json = (headers.get("Content-Type") or "").startswith("application/json")
    return status, json.loads(raw or b"null") if is_json else raw.decode("utf-8", "replace"), headers


def deposit(amount_pkr, memo):
    _, csrf, _ = api("/api/csrf")
    status, body, _ = api("/api/demo/wallet/credit", "POST", {"amount_pkr": amount_pkr, "memo": memo},
                          {"X-CSRFToken": csrf["csrftoken"]})
    return status, body


def send_signed_webhook(event):
    """Plays the provider: a Standard Webhooks delivery signed with the dev secret, straight to the receiver."""
    body = json.dumps(event, separators=(",", ":")).encode()
    message_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(DEV_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    request = urllib.request.Request(BASE + "/api/webhooks/wallet", data=body, method="POST", headers={
        "Content-Type": "application/json", "webhook-id": message_id, "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode()})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def delivery_of(provider_tx_id):
    _, rows, _ = api("/api/webhooks/deliveries?limit=50")
    return next((row for row in rows if row["provider_tx_id"] == provider_tx_id), None)


# ---- the page ------------------------------------------------------------------------------------------------

def value(driver, element_id):
    try:
        return driver.find_element(By.ID, element_id).get_attribute("value") or ""
    except WebDriverException:
        return ""


def row_with(driver, container_id, needle):
    for row in driver.find_elements(By.CSS_SELECTOR, f"#{container_id} tbody tr"):
        if needle in (row.get_attribute("textContent") or ""):
            return row
    return None


def first_cell(driver, container_id, needle):
    row = row_with(driver, container_id, needle)
    return row.find_element(By.CSS_SELECTOR, "td") if row is not None else None


def rows_of(driver, css):
    """[class, textContent] of every element matching css, read in one script: the page re-renders its sections on
    every refresh (auto-refresh included), so elements found earlier can go stale between two WebDriver calls."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), (e) => [e.className, e.textContent]);", css)


def click(driver, element):
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def click_found(driver, find):
    """Clicks what find() returns, finding it again while the page re-renders it in between (stale element)."""
    def attempt():
        element = find()
        if element is None:
            return False
        click(driver, element)
        return True
    return wait_until(attempt)


def run(driver):
    status, _, headers = api("/console")
    csp = headers.get("Content-Security-Policy") or ""
    check("GET /console answers 200 with a script-src 'self' CSP", status == 200 and "script-src 'self'" in csp, csp)

    driver.get(BASE + "/console")
    check("console shows the store as healthy", wait_until(lambda: text(driver, "store") == "store ok"),
          text(driver, "store"))
    check("console lists the invariant checks",
          wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#checks li")), text(driver, "errors"))
    check("the customer section shows the demo customer with the lookup form",
          wait_until(lambda: text(driver, "customer-scope") == "demo customer" and "demo@pkr.local" in text(driver, "customer"))
          and driver.find_elements(By.CSS_SELECTOR, "#customer-id") and driver.find_elements(By.CSS_SELECTOR, "#customer-lookup"),
          text(driver, "customer"))
    check("the ledger section shows all customers' entries", text(driver, "ledger-scope") == "all customers",
          text(driver, "ledger-scope"))

    # 1. A deposit through the wallet stub; its webhook goes through the relay to the receiver and mints.
    status, body = deposit("1234.56", "browser test")
    tx1 = (body or {}).get("provider_tx_id", "")
    check("deposit of 1234.56 PKR accepted (201)", status == 201 and tx1.startswith("TX-"), f"{status} {body}")
    check(f"{tx1} appears in the inbound log", wait_until(lambda: tx1 in text(driver, "inbound")))
    row_text = wait_until(lambda: (r := row_with(driver, "inbound", tx1)) and r.text) or ""
    check("its inbound row says verified and minted", "verified" in row_text and "minted" in row_text,
          row_text or "no row")
    check(f"{tx1} appears in the transactions", wait_until(lambda: tx1 in text(driver, "transactions")))
    check("balance shows 1234.56 PKR", wait_until(lambda: balance(driver) == "1234.56 PKR"), balance(driver))
    check("balance shows 1234560000 units", "1234560000 units" in text(driver, "customer"), text(driver, "customer"))

    # 2. A conflicting redelivery of the same provider transaction (another amount) is quarantined, not minted.
    status, body = send_signed_webhook({
        "type": "wallet.credit", "provider_tx_id": tx1, "account": "WALLET-001", "direction": "credit",
        "amount_pkr": "9999.00", "status": "settled", "occurred_at": "2026-01-01T00:00:00Z", "memo": "conflict"})
    check("a conflicting webhook for the same transaction is refused (409)", status == 409, f"{status} {body}")
    check(f"{tx1} appears in the quarantine with its differing field",
          wait_until(lambda: tx1 in text(driver, "quarantine") and "amount" in text(driver, "quarantine")),
          text(driver, "quarantine"))
    check("the conflict is not minted: balance still 1234.56 PKR", balance(driver) == "1234.56 PKR", balance(driver))

    # 3. A deposit whose webhook the relay refuses: with the short retry schedule the delivery goes dead.
    set_relay_failing(True)
    status, body = deposit("100.00", "dead letter")
    tx2 = (body or {}).get("provider_tx_id", "")
    check("deposit of 100.00 PKR accepted (201)", status == 201 and tx2.startswith("TX-"), f"{status} {body}")
    dead = wait_until(lambda: (d := delivery_of(tx2)) and d["state"] == "dead" and d)
    check(f"delivery of {tx2} goes dead after its retries", dead, str(delivery_of(tx2)))
    if not dead:
        return
    Select(driver.find_element(By.ID, "delivery-state")).select_by_value("dead")
    button_css = f"#deliveries button.redeliver[data-id='{dead['id']}']"
    button = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, button_css))
    check("the 'dead' filter lists it with a Redeliver button", button, text(driver, "deliveries"))
    check("only dead deliveries are listed under 'dead'",
          all("dead" in row_text for _, row_text in rows_of(driver, "#deliveries tbody tr")))
    check("the dead deposit is not minted: balance still 1234.56 PKR", balance(driver) == "1234.56 PKR", balance(driver))
    click_found(driver, lambda: first_cell(driver, "deliveries", tx2))
    detail = wait_until(lambda: "500" in text(driver, "delivery-detail") and text(driver, "delivery-detail"))
    check("its detail lists the failed attempts (HTTP 500)",
          detail and len(driver.find_elements(By.CSS_SELECTOR, "#delivery-detail tbody tr")) == dead["attempts"],
          text(driver, "delivery-detail"))
    if not button:
        return

    # 4. Redeliver from the console with the relay forwarding again.
    set_relay_failing(False)
    click_found(driver, lambda: driver.find_element(By.CSS_SELECTOR, button_css))
    check("Redeliver confirms the request", wait_until(lambda: "queued for redelivery" in text(driver, "notice")),
          text(driver, "errors"))
    check("the delivery leaves the 'dead' list", wait_until(lambda: tx2 not in text(driver, "deliveries")))
    Select(driver.find_element(By.ID, "delivery-state")).select_by_value("delivered")
    check("the 'delivered' filter lists it",
          wait_until(lambda: (r := row_with(driver, "deliveries", tx2)) and "delivered" in r.text))
    check("balance shows 1334.56 PKR after the redelivery", wait_until(lambda: balance(driver) == "1334.56 PKR"),
          balance(driver))
    check(f"{tx2} appears in the inbound log as minted",
          wait_until(lambda: (r := row_with(driver, "inbound", tx2)) and "minted" in r.text))

    # 5. The whole picture is consistent and nothing went wrong in the page.
    Select(driver.find_element(By.ID, "delivery-state")).select_by_value("")
    click(driver, driver.find_element(By.ID, "refresh"))
    wait_until(lambda: "1,334.56" in text(driver, "health"))
    checks = rows_of(driver, "#checks li")
    failing = [check_text for cls, check_text in checks if "ok" not in cls.split()]
    check(f"all {len(checks)} invariant checks hold", checks and not failing, "; ".join(failing))
    check("reserve and supply are both 1,334.56 PKR", text(driver, "health").count("1,334.56 PKR") >= 2,
          text(driver, "health"))
    check("the error area is empty", driver.find_element(By.ID, "errors").get_attribute("hidden") is not None,
          text(driver, "errors"))

    # For the screenshot: the redelivered delivery opened, the page at the top.
    if click_found(driver, lambda: first_cell(driver, "deliveries", tx2)):
        wait_until(lambda: "200" in text(driver, "delivery-detail"))
    driver.execute_script("window.scrollTo(0, 0);")
    time.sleep(0.5)


# ---- many customers (`browser_test.py customers`, a server of its own) ----------------------------------------

# Chrome's own console line for an HTTP error answer (a fetch the page made), e.g.
# "http://127.0.0.1:1234/api/users - Failed to load resource: the server responded with a status of 409 (Conflict)".
NETWORK_ERROR = re.compile(r"^(?P<url>\S+) - Failed to load resource: the server responded with a status of "
                           r"(?P<status>\d{3}) \([^)]*\)\s*$")


def requested(driver, needle):
    """The URLs of the page's requests (Resource Timing) that contain needle, since the last clear_requests."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name).filter((n) => n.includes(arguments[0]));",
        needle)


def flags_by_row(driver, container_id):
    """{first cell's text: [data-flag of each badge in that row]} for the rows of a table, read in one script."""
    return dict(driver.execute_script(
        "return Array.from(document.querySelectorAll(`#${arguments[0]} tbody tr`), (tr) => [tr.cells[0].textContent,"
        " Array.from(tr.querySelectorAll('span.badge[data-flag]'), (b) => b.dataset.flag)]);", container_id))


def create_customer(driver, email, account, name=""):
    """Fills the console's New customer form and submits it; answers the user_id the page then shows, or ""."""
    driver.execute_script("document.getElementById('new-customer-result').replaceChildren();")
    fill(driver, "new-customer-email", email)
    fill(driver, "new-customer-account", account)
    fill(driver, "new-customer-name", name)
    click(driver, driver.find_element(By.ID, "new-customer-create"))
    return wait_until(lambda: text(driver, "new-customer-id")) or ""


def look_up(driver, user_id):
    fill(driver, "customer-id", user_id)
    click(driver, driver.find_element(By.ID, "customer-lookup"))


def shows_customer(driver, user_id, amount):
    """The Customer section shows this customer (by id) with this balance."""
    return text(driver, "customer-user-id") == user_id and balance(driver) == amount


def ledger_rows(driver):
    return rows_of(driver, "#ledger tbody tr")


def deposit_webhook(account, amount_pkr, memo):
    """A settled credit on this account, as the provider would announce it (signed, straight to the receiver)."""
    tx = f"TX-BROWSER-{uuid.uuid4().hex[:12].upper()}"
    status, body = send_signed_webhook({
        "type": "wallet.credit", "provider_tx_id": tx, "account": account, "direction": "credit",
        "amount_pkr": amount_pkr, "status": "settled", "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "memo": memo})
    return tx, status, body


def run_customers(driver):
    driver.get(BASE + "/console")
    check("console shows the store as healthy", wait_until(lambda: text(driver, "store") == "store ok"),
          text(driver, "store"))
    check("the customer section shows the demo customer",
          wait_until(lambda: text(driver, "customer-scope") == "demo customer"), text(driver, "customer"))

    # The demo customer holds 50.00 PKR (a deposit at the stub, pushed through the relay), to see it stay so.
    status, body = deposit("50.00", "demo customer")
    check("a deposit of 50.00 PKR for the demo customer is accepted (201)", status == 201, f"{status} {body}")
    check("the demo customer's balance shows 50.00 PKR", wait_until(lambda: balance(driver) == "50.00 PKR"),
          balance(driver))

    # 1. Two customers through the form; each is then shown and loaded into the lookup.
    alice = create_customer(driver, "alice@example.com", "WALLET-A")
    check("creating alice@example.com on WALLET-A shows her user_id",
          alice and "created" in text(driver, "new-customer-result"), text(driver, "new-customer-result") or text(driver, "errors"))
    check("the new customer is loaded into the lookup", value(driver, "customer-id") == alice,
          value(driver, "customer-id"))
    check("the customer section shows alice with 0.00 PKR", wait_until(lambda: shows_customer(driver, alice, "0.00 PKR")),
          text(driver, "customer"))
    check("it shows what the form created (email, wallet account)",
          "alice@example.com" in text(driver, "customer") and "WALLET-A" in text(driver, "customer"), text(driver, "customer"))
    check("the ledger section shows alice's empty ledger",
          wait_until(lambda: alice in text(driver, "ledger-scope") and "No ledger entries" in text(driver, "ledger")),
          f"{text(driver, 'ledger-scope')}: {text(driver, 'ledger')[:200]}")
    status, body, _ = api(f"/api/balance?user_id={alice}")
    check("GET /api/balance?user_id= agrees: 0 units", status == 200 and body.get("token_balance_units") == "0",
          f"{status} {body}")
    bob = create_customer(driver, "bob@example.com", "WALLET-B", "Bob B.")
    check("creating bob@example.com on WALLET-B shows another user_id", bob and bob != alice,
          text(driver, "new-customer-result") or text(driver, "errors"))
    check("the customer section shows bob with his display name and 0.00 PKR",
          wait_until(lambda: shows_customer(driver, bob, "0.00 PKR") and "Bob B." in text(driver, "customer")),
          text(driver, "customer"))

    # 2. Looking alice up by id; a deposit to WALLET-A (the provider's signed webhook) is minted to her.
    look_up(driver, alice)
    check("looking up alice's id shows her balance: 0.00 PKR",
          wait_until(lambda: shows_customer(driver, alice, "0.00 PKR")), text(driver, "customer"))
    check("and her empty ledger",
          wait_until(lambda: alice in text(driver, "ledger-scope") and "No ledger entries" in text(driver, "ledger")),
          text(driver, "ledger"))
    tx_a, status, body = deposit_webhook("WALLET-A", "12.34", "alice's deposit")
    check("a signed webhook deposit of 12.34 PKR on WALLET-A is minted", status == 200 and body.get("outcome") == "minted",
          f"{status} {body}")
    check("alice's balance shows 12.34 PKR", wait_until(lambda: shows_customer(driver, alice, "12.34 PKR")),
          text(driver, "customer"))
    check("alice's ledger shows the mint's 2 entries",
          wait_until(lambda: len(ledger_rows(driver)) == 2 and all("12.34 PKR" in row for _, row in ledger_rows(driver))),
          str(ledger_rows(driver)))
    look_up(driver, bob)
    check("bob's balance is still 0.00 PKR", wait_until(lambda: shows_customer(driver, bob, "0.00 PKR")),
          text(driver, "customer"))
    check("bob's ledger is still empty", wait_until(lambda: bob in text(driver, "ledger-scope")
                                                     and "No ledger entries" in text(driver, "ledger")), text(driver, "ledger"))

    # 3. Back to the demo customer: unchanged.
    click(driver, driver.find_element(By.ID, "customer-demo"))
    check("the 'demo customer' choice shows the demo customer again",
          wait_until(lambda: text(driver, "customer-scope") == "demo customer" and "demo@pkr.local" in text(driver, "customer")),
          text(driver, "customer"))
    check("the demo customer's balance is unchanged: 50.00 PKR", wait_until(lambda: balance(driver) == "50.00 PKR"),
          balance(driver))
    check("the lookup field is emptied and the ledger shows all customers' entries again",
          value(driver, "customer-id") == "" and wait_until(lambda: text(driver, "ledger-scope") == "all customers"),
          text(driver, "ledger-scope"))
    look_up(driver, "")
    check("an empty lookup is the demo customer as well", wait_until(lambda: text(driver, "customer-scope") == "demo customer"))

    # 4. A deposit on an account nobody holds: recorded, not minted, flagged and counted in flight.
    tx_z, status, body = deposit_webhook("WALLET-Z", "5.00", "nobody's deposit")
    check("a signed webhook deposit on WALLET-Z (no customer) is recorded, not minted",
          status == 200 and body.get("outcome") == "recorded", f"{status} {body}")
    badge_css = "#transactions span.badge[data-flag='unbound_account']"
    check(f"{tx_z} shows an unbound_account badge in the transactions",
          wait_until(lambda: flags_by_row(driver, "transactions").get(tx_z) == ["unbound_account"]),
          str(flags_by_row(driver, "transactions")))
    flags = flags_by_row(driver, "transactions")
    check("it is the only flagged transaction (alice's deposit has no flag)",
          len(driver.find_elements(By.CSS_SELECTOR, badge_css)) == 1 and flags.get(tx_z) == ["unbound_account"]
          and flags.get(tx_a) == [], str(flags))
    check("the in-flight figures show 5.00 PKR of unbound credits",
          wait_until(lambda: text(driver, "unbound-credits") == "5.00 PKR" and "awaiting a customer" in text(driver, "health")),
          text(driver, "unbound-credits"))

    # 5. The same customer again answers the same user_id; a conflicting one is refused.
    again = create_customer(driver, "alice@example.com", "WALLET-A")
    check("creating alice again with the same data answers the same user_id",
          again == alice and "already bound" in text(driver, "new-customer-result"), f"{again} vs {alice}")
    check("it is said to be the same customer", "the same customer" in text(driver, "notice"), text(driver, "notice"))
    check("the error area is empty so far", driver.find_element(By.ID, "errors").get_attribute("hidden") is not None,
          text(driver, "errors"))
    driver.execute_script("document.getElementById('new-customer-result').replaceChildren();")
    fill(driver, "new-customer-email", "alice@example.com")
    fill(driver, "new-customer-account", "WALLET-C")
    click(driver, driver.find_element(By.ID, "new-customer-create"))
    check("alice@example.com on another account shows customer_conflict in the error area",
          wait_until(lambda: "customer_conflict" in text(driver, "errors")), text(driver, "errors"))
    check("the conflicting create shows no customer", text(driver, "new-customer-result") == "",
          text(driver, "new-customer-result"))
    click(driver, driver.find_element(By.ID, "refresh"))
    check("Refresh clears the conflict message", wait_until(lambda: driver.find_element(By.ID, "errors").get_attribute("hidden") is not None),
          text(driver, "errors"))

    # 6. An unknown id is reported once, not asked for every 5 s; a malformed one is not sent at all.
    unknown = str(uuid.uuid4())
    clear_requests(driver)
    look_up(driver, unknown)
    check("an unknown id shows unknown_customer in the error area",
          wait_until(lambda: "unknown_customer" in text(driver, "errors") and "No customer" in text(driver, "customer")),
          text(driver, "errors") + " / " + text(driver, "customer"))
    click(driver, driver.find_element(By.ID, "refresh"))
    time.sleep(1)
    check("the unknown id is asked for once, not again on refresh",
          len(requested(driver, unknown)) == 1, str(requested(driver, unknown)))
    clear_requests(driver)
    look_up(driver, "not an id!")
    check("a malformed id is refused in the page (invalid_field), without a request",
          wait_until(lambda: "invalid_field" in text(driver, "errors")) and not requested(driver, "user_id="),
          text(driver, "errors"))

    look_up(driver, alice)
    check("looking alice up again clears the error and shows 12.34 PKR",
          wait_until(lambda: shows_customer(driver, alice, "12.34 PKR")
                     and driver.find_element(By.ID, "errors").get_attribute("hidden") is not None),
          text(driver, "errors"))
    driver.execute_script("window.scrollTo(0, 0);")
    time.sleep(0.3)
    return unknown


def expected_customer_line(entry, unknown):
    """Chrome's network line for an answer the customer checks provoke: the 409 of the conflicting POST /api/users,
    and the 404 of the unknown id's balance."""
    match = NETWORK_ERROR.match(entry.get("message") or "")
    if entry.get("source") != "network" or not match or not match["url"].startswith(BASE + "/"):
        return False
    url = urllib.parse.urlsplit(match["url"])
    if match["status"] == "409":
        return url.path == "/api/users"
    return match["status"] == "404" and url.path == "/api/balance" and unknown is not None and f"user_id={unknown}" in url.query


def main_customers():
    relay = http.server.ThreadingHTTPServer(("127.0.0.1", RELAY_PORT), Relay)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    driver = start_browser()
    unknown = None
    try:
        try:
            unknown = run_customers(driver)
        except Exception as error:  # a broken page or harness must fail the run, not hide behind a traceback
            check("test ran to the end", False, f"{type(error).__name__}: {error}")
        entries = driver.get_log("browser")
        severe = [e for e in entries if e.get("level") == "SEVERE" and not expected_customer_line(e, unknown)]
        check("no SEVERE browser console messages but the provoked 409 conflict and 404 unknown customer",
              not severe, "; ".join(e.get("message", "") for e in severe))
        provoked = [e for e in entries if e.get("level") == "SEVERE" and expected_customer_line(e, unknown)]
        print(f"browser log: {len(entries)} entries, {len(provoked)} provoked network lines")
        shot = os.path.join(ARTIFACTS, "console-customers.png")
        driver.save_screenshot(shot)
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
        relay.shutdown()
    passed = sum(1 for _, ok in results if ok)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def main():
    relay = http.server.ThreadingHTTPServer(("127.0.0.1", RELAY_PORT), Relay)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    driver = start_browser()
    try:
        try:
            run(driver)
        except Exception as error:  # a broken page or harness must fail the run, not hide behind a traceback
            check("test ran to the end", False, f"{type(error).__name__}: {error}")
        severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        check("no SEVERE browser console messages", not severe, "; ".join(e.get("message", "") for e in severe))
        # The whole page in one picture: the window grows to the document's height (1400 px wide as tested).
        try:
            height = driver.execute_script("return document.documentElement.scrollHeight")
            chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
            driver.set_window_size(1400, min(int(height) + int(chrome), 6000))
            time.sleep(0.3)
        except WebDriverException:
            pass
        shot = os.path.join(ARTIFACTS, "console.png")
        driver.save_screenshot(shot)
        print(f"screenshot: {shot}")
        if os.environ.get("PKR_SCREENSHOT") == "1":
            os.makedirs(os.path.join(REPO, "docs"), exist_ok=True)
            target = os.path.join(REPO, "docs", "console.png")
            driver.save_screenshot(target)
            print(f"screenshot: {target}")
    finally:
        driver.quit()
        relay.shutdown()
    print(f"relay: {Relay.seen['forwarded']} forwarded, {Relay.seen['failed']} refused")
    passed = sum(1 for _, ok in results if ok)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["customers"]):
        sys.exit("usage: browser_test.py [customers]")
    sys.exit(main_customers() if sys.argv[1:] == ["customers"] else main())
