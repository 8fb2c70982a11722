"""download(): file:// and a local HTTP server on 127.0.0.1 only; safe extraction; checksums."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from captcha_ocr.download import DONE_MARKER, download, extract
from captcha_ocr.errors import CaptchaOCRError

FILES = {"captchas/2b827.png": b"first", "captchas/sub/0042.png": b"second" * 100}


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    """A proxy from the environment must not carry 127.0.0.1 traffic off this machine."""
    for name in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extracted(folder: Path) -> dict[str, bytes]:
    """Files under ``folder`` except downloaded archives and markers, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix not in (".zip", ".gz") and DONE_MARKER not in p.name
    }


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``root``; counts requests per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if self.path == "/short.zip":
                    # Promise more bytes than are sent, then hang up.
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b"PK\x03\x04 only the start")
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, format, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    running = Server(root)
    try:
        yield running
    finally:
        running.close()


# --- file:// -------------------------------------------------------------------------------


def test_file_url_zip(tmp_path):
    archive = make_zip(tmp_path / "captchas.zip", FILES)
    out = tmp_path / "Datasets"
    assert download(archive.as_uri(), out, progress=False) == out
    assert (out / "captchas.zip").read_bytes() == archive.read_bytes()
    assert extracted(out) == FILES


def test_file_url_missing_file(tmp_path):
    with pytest.raises(CaptchaOCRError, match="cannot download"):
        download((tmp_path / "nope.zip").as_uri(), tmp_path / "out", progress=False)


def test_non_archive_is_left_as_is(tmp_path):
    source = tmp_path / "labels.csv"
    source.write_text("a.png,abc\n")
    out = tmp_path / "out"
    download(source.as_uri(), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["labels.csv"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/captchas.zip",
        "/tmp/captchas.zip",
        "captchas.zip",
        "data:,hello",
        "c:/x.zip",
    ],
)
def test_unsupported_scheme(tmp_path, url):
    with pytest.raises(CaptchaOCRError, match="only http"):
        download(url, tmp_path / "out", progress=False)


# --- http:// ------------------------------------------------------------------------------


def test_http_zip_and_second_call_skips(server, tmp_path):
    make_zip(server.root / "captchas.zip", FILES)
    out = tmp_path / "Datasets"
    download(server.url("captchas.zip"), out, progress=False)
    assert server.requests == ["/captchas.zip"]
    assert extracted(out) == FILES
    download(server.url("captchas.zip"), out, progress=False)
    assert server.requests == ["/captchas.zip"]  # nothing fetched again
    assert extracted(out) == FILES


def test_http_tar_gz(server, tmp_path):
    make_tar(server.root / "captchas.tar.gz", FILES)
    out = tmp_path / "Datasets"
    download(server.url("captchas.tar.gz"), out, progress=False)
    assert extracted(out) == FILES
    assert (out / "captchas.tar.gz").is_file()


def test_finished_extraction_is_not_repeated(server, tmp_path):
    make_zip(server.root / "captchas.zip", FILES)
    out = tmp_path / "Datasets"
    download(server.url("captchas.zip"), out, progress=False)
    (out / "captchas" / "2b827.png").write_bytes(b"edited by the user")
    download(server.url("captchas.zip"), out, progress=False)
    assert (out / "captchas" / "2b827.png").read_bytes() == b"edited by the user"


def test_sha256_match(server, tmp_path):
    archive = make_zip(server.root / "captchas.zip", FILES)
    out = tmp_path / "Datasets"
    download(server.url("captchas.zip"), out, sha256=sha256(archive).upper(), progress=False)
    assert extracted(out) == FILES
    # A second call checks the file it has, and skips the download.
    download(server.url("captchas.zip"), out, sha256=sha256(archive), progress=False)
    assert server.requests == ["/captchas.zip"]


def test_sha256_mismatch_removes_the_file(server, tmp_path):
    make_zip(server.root / "captchas.zip", FILES)
    out = tmp_path / "Datasets"
    with pytest.raises(CaptchaOCRError, match=r"SHA-256 .*expected 0{64}; the file was removed"):
        download(server.url("captchas.zip"), out, sha256="0" * 64, progress=False)
    assert list(out.iterdir()) == []


