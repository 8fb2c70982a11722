"""Files for bulk reading (:mod:`captcha_ocr.bulk`), without Ray: list the images a SOURCE
names, fetch one, and write result rows as Parquet or JSONL shards.

A SOURCE is local or on any filesystem fsspec opens (``s3://``, ``gs://``, ``hdfs://``, ...,
with that protocol's package installed: s3fs, gcsfs, ...).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from captcha_ocr.data import image_files
from captcha_ocr.errors import CaptchaOCRError
from captcha_ocr.images import ImageLoadError, is_image_path

INSTALL_HINT = "pip install 'captcha-ocr[scale]'"
COLUMNS = ("path", "text", "confidence", "error")
OUT_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl"}
# Rows per output file: ~5 MB of Parquet, so a million captchas make ~10 files.
SHARD_ROWS = 100_000


def is_url(path: str) -> bool:
    return "://" in path


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def list_images(sources: Sequence[str]) -> list[str]:
    """The image paths that ``sources`` name, in order, each at most once.

    Each source is a folder (its images, recursively, with the suffixes ``predict`` reads), a
    glob (``data/**/*.png``, images only), a text file listing one path per line (relative
    paths are relative to the list's folder; blank lines and ``#`` comments skipped), or one
    image. Local paths come back absolute, so that Ray workers in any folder find them;
    ``s3://``, ``gs://`` and other fsspec URLs come back as URLs.
    """
    paths: list[str] = []
    for source in sources:
        found = _list_remote(source) if is_url(source) else _list_local(source)
        paths.extend(found)
    return list(dict.fromkeys(paths))


def _list_local(source: str) -> list[str]:
    path = Path(source)
    if _has_glob(source):
        found = [Path(p) for p in glob.glob(source, recursive=True)]
        found = sorted(p for p in found if p.is_file() and is_image_path(p))
        if not found:
            raise CaptchaOCRError(f"no images match {source}")
        return [str(p.resolve()) for p in found]
    if path.is_dir():
        found = image_files(path)
        if not found:
            raise CaptchaOCRError(f"no images found in folder {path}")
        return [str(p.resolve()) for p in found]
    if path.is_file():
        if is_image_path(path):
            return [str(path.resolve())]
        return [
            entry if is_url(entry) else str((path.parent / entry).resolve())
            for entry in _list_file_entries(path.read_bytes(), source)
        ]
    raise CaptchaOCRError(f"{path} does not exist (give a folder, a file list or a glob)")


def _list_remote(source: str) -> list[str]:
    fs, root = filesystem(source)
    if _has_glob(root):
        found = sorted(p for p in fs.glob(root) if is_image_path(Path(p)) and fs.isfile(p))
    elif fs.isdir(root):
        found = sorted(p for p in fs.find(root) if is_image_path(Path(p)))
    elif fs.isfile(root):
        if is_image_path(Path(root)):
            return [source]
        folder = source.rsplit("/", 1)[0]
        with fs.open(root, "rb") as handle:
            entries = _list_file_entries(handle.read(), source)
        return [e if is_url(e) else f"{folder}/{e.lstrip('/')}" for e in entries]
    else:
        raise CaptchaOCRError(f"{source} does not exist (give a folder, a file list or a glob)")
    if not found:
        raise CaptchaOCRError(f"no images found at {source}")
    return [fs.unstrip_protocol(p) for p in found]


def _list_file_entries(data: bytes, name: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CaptchaOCRError(
            f"{name} is neither an image (by its suffix) nor a UTF-8 list of image paths"
        ) from None
    entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise CaptchaOCRError(f"{name} lists no image paths (one path per line)")
    return entries


def filesystem(url: str):
    """fsspec's filesystem for ``url`` and the path inside it (s3fs, gcsfs, ... as installed)."""
    try:
        import fsspec
    except ImportError:
        raise CaptchaOCRError(f"reading {url} needs fsspec: {INSTALL_HINT}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise CaptchaOCRError(
            f"cannot open {url}: {error} (install the fsspec package for its protocol, "
            "e.g. s3fs for s3://, gcsfs for gs://)"
        ) from None


def fetch(path: str) -> str | bytes:
    """A local path as is (so errors name it exactly as ``predict`` does); a URL's bytes."""
    if not is_url(path):
        return path
    try:
        fs, inner = filesystem(path)
        with fs.open(inner, "rb") as handle:
            return handle.read()
    # Any filesystem's own errors (botocore's, gcsfs's, ...) too: the image is unreadable, and
    # that is a row with an error, never a failed job.
    except Exception as error:
        raise ImageLoadError(f"{path}: cannot fetch ({error})") from None


class ShardWriter:
    """Rows -> ``out/part-NNNNN.parquet`` (or ``.jsonl``) files of :data:`SHARD_ROWS` rows.

    Locally the shards go to a temporary folder beside ``out``, renamed onto ``out`` when the
    block ends without error (removed otherwise), so ``out`` is whole or absent. On an object
    store (``s3://...``) each shard is one object, written whole by the store.
    """

    def __init__(self, out: str) -> None:
        suffix = Path(out.rstrip("/")).suffix.lower()
        if suffix not in OUT_FORMATS:
            raise CaptchaOCRError(
                f"--out {out}: name it NAME.parquet or NAME.jsonl (a folder of shards)"
            )
        self.out, self.format = out.rstrip("/"), OUT_FORMATS[suffix]
        self.remote = is_url(out)
        self.fs = filesystem(out)[0] if self.remote else None
        exists = self.fs.exists(self.out) if self.fs else os.path.lexists(self.out)
        if exists:
            raise CaptchaOCRError(f"--out {out} already exists; remove it or choose another name")
        self.folder = self.out
        self.pending: list[dict] = []
        self.shards = 0

    def __enter__(self) -> ShardWriter:
        if not self.remote:
            parent = Path(self.out).parent
            parent.mkdir(parents=True, exist_ok=True)
            # mkdir, not mkdtemp: the folder gets the umask's usual mode, not 0700.
            self.folder = str(parent / f".{Path(self.out).name}.{uuid.uuid4().hex[:12]}.tmp")
            os.mkdir(self.folder)
        return self

    def add(self, rows: list[dict]) -> None:
        self.pending.extend(rows)
        while len(self.pending) >= SHARD_ROWS:
            self._write(self.pending[:SHARD_ROWS])
            self.pending = self.pending[SHARD_ROWS:]

    def __exit__(self, kind, value, traceback) -> None:
        if self.remote:
            if kind is None and (self.pending or not self.shards):
                self._write(self.pending)
            return
        try:
            if kind is None:
                if self.pending or not self.shards:
                    self._write(self.pending)
                os.replace(self.folder, self.out)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _write(self, rows: list[dict]) -> None:
        name = f"{self.folder}/part-{self.shards:05d}.{self.format}"
        with self.fs.open(name, "wb") if self.fs else open(name, "wb") as handle:
            handle.write(_encode(rows, self.format))
            if not self.remote:  # on disk before the folder's rename makes it visible
                handle.flush()
                os.fsync(handle.fileno())
        self.shards += 1


def _encode(rows: list[dict], kind: str) -> bytes:
    """Rows -> one Parquet or JSONL file's bytes. Both hold UTF-8 only, so a file name that is
    not UTF-8 (Linux allows any bytes) is written with ``\\xff`` escapes for its odd bytes."""
    rows = [{key: _utf8(value) for key, value in row.items()} for row in rows]
    if kind == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("path", pa.string()),
            ("text", pa.string()),
            ("confidence", pa.float64()),
            ("error", pa.string()),
        ]
    )
    table = pa.table({c: [r[c] for r in rows] for c in COLUMNS}, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _utf8(value):
    if not isinstance(value, str):
        return value
    raw = value.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")
