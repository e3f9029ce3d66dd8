"""Download public datasets (FracAtlas from figshare) with checksums and safe, atomic unpacking.

Everything here uses only the standard library (``urllib.request``) plus ``rich`` for the progress
bar. Every request is bounded by a timeout, every file is checked against the md5 that figshare
publishes, archives are unpacked only when no member could escape the target folder, and every
step writes beside its destination and renames into place, so an interrupted run leaves either
nothing or a complete result, never half of one.

FracAtlas: Abedeen et al., "FracAtlas: A Dataset for Fracture Classification, Localization and
Segmentation of Musculoskeletal Radiographs", Scientific Data 10, 521 (2023);
doi:10.6084/m9.figshare.22363012, CC BY 4.0.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from fracbench import __version__
from fracbench.paths import data_home

FIGSHARE_API = "https://api.figshare.com/v2"
FIGSHARE_API_ENV = "FRACBENCH_FIGSHARE_API"
FRACATLAS_ARTICLE_ID = 22363012
FRACATLAS_DOI = "10.6084/m9.figshare.22363012"
USER_AGENT = f"fracbench/{__version__}"

DEFAULT_TIMEOUT = 60.0  # seconds a connect or a single read may take, not the whole transfer
CHUNK_SIZE = 1 << 20

_MANUAL_FRACATLAS = (
    f"download FracAtlas by hand from https://doi.org/{FRACATLAS_DOI}, unzip it, and pass the "
    "folder that holds dataset.csv and images/ with --data-dir"
)


class _Digest(Protocol):
    """What ``hashlib`` objects offer and the streaming copy needs."""

    def update(self, data: bytes, /) -> None: ...


class DownloadError(RuntimeError):
    """A download, checksum or unpacking step failed; the message says what and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a figshare article: where to fetch it and what it must hash to."""

    name: str
    url: str
    size: int  # bytes; 0 when the server did not say
    md5: str  # lower-case hex; "" when the server published none


# --------------------------------------------------------------------------------------------
# HTTP


def _resolve_api(api: str | None) -> str:
    """The API base: the argument, else $FRACBENCH_FIGSHARE_API, else the public figshare API."""
    return (api or os.environ.get(FIGSHARE_API_ENV) or FIGSHARE_API).rstrip("/")


def _open(url: str, timeout: float, what: str, hint: str) -> http.client.HTTPResponse:
    """GET ``url`` with fracbench's User-Agent; any failure becomes a DownloadError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # callers checked the scheme
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"{what} failed: the server answered HTTP {exc.code} {exc.reason} for {url}. {hint}"
        ) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"{what} failed: could not reach {url} ({exc.reason}). {hint}") from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, malformed replies
        raise DownloadError(f"{what} failed while contacting {url}: {exc!r}. {hint}") from exc


def _check_scheme(url: str) -> None:
    """Refuse anything but http(s): urllib would otherwise happily open file:// or ftp:// URLs."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"refusing to fetch {url!r}: only http and https URLs are supported")


def list_figshare_files(article_id: int, api: str | None = None, timeout: float = 30) -> list[RemoteFile]:
    """The files of a public figshare article, with their download URLs, sizes and md5 sums.

    ``api`` defaults to $FRACBENCH_FIGSHARE_API, then to the public figshare API.
    """
    url = f"{_resolve_api(api)}/articles/{int(article_id)}/files"
    _check_scheme(url)
    hint = (
        "Retry later and check your network connection (figshare may also be down); or "
        f"download the files by hand from https://doi.org/10.6084/m9.figshare.{int(article_id)} "
        "and pass the unpacked folder with --data-dir."
    )
    with _open(url, timeout, f"listing files of figshare article {article_id}", hint) as resp:
        try:
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"reading the file list from {url} failed: {exc!r}. {hint}") from exc
    try:
        entries = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DownloadError(f"the file list from {url} is not JSON ({exc}). {hint}") from exc
    if not isinstance(entries, list):
        raise DownloadError(f"the file list from {url} is not a JSON list. {hint}")
    files: list[RemoteFile] = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("download_url"):
            raise DownloadError(
                f"the file list from {url} has an entry without name or download_url: {entry!r}"
            )
        md5 = str(entry.get("computed_md5") or entry.get("supplied_md5") or "").strip().lower()
        files.append(
            RemoteFile(
                name=str(entry["name"]),
                url=str(entry["download_url"]),
                size=int(entry.get("size") or 0),
                md5=md5,
            )
        )
    return files


# --------------------------------------------------------------------------------------------
# One file


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_complete(path: Path, remote: RemoteFile) -> bool:
    """True when ``path`` already holds ``remote`` (right size and md5), so it need not be fetched."""
    if not path.is_file() or not remote.md5:
        return False
    if remote.size and path.stat().st_size != remote.size:
        return False
    return _file_md5(path) == remote.md5


def _safe_filename(name: str) -> str:
    """``name`` when it is a plain file name; a server must not make us write outside dest_dir."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise DownloadError(f"refusing to save a remote file under the unsafe name {name!r}")
    return name


