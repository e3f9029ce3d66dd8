"""Memory: peak resident set size of a training epoch and of the demo process.

Both run in a fresh Python process (benchmarks/_memory_probe.py), so the figure is what that job
alone needs, not what this pytest process accumulated:

* training: paper_cnn at 150 px, one epoch over the whole training split from the decode cache
  (the memory-mapped cache pages the epoch touches count as resident). Reported: RSS before the
  epoch, the epoch's own peak (Linux VmHWM reset just before it) and the process's lifetime peak
  (``getrusage(RUSAGE_SELF).ru_maxrss``).
* demo: the Gradio app serving the paper_cnn checkpoint, after a few uploads with Grad-CAM;
  its lifetime peak RSS.

Smoke mode runs the training probe in this process on two batches (a fresh interpreter's torch
import alone would exceed a smoke test's budget) and skips the demo process.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _benchlib import SIZES, SMOKE, describe, mib, run_pedantic

PROBE = Path(__file__).with_name("_memory_probe.py")
MARK = "FRACBENCH_PROBE "


def _probe_lines(proc: subprocess.Popen) -> queue.Queue:
    """Probe lines of ``proc``'s stdout, read by a thread (so waits can time out)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            if line.startswith(MARK):
                lines.put(json.loads(line[len(MARK):]))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _next(lines: queue.Queue, proc: subprocess.Popen, timeout: float, what: str, err: Path) -> dict:
    try:
        item = lines.get(timeout=timeout)
    except queue.Empty:
        item = None
    if item is None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        tail = err.read_text(errors="replace")[-2000:] if err.exists() else ""
        pytest.fail(f"{what}: no answer from the probe (exit {proc.returncode}): {tail}")
    return item


def _start(args: list[str], err: Path, stdin: bool = False) -> subprocess.Popen:
    """The probe in a fresh interpreter; stderr to a file (read only when it fails)."""
    with err.open("w") as fh:
        return subprocess.Popen([sys.executable, str(PROBE), *args], stdin=subprocess.PIPE if stdin else None,
                                stdout=subprocess.PIPE, stderr=fh, text=True, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROBE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["FRACBENCH_QUIET"] = "1"
    return env


def test_train_epoch_peak_rss(benchmark, bench_data) -> None:
    cache = bench_data.cache
    rows = cache.indices("train")
    if SIZES.memory_batches:
        rows = rows[: SIZES.memory_batches * SIZES.batch]
    manifest_path = bench_data.manifest.write(bench_data.workdir / "memory-manifest.csv")
    spec = {"manifest": str(manifest_path), "dataset": bench_data.manifest.dataset,
            "root": str(bench_data.manifest.root),
            "size": cache.size, "cache_root": str(cache.path.parent), "rows": [int(r) for r in rows],
            "batch": SIZES.batch, "model": "paper_cnn"}
    result: dict = {}

    if SMOKE:
        from _memory_probe import train_epoch

        def run() -> None:
            result.update(train_epoch(spec), method="in-process (smoke mode)")
    else:
        def run() -> None:
            err = bench_data.workdir / "memory-train.stderr"
            proc = _start(["train", json.dumps(spec)], err)
            lines = _probe_lines(proc)
            result.update(_next(lines, proc, 3600, "training epoch", err), method="fresh process")
            proc.wait(timeout=60)

    run_pedantic(benchmark, run, group="memory", rounds=1)
    assert result["decoded_during_epoch"] == 0
    describe(benchmark, data=bench_data.source, model="paper_cnn", image_size=cache.size,
             images=result["images"], epoch_seconds=round(result["seconds"], 2), method=result["method"],
             rss_before_epoch_mib=mib(result["rss_before_epoch_bytes"]),
             epoch_peak_rss_mib=mib(result["epoch_peak_rss_bytes"]),
             process_peak_rss_mib=mib(result["process_peak_rss_bytes"]), cache_mib=mib(result["cache_bytes"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_process_peak_rss(benchmark, bench_checkpoints, bench_data) -> None:
    if SMOKE:
        pytest.skip("smoke mode: a fresh demo process (torch and gradio imports) takes longer than a smoke "
                    "test may; the full suite measures it")
    from gradio_client import Client, handle_file

    upload = bench_data.path(bench_data.test_rows[0])
    spec = {"checkpoint": str(bench_checkpoints["paper_cnn"]), "results": str(bench_checkpoints["_results"]),
            "port": _free_port()}
    result: dict = {}

    def run() -> None:
        err = bench_data.workdir / "memory-demo.stderr"
        proc = _start(["demo", json.dumps(spec)], err, stdin=True)
        try:
            lines = _probe_lines(proc)
            ready = _next(lines, proc, 600, "demo start", err)
            client = Client(ready["url"], verbose=False)
            try:
                for _ in range(5):
                    out = client.predict(handle_file(str(upload)), api_name="/predict")
                    assert out[2] is not None, out[3]
            finally:
                client.close()
            proc.stdin.write("done\n")
            proc.stdin.flush()
            result.update(_next(lines, proc, 120, "demo report", err), rss_ready_bytes=ready["rss_ready_bytes"])
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    run_pedantic(benchmark, run, group="memory", rounds=1)
    describe(benchmark, data=bench_data.source, model="paper_cnn", image_size=SIZES.image, uploads=5,
             upload=upload.name, rss_ready_mib=mib(result["rss_ready_bytes"]),
             rss_after_uploads_mib=mib(result["rss_now_bytes"]),
             process_peak_rss_mib=mib(result["process_peak_rss_bytes"]), method="fresh process")
