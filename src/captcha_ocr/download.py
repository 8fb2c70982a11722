"""Download a dataset archive (with a progress bar and an optional SHA-256) and unpack it safely.

Archive members that would land outside the target folder (``../x``, absolute paths, links)
are refused before anything is written. A finished download is not repeated.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.files import atomic_path
from captcha_ocr.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK = 1 << 16
DONE_MARKER = ".captcha-ocr-extracted"
# A file with one of these names must be an archive: an HTML error page saved as
# "captchas.zip" is a failed download, not a data set.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tbz2", ".txz", ".tar.gz", ".tar.bz2", ".tar.xz")
# Errors of a damaged (e.g. truncated) archive, met while its members are read.
DAMAGED_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, path: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` (http, https or file) to ``path`` atomically, with a progress bar."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise CaptchaOCRError(f"cannot download {url!r}: only http(s):// and file:// URLs work")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(path) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                open(tmp, "wb") as out,
                progress_bar(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=f"downloading {path.name}",
                    enabled=progress,
                ) as bar,
            ):
                received = 0
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received != total:
                raise CaptchaOCRError(
                    f"download of {url} was cut short ({received} of {total} bytes); try again"
                )
    except CaptchaOCRError:
        raise
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise CaptchaOCRError(f"cannot download {url}: {reason}") from None
    return path


def _safe_target(root: Path, name: str) -> Path:
    """Where archive member ``name`` goes under ``root``; an error if it escapes."""
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or (member.parts and ":" in member.parts[0]):
        raise CaptchaOCRError(
            f"archive member {name!r} would be written outside {root}; refusing the archive"
        )
    target = (root / Path(*member.parts)).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise CaptchaOCRError(
            f"archive member {name!r} would be written outside {root}; refusing the archive"
        )
    return target


def check_free_space(target: Path, need_bytes: int, archive: Path) -> None:
    """Refuse to unpack what would fill the disk (a zip bomb, or just a full disk)."""
    free = shutil.disk_usage(target).free
    if need_bytes > free:
        raise CaptchaOCRError(
            f"{archive.name} unpacks to {need_bytes / 1e6:,.1f} MB but only {free / 1e6:,.1f} MB "
            f"are free under {target}; free some space or choose another --to"
        )


def extract(archive: Path, target: Path) -> list[Path]:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into ``target``, refusing unsafe members,
    archives too large for the free disk space, and damaged archives."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        return _extract(archive, target)
    except DAMAGED_ARCHIVE_ERRORS as error:
        raise CaptchaOCRError(
            f"{archive} is damaged ({error}); delete it and download it again"
        ) from None


def _extract(archive: Path, target: Path) -> list[Path]:
    written = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [(info, _safe_target(target, info.filename)) for info in zf.infolist()]
            check_free_space(target, sum(info.file_size for info, _ in members), archive)
            for info, path in members:
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as source, atomic_path(path) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out)
                written.append(path)
        return written
    if not tarfile.is_tarfile(archive):
        raise CaptchaOCRError(f"{archive} is neither a zip nor a tar archive")
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _safe_target(target, member.name)
            if member.issym() or member.islnk() or member.isdev():
                raise CaptchaOCRError(
                    f"archive member {member.name!r} is a link or device; refusing the archive"
                )
        check_free_space(target, sum(m.size for m in members if m.isfile()), archive)
        for member in members:
            path = _safe_target(target, member.name)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = tf.extractfile(member)
                assert source is not None
                with source, atomic_path(path) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out)
                written.append(path)
    return written


def download(
    url: str, to: str | Path = "Datasets", sha256: str | None = None, progress: bool = True
) -> Path:
    """Fetch a dataset archive into ``to`` and unpack it there; returns the folder.

    Skips the download when the archive (with the right checksum) is already there, and the
    extraction when it already finished.

    >>> download("https://example.org/captcha_images_v2.zip", "Datasets")  # doctest: +SKIP
    PosixPath('Datasets')
    """
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise CaptchaOCRError(f"--to {to} is a file, not a folder; choose a folder")
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    archive = to / name
    marker = to / f"{DONE_MARKER}.{name}"
    if archive.is_file() and (sha256 is None or sha256_of(archive) == sha256.lower()):
        log.info("%s is already downloaded", archive)
    else:
        marker.unlink(missing_ok=True)  # a new archive must be extracted again
        fetch(url, archive, progress)
        log.info("downloaded %s (%.1f MB)", archive, archive.stat().st_size / 1e6)
    if sha256 is not None:
        actual = sha256_of(archive)
        if actual != sha256.lower():
            archive.unlink()
            raise CaptchaOCRError(
                f"{name}: SHA-256 is {actual}, expected {sha256}; the file was removed"
            )
    size = archive.stat().st_size
    is_archive = size > 0 and (zipfile.is_zipfile(archive) or tarfile.is_tarfile(archive))
    if not is_archive and (size == 0 or name.lower().endswith(ARCHIVE_SUFFIXES)):
        archive.unlink()
        what = "is empty" if size == 0 else f"is not a zip or tar archive ({size:,} bytes)"
        raise CaptchaOCRError(
            f"the download of {url} {what}; the file was removed: check the URL and try again"
        )
    if not is_archive:
        log.info("%s is not an archive; left as it is", archive)
        return to
    if marker.is_file():
        log.info("%s is already extracted", archive)
        return to
    files = extract(archive, to)
    marker.write_text("ok\n")
    log.info("extracted %d files into %s", len(files), to)
    return to
