"""The labeling page in a real headless Chromium: label with the keyboard (type + Enter, the
skip key, the back key) and find the labels in the CSV on disk; a refused label's message on
the page; the review grid (suggestions from the committed tiny reader, which reads these
captchas exactly): fix the wrong one, accept the rest with one key."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from captcha_ocr.data import read_labels_file
from captcha_ocr.label.store import image_id
from tests import tiny_reader
from tests.label_helpers import digests, draw_images, start_app

WAIT_S = 20


@pytest.fixture
def app(tmp_path: Path, request: pytest.FixtureRequest):
    """Start ``captcha-ocr label`` on drawn captchas with the flags the test's ``flags``
    marker gives; yields (images folder, truth, base URL)."""
    images = tmp_path / "images"
    truth = draw_images(images)
    before = digests(images)
    marker = request.node.get_closest_marker("flags")
    flags = marker.args if marker else ()
    process, url = start_app(images, tmp_path / "work", tmp_path / "app.log", *flags)
    try:
        yield images, truth, url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert digests(images) == before


def csv_labels(images: Path) -> dict[str, str]:
    path = images / "labels.csv"
    return {Path(s.path).name: s.label for s in read_labels_file(path)} if path.exists() else {}


def wait(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S).until(lambda _: condition(), message=what)


def shown_path(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, "path").text


def type_into_answer(browser, *keys: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "answer").send_keys(*keys)


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.mark.flags("--charset", "abcd1234")
def test_label_with_the_keyboard(browser, app) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    images, truth, url = app
    browser.get(url + "/")
    wait(browser, lambda: shown_path(browser) in truth, "the first captcha")
    answer = browser.find_element(By.ID, "answer")
    assert answer.get_attribute("value") == ""  # no model yet: nothing suggested
    assert browser.find_element(By.ID, "progress").text == f"0 / {len(truth)}"

    def step(*keys: str) -> str:
        """Press ``keys`` on the captcha shown; wait for the next one; the one pressed on."""
        path = shown_path(browser)
        type_into_answer(browser, *keys)
        wait(browser, lambda: shown_path(browser) != path, f"the page to move on from {path}")
        return path

    first = step(truth[shown_path(browser)], Keys.ENTER)
    skipped = step(Keys.TAB)
    typo = step("aaaa", Keys.ENTER)
    # the back key returns to the captcha just saved, with what was typed, to fix it
    type_into_answer(browser, Keys.ARROW_UP)
    wait(browser, lambda: shown_path(browser) == typo, "the back key")
    assert answer.get_attribute("value") == "aaaa"
    fixed = step(truth[typo], Keys.ENTER)
    assert fixed == typo
    fourth = step(truth[shown_path(browser)], Keys.ENTER)

    # a label with a character outside --charset: the page says so and stays on the captcha
    current = shown_path(browser)
    type_into_answer(browser, "xyz", Keys.ENTER)
    message = browser.find_element(By.ID, "message")
    wait(browser, message.is_displayed, "the 422 message")
    assert "not in the charset" in message.text and "'xyz'" in message.text
    assert shown_path(browser) == current

    assert csv_labels(images) == {first: truth[first], typo: truth[typo], fourth: truth[fourth]}
    assert skipped not in csv_labels(images)
    wait(
        browser,
        lambda: browser.find_element(By.ID, "progress").text == f"3 / {len(truth)}",
        "the progress",
    )


@pytest.mark.flags("--model", str(tiny_reader.PATH))
def test_review_grid(browser, app) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    images, truth, url = app
    wrong = "cap003.png"  # the reader reads what was drawn; here the person knows better
    truth = {**truth, wrong: "dcbb"}
    browser.get(url + "/")
    wait(
        browser,
        lambda: "suggestion" in browser.find_element(By.ID, "confidence").text,
        "a suggestion",
    )
    type_into_answer(browser, Keys.F2)
    cells = lambda: browser.find_elements(By.CSS_SELECTOR, "#grid .cell")  # noqa: E731
    wait(browser, lambda: len(cells()) == len(truth), "the review grid")
    assert not browser.find_element(By.ID, "answer").is_displayed()  # one mode at a time
    shown = {
        c.get_attribute("data-id"): c.find_element(By.CLASS_NAME, "text").text for c in cells()
    }
    assert shown[image_id(wrong)] == "dcba"  # each cell shows its predicted text

    cell = browser.find_element(By.CSS_SELECTOR, f'#grid .cell[data-id="{image_id(wrong)}"]')
    cell.click()  # marks it wrong and opens it to fix
    assert "wrong" in cell.get_attribute("class")
    fix = cell.find_element(By.TAG_NAME, "input")
    fix.send_keys("dcbb", Keys.ENTER)
    wait(browser, lambda: "saved" in cell.get_attribute("class"), "the fix to be saved")
    browser.find_element(By.TAG_NAME, "body").send_keys("a")  # accept the rest
    wait(browser, lambda: len(csv_labels(images)) == len(truth), "every label in the CSV")
    assert csv_labels(images) == truth
    wait(
        browser, lambda: browser.find_element(By.ID, "review-empty").is_displayed(), "an empty grid"
    )