def _copy_stream(
    src: IO[bytes], dst: IO[bytes], digest: _Digest, advance: Callable[[int], None] | None
) -> int:
    """Copy ``src`` to ``dst`` in chunks, feeding ``digest``; returns the number of bytes copied."""
    written = 0
    for chunk in iter(lambda: src.read(CHUNK_SIZE), b""):
        dst.write(chunk)
        digest.update(chunk)
        written += len(chunk)
        if advance is not None:
            advance(len(chunk))
    return written


def download_file(
    remote: RemoteFile, dest_dir: Path, progress: bool = True, timeout: float = DEFAULT_TIMEOUT
) -> Path:
    """Fetch ``remote`` into ``dest_dir``, checking its md5 while streaming; returns the final path.

    Bytes go to ``<name>.part`` first and are renamed to ``<name>`` only once size and md5 match,
    so a half-finished file never carries the final name. A final file that already has the right
    md5 is kept and not fetched again. ``timeout`` bounds the connect and every single read.
    """
    name = _safe_filename(remote.name)
    _check_scheme(remote.url)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / name
    if _is_complete(final, remote):
        return final
    part = dest_dir / f"{name}.part"
    hint = (
        "Retry (already complete files are not fetched again) and check your network connection; "
        f"or download {remote.url} by hand and pass the unpacked data with --data-dir."
    )
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with _open(remote.url, timeout, f"downloading {name}", hint) as resp, open(part, "wb") as fh:
            length = resp.headers.get("Content-Length")
            total = remote.size or (int(length) if length and length.isdigit() else None)
            try:
                if progress:
                    written = _copy_with_progress(resp, fh, digest, name, total)
                else:
                    written = _copy_stream(resp, fh, digest, None)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"downloading {name} from {remote.url} broke off: {exc!r}. {hint}"
                ) from exc
            fh.flush()
            os.fsync(fh.fileno())
        if remote.size and written != remote.size:
            raise DownloadError(
                f"downloading {name} gave {written} bytes, expected {remote.size}; "
                f"the partial file was deleted. {hint}"
            )
        got = digest.hexdigest()
        if remote.md5 and got != remote.md5:
            raise DownloadError(
                f"md5 mismatch for {name}: expected {remote.md5}, got {got}; the corrupt download "
                f"was deleted. {hint}"
            )
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return final


