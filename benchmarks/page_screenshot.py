"""A screenshot of `sentiment serve`'s page (GET /) explaining one text: docs/images/serve_page.png.

Starts `sentiment serve` on a free port of 127.0.0.1, drives Debian's chromium headless through Selenium and
Debian's chromedriver (offline: SE_OFFLINE=true, so Selenium downloads nothing), as tests/test_serve_page.py
does, types the text, submits, waits for the highlighted words and saves the page.

    python benchmarks/page_screenshot.py --run runs/imdb_cpu --out docs/images/serve_page.png
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TEXT = ("I expected little from this one, but the cast is wonderful and the score is superb. The first hour drags "
        "and a few scenes are a waste of time, yet the ending moved me. Not perfect, still worth seeing.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sentiment", "serve", "--run", run, "--port", str(port)], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("error: the server did not become ready in 300 s")


def screenshot(port: int, text: str, out: Path, width: int, height: int) -> None:
    os.environ["SE_OFFLINE"] = "true"  # before the driver: Selenium Manager must download nothing
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            driver.find_element(By.ID, "text").send_keys(text)
            driver.find_element(By.ID, "submit").click()
            WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.ID, "strongest")
                                             or d.find_element(By.ID, "error").text)
            if driver.find_element(By.ID, "error").text:
                sys.exit(f"error: the page says {driver.find_element(By.ID, 'error').text}")
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
            print(f"wrote {out}: label {driver.find_element(By.ID, 'label').text}, strongest word "
                  f"{driver.find_element(By.ID, 'strongest').text!r}")
        finally:
            driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="A run directory (sentiment train).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "serve_page.png")
    parser.add_argument("--text", default=TEXT, help="The text typed into the page.")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    port = free_port()
    proc = start_server(args.run, port)
    try:
        screenshot(port, args.text, args.out, args.width, args.height)
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
