"""What the console's browser tests share: the result list, headless Chromium, and reading the page.

Imported by scripts/browser_test.py and scripts/browser_production_test.py (run by scripts/operator-test).
"""

import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

WAIT_S = 15

results = []


def check(name, ok, detail=""):
    results.append((name, bool(ok)))
    print(f"{'PASS' if ok else 'FAIL'}  {name}{'' if ok or not detail else f': {detail}'}", flush=True)
    return bool(ok)


def start_browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(1400, 1000)
    return driver


def text(driver, element_id):
    try:
        return driver.find_element(By.ID, element_id).get_attribute("textContent") or ""
    except WebDriverException:
        return ""


def wait_until(predicate, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except WebDriverException:
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.25)


def balance(driver):
    return text(driver, "balance").replace(",", "").strip()


def clear_requests(driver):
    driver.execute_script("performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();")


def fill(driver, element_id, content):
    field = driver.find_element(By.ID, element_id)
    field.clear()
    if content:
        field.send_keys(content)