def _copy_with_progress(src: IO[bytes], dst: IO[bytes], digest: _Digest, name: str, total: int | None) -> int:
    """``_copy_stream`` under a rich progress bar on stderr (bytes, speed, time left)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(name, total=total)
        return _copy_stream(src, dst, digest, lambda n: bar.update(task, advance=n))


# --------------------------------------------------------------------------------------------
# Unpacking


def _unsafe_member(name: str) -> str | None:
    """Why a zip member name could escape the extraction folder, or None when it is safe."""
    if "\x00" in name:
        return "contains a NUL byte"
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) >= 2 and normalised[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(normalised).parts:
        return "contains '..'"
    return None


def safe_extract_zip(zip_path: Path, dest: Path) -> None:
    """Unpack ``zip_path`` into ``dest`` (which must not exist yet, or be an empty folder).

    Every member is checked before anything is written: an absolute path, a drive letter or a
    ``..`` component (zip slip) refuses the whole archive. Members are unpacked into a temporary
    folder beside ``dest`` that is renamed into place only when all of them succeeded, so a
    failed or interrupted extraction leaves nothing at ``dest``.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DownloadError(f"cannot unpack {zip_path.name} into {dest}: it already exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(
            f"{zip_path} is not a readable zip archive ({exc}); delete it and download again"
        ) from exc
    with archive:
        members = archive.infolist()
        for info in members:
            reason = _unsafe_member(info.filename)
            if reason:
                raise DownloadError(
                    f"refusing to unpack {zip_path.name}: member {info.filename!r} {reason} and could "
                    "write outside the target folder; nothing was extracted"
                )
        needed = sum(info.file_size for info in members)
        free = shutil.disk_usage(dest.parent).free
        if needed > free:
            raise DownloadError(
                f"unpacking {zip_path.name} needs {needed / 1e9:.2f} GB but only {free / 1e9:.2f} GB "
                f"is free under {dest.parent}; free some space or choose another folder"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
        try:
            root = tmp.resolve()
            for info in members:
                # belt and braces: the resolved target must stay inside the temporary folder
                target = (root / info.filename.replace("\\", "/")).resolve()
                if target != root and root not in target.parents:
                    raise DownloadError(
                        f"refusing to unpack {zip_path.name}: {info.filename!r} escapes the target"
                    )
                archive.extract(info, tmp)
            if dest.exists():
                dest.rmdir()  # empty, checked above; Windows cannot rename onto a folder
            os.replace(tmp, dest)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DownloadError(
                f"unpacking {zip_path} failed ({exc!r}); delete the archive and download it again"
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


# --------------------------------------------------------------------------------------------
# FracAtlas


def _is_fracatlas_root(path: Path) -> bool:
    """True when ``path`` holds an unpacked FracAtlas (dataset.csv beside an images/ folder)."""
    return (path / "dataset.csv").is_file() and (path / "images").is_dir()


def _find_fracatlas_root(tree: Path) -> Path | None:
    """The shallowest folder under ``tree`` (itself included) that looks like a FracAtlas root."""
    level = [tree]
    while level:
        for folder in level:
            if _is_fracatlas_root(folder):
                return folder
        level = sorted(child for folder in level for child in folder.iterdir() if child.is_dir())
    return None


def download_fracatlas(
    dest: Path | None = None, api: str | None = None, progress: bool = True, keep_archive: bool = False
) -> Path:
    """Fetch FracAtlas from figshare and unpack it so that ``dest`` is the dataset root.

    ``dest`` defaults to ``data_home() / "fracatlas"``. When it already holds the dataset it is
    returned without touching the network. Archives land in ``dest.parent / ".downloads"`` (kept
    there after a failure, so a retry does not fetch them again; removed after success unless
    ``keep_archive``), are checked against figshare's md5 and unpacked beside ``dest``; ``dest``
    appears only once everything succeeded. Returns ``dest``.
    """
    dest = Path(dest).expanduser() if dest is not None else data_home() / "fracatlas"
    if _is_fracatlas_root(dest):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DownloadError(
            f"{dest} exists but does not hold FracAtlas (no dataset.csv beside images/); move it away "
            "or choose another folder"
        )
    files = list_figshare_files(FRACATLAS_ARTICLE_ID, api=api)
    archives = [f for f in files if f.name.lower().endswith(".zip")]
    if not archives:
        names = ", ".join(f.name for f in files) or "none"
        raise DownloadError(
            f"figshare article {FRACATLAS_ARTICLE_ID} lists no .zip file (files: {names}); "
            f"{_MANUAL_FRACATLAS}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    downloads = dest.parent / ".downloads"
    paths = [download_file(remote, downloads, progress=progress) for remote in archives]

    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".staging", dir=dest.parent))
    try:
        for i, path in enumerate(paths):
            safe_extract_zip(path, staging / f"{i:02d}")
        root = _find_fracatlas_root(staging)
        if root is None:
            raise DownloadError(
                f"the figshare archive(s) {', '.join(p.name for p in paths)} hold no folder with "
                f"dataset.csv and images/; the release layout may have changed; {_MANUAL_FRACATLAS}"
            )
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.replace(root, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    if not keep_archive:
        for path in paths:
            path.unlink(missing_ok=True)
        try:
            downloads.rmdir()
        except OSError:
            pass  # not empty: other downloads live there
    return dest