def test_wrong_local_copy_is_fetched_again(server, tmp_path):
    archive = make_zip(server.root / "captchas.zip", FILES)
    out = tmp_path / "Datasets"
    out.mkdir()
    (out / "captchas.zip").write_bytes(b"a stale, wrong copy")
    download(server.url("captchas.zip"), out, sha256=sha256(archive), progress=False)
    assert server.requests == ["/captchas.zip"]
    assert (out / "captchas.zip").read_bytes() == archive.read_bytes()


def test_server_closes_early(server, tmp_path):
    out = tmp_path / "Datasets"
    with pytest.raises(CaptchaOCRError, match=r"cut short \(\d+ of 100000 bytes\)"):
        download(server.url("short.zip"), out, progress=False)
    assert list(out.iterdir()) == []  # no partial archive, no temp file


def test_http_404(server, tmp_path):
    with pytest.raises(CaptchaOCRError, match=r"cannot download .*missing\.zip: "):
        download(server.url("missing.zip"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "missing.zip").exists()


def test_unreachable_port(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The socket is closed: nothing listens on that port now.
    with pytest.raises(CaptchaOCRError, match="cannot download"):
        download(f"http://127.0.0.1:{port}/captchas.zip", tmp_path / "out", progress=False)


# --- unsafe archives -----------------------------------------------------------------------


def zip_escape_members(tmp_path: Path) -> list[str]:
    return [
        "../evil.txt",
        "..\\evil.txt",
        "captchas/../../evil.txt",
        str(tmp_path / "abs_evil.txt"),
        "/evil.txt",
        "C:/evil.txt",
    ]


@pytest.mark.parametrize("index", range(6))
def test_zip_members_outside_are_refused(tmp_path, index):
    bad = zip_escape_members(tmp_path)[index]
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", bad: b"evil"})
    assert bad in zipfile.ZipFile(archive).namelist()
    out = tmp_path / "deep" / "Datasets"
    with pytest.raises(CaptchaOCRError, match="outside"):
        download(archive.as_uri(), out, progress=False)
    # Refused before anything is written: not the bad member, not even the good one.
    assert extracted(out) == {}
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (tmp_path / "abs_evil.txt").exists()
    assert not list(out.glob(f"{DONE_MARKER}*"))


@pytest.mark.parametrize("absolute", [False, True])
def test_tar_members_outside_are_refused(tmp_path, absolute):
    bad = str(tmp_path / "abs_evil.txt") if absolute else "../evil.txt"
    archive = make_tar(tmp_path / "bad.tar.gz", {"ok.txt": b"fine", bad: b"evil"})
    out = tmp_path / "Datasets"
    with pytest.raises(CaptchaOCRError, match="outside"):
        download(archive.as_uri(), out, progress=False)
    assert extracted(out) == {}
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "abs_evil.txt").exists()


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../outside", "ok.txt"])
def test_tar_symlink_refused(tmp_path, link_target):
    archive = make_tar(tmp_path / "links.tar.gz", {"ok.txt": b"fine"}, links={"link": link_target})
    out = tmp_path / "Datasets"
    with pytest.raises(CaptchaOCRError, match="link"):
        download(archive.as_uri(), out, progress=False)
    assert extracted(out) == {}
    assert not (out / "link").exists()
    assert not (out / "link").is_symlink()


def test_tar_hardlink_refused(tmp_path):
    path = tmp_path / "hard.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(CaptchaOCRError):
        extract(path, tmp_path / "out")
    assert not (tmp_path / "out" / "hard").exists()


def test_extract_rejects_a_non_archive(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"neither zip nor tar")
    with pytest.raises(CaptchaOCRError, match="neither a zip nor a tar"):
        extract(path, tmp_path / "out")


def test_new_archive_is_extracted_after_a_refetch(server, tmp_path):
    out = tmp_path / "Datasets"
    make_zip(server.root / "captchas.zip", {"captchas/a.png": b"version 1"})
    download(server.url("captchas.zip"), out, progress=False)
    assert (out / "captchas" / "a.png").read_bytes() == b"version 1"
    archive = make_zip(server.root / "captchas.zip", {"captchas/a.png": b"version 2"})
    download(server.url("captchas.zip"), out, sha256=sha256(archive), progress=False)
    assert server.requests == ["/captchas.zip", "/captchas.zip"]  # fetched again
    assert (out / "captchas.zip").read_bytes() == archive.read_bytes()
    assert (out / "captchas" / "a.png").read_bytes() == b"version 2"
