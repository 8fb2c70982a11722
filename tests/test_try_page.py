"""The "try a model" page at GET / of captcha-ocr serve, in a real headless Chromium: pick,
drop and paste images, and see what /v1/read says, with one mark per character under the
image where the model read it. The server is the real app under uvicorn (in a thread), with
the committed tiny ONNX reader of tests/tiny_reader.py."""

from __future__ import annotations

import base64
import fnmatch
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from captcha_ocr.serve import ServeSettings, create_app
from tests import tiny_reader

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "captcha_ocr"

# --- the page, without a browser -----------------------------------------------------------


def test_the_page_is_served_at_the_root_and_needs_no_network():
    with TestClient(create_app(tiny_reader.PATH, ServeSettings())) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<title>captcha-ocr: try a model</title>" in page.text
        # Nothing from a CDN or any other host: only this server's own paths.
        for reference in ("http://", "https://", 'src="//', "@import"):
            assert reference not in page.text
        schema = client.get("/openapi.json").json()
        assert "/" not in schema["paths"] and "/v1/read" in schema["paths"]
        assert client.get("/healthz").json()["ready"] is True


def test_every_data_file_of_the_package_is_package_data():
    """A wheel carries a non-Python file only if pyproject.toml's package-data names it."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"].get("package-data", {})
    data_files = [
        p
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert any(p.name == "try.html" for p in data_files)
    for path in data_files:
        covered = False
        for package, globs in patterns.items():
            folder = ROOT / "src" / Path(*package.split("."))
            if folder in path.parents:
                inside = path.relative_to(folder).as_posix()
                covered |= any(fnmatch.fnmatch(inside, g) for g in globs)
        assert covered, f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data]"


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The app under uvicorn on a free port, in a thread; yields its URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(tiny_reader.PATH, ServeSettings())
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(10)


def png(text: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tiny_reader.draw(text)[..., 0]).save(buffer, "PNG")
    return buffer.getvalue()


def api_read(url: str, image: bytes, **options) -> dict:
    answer = httpx.post(
        f"{url}/v1/read", params={"positions": "true", **options}, files=[("image", image)]
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]


def open_page(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element("id", "model-charset").text == tiny_reader.CHARSET
    )


def finished_cards(browser, count: int) -> list:
    """Wait until ``count`` result cards are done or failed; newest first."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(driver):
        cards = driver.find_elements("css selector", "#results .card")
        states = [c.get_attribute("data-state") for c in cards]
        return cards if len(cards) == count and "pending" not in states else False

    return WebDriverWait(browser, 20).until(ready)


def check_card(card, expected: dict) -> None:
    """The card shows what /v1/read said, and one mark per character where it was read."""
    assert card.get_attribute("data-state") == "done"
    assert card.find_element("css selector", ".text").text == expected["text"]
    assert (
        f"{100 * expected['confidence']:.1f} %"
        in card.find_element("css selector", ".reading").text
    )
    image = card.find_element("css selector", ".stage img")
    assert image.value_of_css_property("image-rendering") == "pixelated"
    width = image.rect["width"]
    assert width >= 4 * tiny_reader.SPEC.width  # shown large: a whole zoom of its 100 px
    marks = card.find_elements("css selector", ".marks .mark")
    assert len(marks) == len(expected["text"]) == len(expected["positions"])
    for mark, position in zip(marks, expected["positions"]):
        assert mark.find_element("css selector", ".char").text == position["char"]
        left, right = position["span"]
        assert mark.rect["x"] - image.rect["x"] == pytest.approx(left * width, abs=1.5)
        assert mark.rect["width"] == pytest.approx((right - left) * width, abs=1.5)
        assert mark.rect["y"] >= image.rect["y"]  # under the image (its band covers it)


def drop_or_paste(browser, event: str, data: bytes, name: str, kind: str) -> None:
    """Dispatch a synthetic drop (on the drop zone) or paste event carrying one file."""
    browser.execute_script(
        """
        const [b64, name, type, event] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type }));
        const init = { bubbles: true, cancelable: true };
        const target = document.getElementById("drop-zone");
        if (event === "drop") {
          target.dispatchEvent(new DragEvent("dragover", { ...init, dataTransfer: transfer }));
          target.dispatchEvent(new DragEvent("drop", { ...init, dataTransfer: transfer }));
        } else {
          document.dispatchEvent(new ClipboardEvent("paste", { ...init, clipboardData: transfer }));
        }
        """,
        base64.b64encode(data).decode(),
        name,
        kind,
        event,
    )


def test_pick_drop_and_paste_show_what_the_api_reads(browser, server, tmp_path):
    open_page(browser, server)
    picked = tmp_path / "picked.png"
    picked.write_bytes(png("ab12"))
    browser.find_element("css selector", "input[type=file]").send_keys(str(picked))
    check_card(finished_cards(browser, 1)[0], api_read(server, picked.read_bytes()))

    drop_or_paste(browser, "drop", png("d3c"), "dropped.png", "image/png")
    newest = finished_cards(browser, 2)[0]
    assert newest.find_element("css selector", "h3").text == "dropped.png"
    check_card(newest, api_read(server, png("d3c")))

    drop_or_paste(browser, "paste", png("4a4a"), "image.png", "image/png")
    check_card(finished_cards(browser, 3)[0], api_read(server, png("4a4a")))


def test_api_errors_show_on_the_card(browser, server):
    open_page(browser, server)
    drop_or_paste(browser, "drop", b"not an image at all", "notes.txt", "text/plain")
    card = finished_cards(browser, 1)[0]
    assert card.get_attribute("data-state") == "error"
    message = card.find_element("css selector", "[role=alert]").text
    assert message.startswith("not_an_image: images[0]")

    # The options are typed with the keyboard and sent along: a character outside the
    # charset gets the API's 422, shown on the card.
    browser.find_element("id", "allowed-chars").send_keys("z")
    drop_or_paste(browser, "drop", png("ab"), "ab.png", "image/png")
    card = finished_cards(browser, 2)[0]
    assert card.get_attribute("data-state") == "error"
    assert card.find_element("css selector", "[role=alert]").text.startswith("invalid_parameter:")
    assert "z" in card.find_element("css selector", "[role=alert]").text


def test_the_page_is_labelled_for_keyboards_and_screen_readers(browser, server):
    open_page(browser, server)
    for control in browser.find_elements("css selector", "input"):
        # Every input has a label: its own <label for=...> or one around it.
        labelled = browser.execute_script(
            "return arguments[0].labels.length > 0 || !!arguments[0].getAttribute('aria-label')",
            control,
        )
        assert labelled, control.get_attribute("id")
    drop_or_paste(browser, "drop", png("ab"), "ab.png", "image/png")
    card = finished_cards(browser, 1)[0]
    mark = card.find_element("css selector", ".mark")
    assert mark.get_attribute("tabindex") == "0"
    assert "time steps 0–1" in mark.get_attribute("title")
    browser.find_element("id", "clear").click()
    assert browser.find_elements("css selector", "#results .card") == []
