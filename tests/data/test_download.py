"""fracbench.data.download against a fake figshare on 127.0.0.1 (no internet needed).

A ThreadingHTTPServer serves the figshare file-list JSON and a tiny FracAtlas-like zip; tests
change what it serves (wrong md5, zip-slip member, 404, a stalled reply) and count the requests.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from fracbench.data.download import (
    FRACATLAS_ARTICLE_ID,
    DownloadError,
    RemoteFile,
    download_file,
    download_fracatlas,
    list_figshare_files,
    safe_extract_zip,
)

FILES_PATH = f"/v2/articles/{FRACATLAS_ARTICLE_ID}/files"
ZIP_PATH = "/ndownloader/files/40000001"

DATASET_CSV = (
    "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,"
    "frontal,lateral,oblique\n"
    "IMG0000001.jpg,1,0,0,0,0,0,0,1,1,1,0,0\n"
    "IMG0000002.jpg,0,1,0,0,0,0,0,0,0,1,0,0\n"
)
COCO = {
    "images": [{"id": 1, "file_name": "IMG0000001.jpg", "width": 16, "height": 16}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [2, 2, 5, 5],
            "area": 25,
            "iscrowd": 0,
            "segmentation": [[2, 2, 7, 2, 7, 7, 2, 7]],
        }
    ],
    "categories": [{"id": 1, "name": "fractured"}],
}


def _jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 16), color=shade).save(buf, format="JPEG")
    return buf.getvalue()


def _zip_bytes(extra: dict[str, bytes] | None = None) -> bytes:
    """A FracAtlas-shaped archive: top folder FracAtlas/ with images, dataset.csv, COCO JSON."""
    members = {
        "FracAtlas/images/Fractured/IMG0000001.jpg": _jpeg(200),
        "FracAtlas/images/Non_fractured/IMG0000002.jpg": _jpeg(60),
        "FracAtlas/images/Non_fractured/IMG0000003.jpg": _jpeg(90),
        "FracAtlas/dataset.csv": DATASET_CSV.encode(),
        "FracAtlas/Annotations/COCO JSON/COCO_fracture_masks.json": json.dumps(COCO).encode(),
        **(extra or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class FakeFigshare:
    """What the loopback server serves, and the paths it was asked for."""

    base: str = ""
    zip_data: bytes = b""
    md5: str = ""
    status: dict[str, int] = field(default_factory=dict)  # path -> forced HTTP status
    stall: threading.Event | None = None  # when set to an Event, replies wait on it
    requests: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{self.base}/v2"

    def set_zip(self, data: bytes, md5: str | None = None) -> None:
        self.zip_data = data
        self.md5 = md5 if md5 is not None else hashlib.md5(data).hexdigest()

    def file_list(self) -> list[dict[str, object]]:
        return [
            {
                "id": 40000001,
                "name": "FracAtlas.zip",
                "size": len(self.zip_data),
                "computed_md5": self.md5,
                "supplied_md5": self.md5,
                "download_url": f"{self.base}{ZIP_PATH}",
                "is_link_only": False,
            },
            {
                "id": 40000002,
                "name": "README.txt",
                "size": 5,
                "computed_md5": hashlib.md5(b"hello").hexdigest(),
                "supplied_md5": "",
                "download_url": f"{self.base}/ndownloader/files/40000002",
                "is_link_only": False,
            },
        ]


@pytest.fixture
def figshare(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFigshare]:
    state = FakeFigshare()
    state.set_zip(_zip_bytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            state.requests.append(path)
            state.user_agents.append(self.headers.get("User-Agent", ""))
            if state.stall is not None:
                state.stall.wait(10)
            code = state.status.get(path)
            if code is not None:
                self.send_error(code)
                return
            if path == FILES_PATH:
                self._send(json.dumps(state.file_list()).encode(), "application/json")
            elif path == ZIP_PATH:
                self._send(state.zip_data, "application/zip")
            elif path == "/ndownloader/files/40000002":
                self._send(b"hello", "text/plain")
            else:
                self.send_error(404)

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("FRACBENCH_FIGSHARE_API", state.api)
    try:
        yield state
    finally:
        if state.stall is not None:
            state.stall.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    """Temporary or partial files that a failed run must not leave behind."""
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith((".part", ".unpacking", ".staging", ".tmp"))
    )


def test_end_to_end_download(figshare: FakeFigshare, tmp_path: Path) -> None:
    dest = tmp_path / "data" / "fracatlas"
    got = download_fracatlas(dest, api=figshare.api, progress=False)
    assert got == dest
    assert (dest / "dataset.csv").read_text() == DATASET_CSV
    assert (dest / "images" / "Fractured" / "IMG0000001.jpg").is_file()
    assert (dest / "images" / "Non_fractured" / "IMG0000002.jpg").is_file()
    coco = dest / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    assert json.loads(coco.read_text()) == COCO
    with Image.open(dest / "images" / "Fractured" / "IMG0000001.jpg") as im:
        assert im.size == (16, 16)
    # only the zip is fetched, not the README beside it; archive and scratch folders are gone
    assert figshare.requests == [FILES_PATH, ZIP_PATH]
    assert all(ua.startswith("fracbench/") for ua in figshare.user_agents)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["fracatlas"]


def test_keep_archive_keeps_a_verified_zip(figshare: FakeFigshare, tmp_path: Path) -> None:
    dest = tmp_path / "fracatlas"
    download_fracatlas(dest, api=figshare.api, progress=False, keep_archive=True)
    archive = tmp_path / ".downloads" / "FracAtlas.zip"
    assert hashlib.md5(archive.read_bytes()).hexdigest() == figshare.md5
    assert _leftovers(tmp_path) == []


def test_api_comes_from_environment(figshare: FakeFigshare, tmp_path: Path) -> None:
    # the fixture set FRACBENCH_FIGSHARE_API; no api argument given
    files = list_figshare_files(FRACATLAS_ARTICLE_ID)
    assert [f.name for f in files] == ["FracAtlas.zip", "README.txt"]
    assert files[0] == RemoteFile(
        "FracAtlas.zip", f"{figshare.base}{ZIP_PATH}", len(figshare.zip_data), figshare.md5
    )
    assert download_fracatlas(tmp_path / "fa", progress=False) == tmp_path / "fa"


def test_second_call_does_not_touch_the_network(figshare: FakeFigshare, tmp_path: Path) -> None:
    dest = tmp_path / "fracatlas"
    download_fracatlas(dest, api=figshare.api, progress=False)
    seen = len(figshare.requests)
    assert download_fracatlas(dest, api=figshare.api, progress=False) == dest
    assert len(figshare.requests) == seen


def test_wrong_md5_is_refused_and_cleaned_up(figshare: FakeFigshare, tmp_path: Path) -> None:
    figshare.set_zip(_zip_bytes(), md5="0" * 32)
    dest = tmp_path / "fracatlas"
    with pytest.raises(DownloadError) as info:
        download_fracatlas(dest, api=figshare.api, progress=False)
    message = str(info.value)
    assert "md5 mismatch" in message
    assert "0" * 32 in message and hashlib.md5(figshare.zip_data).hexdigest() in message
    assert "Retry" in message and "--data-dir" in message
    assert not dest.exists()
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / ".downloads" / "FracAtlas.zip").exists()


def test_zip_slip_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip_bytes({"FracAtlas/../../evil": b"pwned"}))
    dest = tmp_path / "out" / "unpacked"
    with pytest.raises(DownloadError, match="'..'"):
        safe_extract_zip(archive, dest)
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["/etc/evil", "C:/evil", "..\\evil"])
def test_absolute_and_backslash_members_are_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(name, b"pwned")
    dest = tmp_path / "unpacked"
    with pytest.raises(DownloadError, match="refusing to unpack"):
        safe_extract_zip(archive, dest)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_zip_slip_through_download_leaves_no_dataset(figshare: FakeFigshare, tmp_path: Path) -> None:
    figshare.set_zip(_zip_bytes({"../evil": b"pwned"}))
    dest = tmp_path / "data" / "fracatlas"
    with pytest.raises(DownloadError, match="refusing to unpack"):
        download_fracatlas(dest, api=figshare.api, progress=False)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data" / "evil").exists()
    assert _leftovers(tmp_path) == []


def test_corrupt_zip_is_a_download_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not a zip at all")
    with pytest.raises(DownloadError, match="not a readable zip"):
        safe_extract_zip(archive, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()


def test_api_404_is_a_clear_error(figshare: FakeFigshare, tmp_path: Path) -> None:
    figshare.status[FILES_PATH] = 404
    dest = tmp_path / "fracatlas"
    with pytest.raises(DownloadError) as info:
        download_fracatlas(dest, api=figshare.api, progress=False)
    message = str(info.value)
    assert "HTTP 404" in message and FILES_PATH in message
    assert "network" in message and "--data-dir" in message
    assert not dest.exists()


def test_file_404_is_a_clear_error(figshare: FakeFigshare, tmp_path: Path) -> None:
    figshare.status[ZIP_PATH] = 404
    dest = tmp_path / "fracatlas"
    with pytest.raises(DownloadError, match=r"downloading FracAtlas\.zip failed.*HTTP 404"):
        download_fracatlas(dest, api=figshare.api, progress=False)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_unreachable_server_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="could not reach"):
        list_figshare_files(FRACATLAS_ARTICLE_ID, api="http://127.0.0.1:9/v2", timeout=2)


def test_stalled_server_times_out(figshare: FakeFigshare) -> None:
    figshare.stall = threading.Event()
    start = time.monotonic()
    with pytest.raises(DownloadError):
        list_figshare_files(FRACATLAS_ARTICLE_ID, api=figshare.api, timeout=0.5)
    assert time.monotonic() - start < 5


def test_download_file_skips_a_complete_file(figshare: FakeFigshare, tmp_path: Path) -> None:
    remote = list_figshare_files(FRACATLAS_ARTICLE_ID, api=figshare.api)[0]
    path = download_file(remote, tmp_path, progress=False)
    assert path == tmp_path / "FracAtlas.zip"
    assert hashlib.md5(path.read_bytes()).hexdigest() == remote.md5
    fetched = figshare.requests.count(ZIP_PATH)
    assert download_file(remote, tmp_path, progress=False) == path
    assert figshare.requests.count(ZIP_PATH) == fetched


def test_download_file_replaces_a_corrupt_file_and_stale_part(figshare: FakeFigshare, tmp_path: Path) -> None:
    remote = list_figshare_files(FRACATLAS_ARTICLE_ID, api=figshare.api)[0]
    (tmp_path / "FracAtlas.zip").write_bytes(b"truncated")
    (tmp_path / "FracAtlas.zip.part").write_bytes(b"stale")
    path = download_file(remote, tmp_path, progress=False)
    assert path.read_bytes() == figshare.zip_data
    assert not (tmp_path / "FracAtlas.zip.part").exists()


def test_unsafe_remote_name_is_refused(tmp_path: Path) -> None:
    remote = RemoteFile("../escape.zip", "http://127.0.0.1:9/x", 1, "")
    with pytest.raises(DownloadError, match="unsafe name"):
        download_file(remote, tmp_path / "dl", progress=False)


def test_non_http_url_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    remote = RemoteFile("secret.txt", secret.as_uri(), 1, "")
    with pytest.raises(DownloadError, match="only http and https"):
        download_file(remote, tmp_path / "dl", progress=False)


def test_progress_bar_without_a_terminal(
    figshare: FakeFigshare, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "fracatlas"
    assert download_fracatlas(dest, api=figshare.api, progress=True) == dest
    assert (dest / "dataset.csv").is_file()
    capsys.readouterr()  # whatever rich printed to the captured, non-tty stderr is fine


def test_existing_unrelated_folder_is_not_overwritten(figshare: FakeFigshare, tmp_path: Path) -> None:
    dest = tmp_path / "fracatlas"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match="does not hold FracAtlas"):
        download_fracatlas(dest, api=figshare.api, progress=False)
    assert (dest / "notes.txt").read_text() == "mine"
    assert figshare.requests == []


def test_empty_existing_folder_is_filled(figshare: FakeFigshare, tmp_path: Path) -> None:
    dest = tmp_path / "fracatlas"
    dest.mkdir()
    assert download_fracatlas(dest, api=figshare.api, progress=False) == dest
    assert (dest / "images" / "Fractured" / "IMG0000001.jpg").is_file()
