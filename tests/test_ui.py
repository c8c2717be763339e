"""The MLflow UI as a user sees it: ``mlflow server`` on loopback + headless Chromium.

Skipped (with the reason) where Chromium / chromedriver / selenium are missing; ``.ci/run`` installs
the Debian packages ``chromium chromium-driver`` so CI runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.test_report import assert_png, make_store

pytestmark = pytest.mark.ui

#: Chromium flags for a sandbox-less container without a display, network or updates.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
    "--window-size=1600,2400",
)


def _browser() -> tuple[str, str]:
    """Paths of Chromium and chromedriver, or skip saying what is missing and how to get it."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    chrome = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        missing = " and ".join(n for n, p in (("chromium", chrome), ("chromedriver", driver)) if not p)
        pytest.skip(f"{missing} not found on PATH (Debian: apt-get install -y chromium chromium-driver)")
    return chrome, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(backend_store_uri: str, log: Path) -> Iterator[str]:
    """``mlflow server`` bound to 127.0.0.1 on a free port; yields its URL, stops it by its PID."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend_store_uri, "--workers", "1"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        # The server runs in its own session: signal that group (its uvicorn worker included) by PID.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def experiment_run_names(
    url: str, experiment_id: str, parent_name: str, screenshot: Path, timeout: float = 60
) -> tuple[list[str], str]:
    """Open the experiment's runs page in headless Chromium, expand the parent run, save a
    screenshot; return the run names in the table and the page text."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    chrome, driver_path = _browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        # MLflow 3 opens experiments in its GenAI view; the runs table is the "machine_learning" one.
        driver.get(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
        wait = WebDriverWait(driver, timeout)
        name_cells = "//div[@role='gridcell' and contains(@col-id, 'Run Name')]"
        parent = wait.until(ec.presence_of_element_located((By.XPATH, f"{name_cells}//*[text()='{parent_name}']")))
        # Child runs are nested (collapsed) under the parent: click its expander.
        row = parent.find_element(By.XPATH, "./ancestor::div[@role='row'][1]")
        n_rows = len(driver.find_elements(By.XPATH, "//div[@role='row' and @row-id]"))
        row.find_element(By.XPATH, ".//button[contains(@data-component-id, 'runnamecellrenderer')]").click()
        wait.until(lambda d: len(d.find_elements(By.XPATH, "//div[@role='row' and @row-id]")) > n_rows)
        time.sleep(1)  # let the grid finish rendering before the screenshot
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        names = [ln.strip() for e in driver.find_elements(By.XPATH, name_cells) for ln in e.text.splitlines()]
        return names, driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


def runs_table(link: str, columns: Sequence[str], screenshot: Path, timeout: float = 60):
    """Open ``link`` (an MLflow runs page) in headless Chromium, add ``columns`` as a user does (Show more
    columns → tick each), save a screenshot; returns ({run name: {column: value}}, page text)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    chrome, driver_path = _browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument("--window-size=3200,1400")  # wide: the grid renders only the columns in view
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(link)
        wait = WebDriverWait(driver, timeout)
        more = wait.until(ec.element_to_be_clickable((By.XPATH, "//*[contains(text(), 'Show more columns')]")))
        more.click()
        for column in columns:
            item = wait.until(
                ec.element_to_be_clickable((By.XPATH, f"(//span[normalize-space(text())='{column}'])[last()]"))
            )
            item.click()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        header = "//div[@role='columnheader' and normalize-space(.)='{}']"
        for column in columns:
            wait.until(ec.presence_of_element_located((By.XPATH, header.format(column))))
        time.sleep(1)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        rows: dict[str, dict[str, str]] = {}
        for row in driver.find_elements(By.XPATH, "//div[@role='row' and @row-id]"):
            rid = row.get_attribute("row-id")
            cells = driver.find_elements(By.XPATH, f"//div[@role='row' and @row-id='{rid}']/div[@role='gridcell']")
            values = {c.get_attribute("col-id") or "": c.text for c in cells}
            name = next((v.splitlines()[-1] for k, v in values.items() if "Run Name" in k and v), None)
            if name is None:
                continue
            entry = rows.setdefault(name, {})
            for column in columns:
                for key, value in values.items():
                    if key.endswith(column) or key.endswith(f"{column}`") or key.split(".")[-1] == column:
                        entry[column] = value
        return rows, driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


def check_ui(tracking_db: Path, experiment_id: str, parent_name: str, child_names: Sequence[str], shot: Path):
    """The assertions a user would make looking at the page: parent and (a screenful of) children."""
    _browser()
    shot.parent.mkdir(parents=True, exist_ok=True)
    with mlflow_server(f"sqlite:///{tracking_db}", shot.parent / "mlflow-server.log") as url:
        names, text = experiment_run_names(url, experiment_id, parent_name, shot)
    assert parent_name in names, text[:2000]
    shown = [n for n in child_names if n in names]
    # The grid renders the rows that fit the window; the first screenful must all be real children.
    assert len(shown) >= min(len(child_names), 15), (names, text[:2000])
    assert f"{1 + len(child_names)} matching runs" in text
    assert_png(shot)


def test_experiment_page_lists_sweep_runs(tmp_path):
    _browser()
    store = make_store(tmp_path, sweep_name="ui-sweep")
    client = store["client"]
    children = client.search_runs([store["exp"]], f"tags.mlflow.parentRunId = '{store['parent']}'", max_results=100)
    names = [r.info.run_name for r in children]
    check_ui(tmp_path / "mlflow.db", store["exp"], "ui-sweep", names, tmp_path / "ui" / "experiment.png")
