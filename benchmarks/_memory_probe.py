"""Run by bench_memory.py in a fresh process: one training epoch, or the served demo; reports RSS as JSON.

    python benchmarks/_memory_probe.py train '<json spec>'
    python benchmarks/_memory_probe.py demo '<json spec>'

Lines meant for the benchmark start with ``FRACBENCH_PROBE `` so library output cannot be mistaken
for them. ``train_epoch`` is also called in-process by the smoke subset.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from _benchlib import current_rss_bytes, hwm_bytes, peak_rss_bytes, reset_peak_rss

MARK = "FRACBENCH_PROBE "


def train_epoch(spec: dict[str, Any]) -> dict[str, Any]:
    """Open the decode cache and train ``spec['model']`` for one pass over ``spec['rows']``; peak RSS of that pass."""
    import numpy as np
    import torch
    from torch import nn

    from fracbench.data.cache import DECODE_COUNTER, build_cache
    from fracbench.data.loader import BatchLoader, random_flip
    from fracbench.data.manifest import Manifest
    from fracbench.models import create_model
    from fracbench.training.train import train_one_epoch

    manifest = Manifest.read(spec["manifest"], spec["dataset"], spec["root"])
    cache = build_cache(manifest, int(spec["size"]), root=Path(spec["cache_root"]), progress=False)
    torch.manual_seed(0)
    model = create_model(spec["model"], image_size=int(spec["size"]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = BatchLoader(cache, np.asarray(spec["rows"], dtype=np.int64), int(spec["batch"]), 3, shuffle=True,
                         generator=torch.Generator().manual_seed(0))
    decoded_before = DECODE_COUNTER["n"]
    peak_so_far = peak_rss_bytes()  # before the reset below, which also lowers getrusage's figure
    reset = reset_peak_rss()
    before = current_rss_bytes()
    t0 = time.perf_counter()
    tr = train_one_epoch(model, loader, opt, nn.CrossEntropyLoss(), torch.device("cpu"), augment=random_flip,
                         generator=torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - t0
    epoch_peak = max(hwm_bytes() or 0, current_rss_bytes() or 0) if reset else None
    process_peak = max(peak_so_far, peak_rss_bytes(), epoch_peak or 0)
    return {"images": tr["n"], "seconds": seconds, "rss_before_epoch_bytes": before,
            "epoch_peak_rss_bytes": epoch_peak, "process_peak_rss_bytes": process_peak,
            "decoded_during_epoch": DECODE_COUNTER["n"] - decoded_before,
            "cache_bytes": int(np.prod(cache.array.shape))}


def serve_demo(spec: dict[str, Any]) -> None:
    """Serve the demo, say where, wait for a line on stdin (the requests are done), report the peak RSS."""
    from fracbench.app.demo import launch

    demo = launch(spec["checkpoint"], results=spec["results"], port=int(spec["port"]), prevent_thread_lock=True,
                  progress=False, echo=lambda *a, **k: None)
    print(MARK + json.dumps({"url": demo.local_url, "rss_ready_bytes": current_rss_bytes()}), flush=True)
    sys.stdin.readline()
    out = {"process_peak_rss_bytes": peak_rss_bytes(), "rss_now_bytes": current_rss_bytes()}
    demo.close()
    print(MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    what, spec = sys.argv[1], json.loads(sys.argv[2])
    if what == "train":
        print(MARK + json.dumps(train_epoch(spec)), flush=True)
    elif what == "demo":
        serve_demo(spec)
    else:
        raise SystemExit(f"unknown probe {what!r}: train or demo")
