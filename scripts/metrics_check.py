#!/usr/bin/env python3
"""The gateway's /metrics checked against its database, run by scripts/operator-test after the browser test on the
same live server (demo mode, SQLite).

It makes one redeem and one badly signed webhook, reads the summary (which sets the invariant gauges), scrapes
/metrics, parses the exposition with the Prometheus client library's own parser (prometheus_client), and checks
that the figures agree with what the database holds: mints and minted units, redeems and burned units, webhook
deliveries by outcome (the inbound log), outbox deliveries by state, quarantine entries, every invariant check,
and that routes are labelled by template, never by raw path.

Environment: PKR_BASE_URL, PKR_DB (the SQLite file). Exit status 0 when every check passes, 1 otherwise.
"""

import json
import os
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.request
import http.cookiejar

from prometheus_client.parser import text_string_to_metric_families

BASE = os.environ["PKR_BASE_URL"].rstrip("/")
DB = os.environ["PKR_DB"]
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}  {name}{'' if ok or not detail else f': {detail}'}", flush=True)


jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def call(path, method="GET", body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main():
    _, csrf = call("/api/csrf")
    token = json.loads(csrf)["csrftoken"]
    status, _ = call("/api/redeem", "POST", {"amount_units": "10000000", "memo": "metrics check"},
                     {"X-CSRFToken": token, "Idempotency-Key": "metrics-check-1"})
    check("a redeem of 10.00 PKR is accepted", status == 201, f"status {status}")
    status, _ = call("/api/webhooks/wallet", "POST", b'{"type": "wallet.credit"}',
                     {"webhook-id": "msg_metricscheck", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1," + "A" * 43 + "="})
    check("a badly signed webhook is refused", status == 401, f"status {status}")
    status, summary = call("/api/debug/summary")
    check("the summary answers", status == 200, f"status {status}")
    check_names = [c["name"] for c in json.loads(summary)["invariants"]["checks"]] if status == 200 else []

    status, raw = call("/metrics")
    check("GET /metrics answers 200", status == 200, f"status {status}")
    samples = {}
    try:
        for family in text_string_to_metric_families(raw.decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        check("the exposition parses with prometheus_client's parser", True)
    except Exception as error:  # the parser's own error types vary between versions
        check("the exposition parses with prometheus_client's parser", False, repr(error))
        return

    def total(name, **labels):
        return sum(value for sample_labels, value in samples.get(name, [])
                   if all(sample_labels.get(key) == wanted for key, wanted in labels.items()))

    db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
    one = lambda sql: db.execute(sql).fetchone()
    mints, minted_units = one("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM core_chainjob WHERE job_type = 'mint'")
    burns, redeemed_units = one("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM core_chainjob WHERE job_type = 'burn'")
    releases, released_units = one("SELECT COUNT(*), COALESCE(SUM(amount_units), 0) FROM core_redemptionhold WHERE state = 'released'")
    check("pkr_mints_total equals the mint jobs", total("pkr_mints_total") == mints, f"{total('pkr_mints_total')} vs {mints}")
    check("pkr_minted_units_total equals the minted units", total("pkr_minted_units_total") == minted_units,
          f"{total('pkr_minted_units_total')} vs {minted_units}")
    check("pkr_redeems_total equals the burn jobs", total("pkr_redeems_total") == burns, f"{total('pkr_redeems_total')} vs {burns}")
    check("pkr_redeemed_units_total equals the redeemed units", total("pkr_redeemed_units_total") == redeemed_units,
          f"{total('pkr_redeemed_units_total')} vs {redeemed_units}")
    check("pkr_releases_total equals the released holds", total("pkr_releases_total") == releases,
          f"{total('pkr_releases_total')} vs {releases}")
    check("pkr_released_units_total equals the released units", total("pkr_released_units_total") == released_units,
          f"{total('pkr_released_units_total')} vs {released_units}")

    logged = dict(db.execute("SELECT outcome, COUNT(*) FROM core_webhookinbound GROUP BY outcome").fetchall())
    outcomes = set(logged) | {labels["outcome"] for labels, value in samples.get("pkr_webhook_deliveries_total", []) if value}
    for outcome in sorted(outcomes):
        counted = total("pkr_webhook_deliveries_total", outcome=outcome)
        check(f"webhook deliveries '{outcome}' agree with the inbound log", counted == logged.get(outcome, 0),
              f"{counted} vs {logged.get(outcome, 0)}")
    check("the refused webhook is counted by its reason",
          total("pkr_webhook_deliveries_total", outcome="rejected", reason="signature_mismatch") >= 1,
          f"{[labels for labels, value in samples.get('pkr_webhook_deliveries_total', []) if value]}")

    states = dict(db.execute("SELECT state, COUNT(*) FROM wallet_stub_webhookdelivery GROUP BY state").fetchall())
    for state in ("pending", "delivered", "dead"):
        check(f"pkr_outbox_deliveries{{state=\"{state}\"}} equals the outbox", total("pkr_outbox_deliveries", state=state) == states.get(state, 0),
              f"{total('pkr_outbox_deliveries', state=state)} vs {states.get(state, 0)}")
    quarantined = one("SELECT COUNT(*) FROM core_webhookquarantine")[0]
    check("pkr_quarantine_entries equals the quarantine", total("pkr_quarantine_entries") == quarantined,
          f"{total('pkr_quarantine_entries')} vs {quarantined}")
    check("pkr_store_available is 1", total("pkr_store_available") == 1)

    invariants = samples.get("pkr_invariant_ok", [])
    exported = sorted(labels.get("check") for labels, _ in invariants)
    check("every invariant check is exported and holds",
          exported == sorted(check_names) and all(value == 1 for _, value in invariants), f"{invariants}")
    routes = {labels["route"] for labels, _ in samples.get("pkr_http_requests_total", [])}
    raw_paths = [route for route in routes if re.search(r"/[0-9]+(/|$)", route)]
    check("HTTP metrics are labelled by route template", "/api/webhooks/deliveries/{id}/retry" in routes and not raw_paths,
          f"routes {sorted(routes)}")
    check("request durations are a histogram by route",
          total("pkr_http_request_duration_seconds_count", route="/api/redeem", method="POST") >= 1)
    check("the webhook lag histogram counts the webhook mints",
          total("pkr_webhook_mint_lag_seconds_count") == total("pkr_mints_total", via="webhook"))


if __name__ == "__main__":
    main()
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
