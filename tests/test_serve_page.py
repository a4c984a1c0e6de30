"""`sentiment serve`'s page (GET /) in a real browser: Debian's chromium driven by Selenium through Debian's
chromedriver, offline (SE_OFFLINE: Selenium Manager downloads nothing). It types a review, submits, and reads
the label, the probabilities and the strongest highlighted word, against what POST /predict and POST /explain
answer for the same text; a text over the explain limits still gets its label, with the reason in one line.

Skipped, with the reason, only where CI is unset and selenium, chromium or chromedriver is missing; under CI
(.ci/run installs chromium and chromium-driver) a missing browser fails the test."""

import importlib.util
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from conftest import make_imdb, set_args
from test_serve import FAST, request, start_server, stop

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1000,900"]
EXPLAIN_MAX_TOKENS = 40  # small, so that one typed text is over it and takes the page's other path
REVIEW = "A wonderful film, superb and moving. I loved it."


def browser_or_skip() -> None:
    """Skip (CI unset) or fail (CI set) naming what is missing of selenium, chromium and chromedriver."""
    missing = [what for what, present in (
        ("the selenium package (pip install -e '.[dev]')", importlib.util.find_spec("selenium") is not None),
        (f"chromium at {CHROMIUM} (apt-get install chromium)", os.access(CHROMIUM, os.X_OK)),
        (f"chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver)", os.access(CHROMEDRIVER, os.X_OK)))
        if not present]
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if "CI" in os.environ:
            pytest.fail(f"{reason}; CI is set, where the browser must be installed (.ci/run does it as root)")
        pytest.skip(reason)


def chromium(user_data_dir: Path) -> object:
    """Debian's chromium through Debian's chromedriver, headless, with a fresh profile, downloading nothing."""
    os.environ["SE_OFFLINE"] = "true"  # before the driver: Selenium Manager must not look for another browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [*BROWSER_ARGS, f"--user-data-dir={user_data_dir}"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """A server of a tiny two-part run (recurrent part + n-gram branch: both kinds of contribution)."""
    browser_or_skip()  # before training: a skip should cost nothing
    base = tmp_path_factory.mktemp("page")
    data = make_imdb(base / "data", n_per_class=24, with_glove=False)
    run_dir = base / "run"
    result = CliRunner().invoke(app, ["train", *set_args([f"data.data_dir={data}", *FAST, "model.hidden_size=8",
                                                          "model.ngrams.buckets=4096", "model.ngrams.lr=0.05",
                                                          "model.combine=mixture"]), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    proc, port = start_server("--run", str(run_dir), "--explain-max-tokens", str(EXPLAIN_MAX_TOKENS))
    yield port
    code, out = stop(proc)
    assert code == 0, out


def submit(driver: object, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "label").text
                                    or d.find_element(By.ID, "error").text)


def shown_probabilities(driver: object) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#probabilities tr.prob")
    return {row.get_attribute("data-name"): float(row.find_element(By.CLASS_NAME, "probability").text)
            for row in rows}


def test_the_page_shows_the_label_probabilities_and_words_highlighted_in_a_real_browser(page_server, tmp_path):
    from selenium.webdriver.common.by import By

    port, started = page_server, time.monotonic()
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        assert driver.title == "sentiment"
        submit(driver, REVIEW)
        assert driver.find_element(By.ID, "error").text == ""
        predicted = request(port, "POST", "/predict", {"text": REVIEW})[1]
        explained = request(port, "POST", "/explain", {"text": REVIEW})[1]
        assert driver.find_element(By.ID, "label").text == predicted["label"] == explained["label"]
        shown = shown_probabilities(driver)
        assert shown.keys() == predicted["probs"].keys()
        for name, p in predicted["probs"].items():
            assert abs(shown[name] - p) <= 0.0005 + 1e-9, (shown, predicted)  # shown to 3 decimals

        # every token is highlighted; the outlined one is the token of largest |contribution| POST /explain gives
        tokens = driver.find_elements(By.CSS_SELECTOR, "#explanation .token")
        assert [t.text for t in tokens] == explained["tokens"]
        strongest = driver.find_element(By.ID, "strongest")
        column = [row[0] for row in explained["contributions"]]  # two classes: the positive logit's
        at = max(range(len(column)), key=lambda i: abs(column[i]))
        assert strongest.text == explained["tokens"][at]
        assert abs(float(strongest.get_attribute("data-contribution")) - column[at]) <= 1e-6
        assert ("pos" if column[at] > 0 else "neg") in strongest.get_attribute("class").split()

        screenshot = tmp_path / "page.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 1000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # a text over the server's --explain-max-tokens: no highlights, but the label, and why in one line
        long_review = " ".join(["the plot was dull and the acting was awful"] * 6)
        submit(driver, long_review)
        assert driver.find_element(By.ID, "label").text == \
            request(port, "POST", "/predict", {"text": long_review})[1]["label"]
        assert "--explain-max-tokens" in driver.find_element(By.ID, "note").text
        assert driver.find_elements(By.CSS_SELECTOR, "#explanation .token") == []
    finally:
        driver.quit()
    assert time.monotonic() - started < 30  # the browser part; the whole test is ~10 s on 2 shared cores


def test_a_missing_browser_skips_with_its_reason_but_fails_under_ci(monkeypatch, tmp_path):
    import test_serve_page

    monkeypatch.setattr(test_serve_page, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium at .*no-chromium"):
        browser_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        browser_or_skip()
