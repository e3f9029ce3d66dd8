"""Load on the served demo: 8 concurrent gradio_client clients x 25 uploads each, on loopback only.

Zero errors, latency recorded (p50/p95 printed and written to demo_load.json in the test's temp
folder), resident memory roughly flat (measured after a warm-up, so model loading does not count),
and an upload over the demo's 20 MB limit refused with a message while the server keeps serving.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fracbench.app import demo as demo_module  # sets GRADIO_ANALYTICS_ENABLED=False before gradio loads
from fracbench.data.synthetic import render_case
from fracbench.models import create_model
from fracbench.serving.checkpoint import save_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*:Warning:gradio.queueing")]

CLIENTS = 8
REQUESTS = 25  # per client
TOTAL_TIMEOUT = 420.0  # seconds for all 200 requests (a loaded 2-core CI runner)
RSS_GROWTH_MB = 200.0
SIZE = 32


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: peak RSS is the best available

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The demo on a free loopback port with a tiny checkpoint (and no results folder to search)."""
    root = tmp_path_factory.mktemp("demo-load")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "tiny", create_model("tiny_cnn", image_size=SIZE), model_name="tiny_cnn",
                           model_kwargs={}, image_size=SIZE, channels=3, threshold=0.5)
    (root / "results").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))  # heatmaps served to clients land here
        demo = demo_module.launch(ckpt, results=root / "results", host="127.0.0.1", port=_free_port(),
                                  prevent_thread_lock=True, progress=False, echo=lambda line: None)
        try:
            assert demo.local_url.startswith("http://127.0.0.1:")
            yield demo
        finally:
            demo.close()


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("uploads")
    out = []
    for i in range(4):
        px = render_case(np.random.default_rng([31, i]), 96, i % 2 == 0, 0.5).pixels
        path = root / f"xray{i}.png"
        Image.fromarray(px).save(path)
        out.append(path)
    return out


def _client(demo: Any) -> Any:
    from gradio_client import Client

    return Client(demo.local_url, verbose=False, download_files=False)


def test_concurrent_clients(served: Any, uploads: list[Path], tmp_path: Path) -> None:
    from gradio_client import handle_file

    clients = [_client(served) for _ in range(CLIENTS)]
    for c in clients[:2]:  # warm-up: model load, Grad-CAM hooks, first-call allocations
        c.predict(handle_file(str(uploads[0])), api_name="/predict")
    rss_before = _rss_mb()

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def work(k: int) -> None:
        client = clients[k]
        for i in range(REQUESTS):
            if stop.is_set():
                return
            path = uploads[(k + i) % len(uploads)]
            t0 = time.perf_counter()
            try:
                label, decision, heatmap, status = client.predict(handle_file(str(path)), api_name="/predict")
                ok = label["label"] in ("fractured", "not fractured") and "threshold" in decision \
                    and heatmap is not None and path.name in status
                problem = "" if ok else f"odd answer: {decision!r} {status!r}"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                if problem:
                    errors.append(f"client {k} request {i}: {problem}")

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = t0 + TOTAL_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - t0
    stop.set()
    hung = sum(t.is_alive() for t in threads)
    rss_after = _rss_mb()
    for c in clients:
        c.close()

    lat = np.array(latencies)
    report = {
        "clients": CLIENTS, "requests_per_client": REQUESTS, "completed": len(latencies), "errors": len(errors),
        "wall_seconds": round(wall, 2), "throughput_per_second": round(len(latencies) / wall, 2),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "latency_p95_s": round(float(np.percentile(lat, 95)), 3) if len(lat) else None,
        "latency_max_s": round(float(lat.max()), 3) if len(lat) else None,
        "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
    }
    out = tmp_path / "demo_load.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\ndemo load: {json.dumps(report)}\n(written to {out})")

    assert not hung, f"{hung} client threads still running after {TOTAL_TIMEOUT:.0f} s"
    assert errors == [], errors[:5]
    assert len(latencies) == CLIENTS * REQUESTS
    assert rss_after - rss_before < RSS_GROWTH_MB, report


def test_oversized_upload_is_refused_with_a_message(served: Any, uploads: list[Path], tmp_path: Path) -> None:
    import httpx
    from gradio_client import handle_file

    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(demo_module.MAX_UPLOAD_BYTES + 1024))
    # the client checks the limit the page announces before sending anything ...
    client = _client(served)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), api_name="/predict")
    # ... and the server refuses the bytes itself when a client does not
    url = served.local_url.rstrip("/") + "/gradio_api/upload"
    with big.open("rb") as fh:
        resp = httpx.post(url, files={"files": ("huge.png", fh, "image/png")}, timeout=120)
    assert resp.status_code == 413
    assert "maximum allowed size" in resp.text
    # and it is still serving
    label, decision, _, _ = client.predict(handle_file(str(uploads[0])), api_name="/predict")
    assert "threshold" in decision
    client.close()
