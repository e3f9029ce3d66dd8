"""Inference: single-image latency, batch throughput, Grad-CAM latency, and the demo's round trip.

Checkpoints are untrained (latency does not depend on the weights) at the benchmark sizes. The
image is a real test-split radiograph (a synthetic one in smoke mode).

* single image: ``predict_array`` on decoded pixels (resize + normalise + forward + softmax);
  p50/p95 over the rounds. Targets p50 <= 20 ms (paper_cnn), <= 60 ms (resnet18).
* batch throughput: ``predict_paths`` over test files, batch 32 (decoding included), images/s.
* Grad-CAM: ``fracbench.serving.cam.gradcam`` (preprocess, forward + backward, map resized to the image).
* demo: the Gradio app served on localhost, one upload per round through ``gradio_client``
  (upload, queue, decode, score, Grad-CAM, overlay, the PNG back); target p50 <= 250 ms.

Percentiles are computed here from the wall time of each round (``Timed``), not taken from
pytest-benchmark's own statistics.
"""

from __future__ import annotations

import socket

import pytest
from _benchlib import SIZES, SMOKE, check_target, describe, median, percentiles_ms, run_pedantic

from fracbench.data.decode import decode_image
from fracbench.serving.cam import gradcam
from fracbench.serving.checkpoint import load_checkpoint
from fracbench.serving.predict import predict_array, predict_paths

LATENCY_TARGET_MS = {"paper_cnn": 20.0, "resnet18": 60.0}
DEMO_TARGET_MS = 250.0
MODELS = ["paper_cnn", "resnet18"]


@pytest.fixture(scope="module")
def loaded(bench_checkpoints):
    return {name: load_checkpoint(bench_checkpoints[name]) for name in MODELS}


@pytest.fixture(scope="module")
def sample(bench_data):
    path = bench_data.path(bench_data.test_rows[0])
    return path, decode_image(path).pixels


@pytest.mark.parametrize("model", MODELS)
def test_single_image_latency(benchmark, model, loaded, sample, bench_data) -> None:
    ck = loaded[model]
    _, pixels = sample
    times = run_pedantic(benchmark, lambda: predict_array(ck, pixels), group="predict-latency",
                         rounds=SIZES.latency_rounds, warmup=3)
    pct = percentiles_ms(times)
    describe(benchmark, data=bench_data.source, model=model, image_size=ck.image_size,
             input_shape=list(pixels.shape), **pct)
    check_target(benchmark, "p50 latency", pct["p50_ms"], LATENCY_TARGET_MS[model], at_least=False, unit=" ms")


@pytest.mark.parametrize("model", MODELS)
def test_batch_throughput(benchmark, model, loaded, bench_data) -> None:
    ck = loaded[model]
    files = [bench_data.path(r) for r in bench_data.test_rows[: SIZES.batch_files]]

    def run() -> int:
        rows, failures = predict_paths(ck, files, batch_size=32)
        assert not failures, failures[:3]
        return len(rows)

    times = run_pedantic(benchmark, run, group="predict-batch", rounds=1 if SMOKE else 3, warmup=1)
    rate = len(files) / median(times)
    describe(benchmark, data=bench_data.source, model=model, image_size=ck.image_size,
             files=len(files), batch_size=32, images_per_s=round(rate, 2), decoding_included=True)


@pytest.mark.parametrize("model", MODELS)
def test_gradcam_latency(benchmark, model, loaded, sample, bench_data) -> None:
    ck = loaded[model]
    _, pixels = sample
    times = run_pedantic(benchmark, lambda: gradcam(ck, pixels), group="gradcam", rounds=SIZES.cam_rounds, warmup=2)
    describe(benchmark, data=bench_data.source, model=model, image_size=ck.image_size,
             input_shape=list(pixels.shape), **percentiles_ms(times))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_demo(bench_checkpoints):
    from fracbench.app.demo import launch

    demo = launch(bench_checkpoints["paper_cnn"], results=bench_checkpoints["_results"], port=_free_port(),
                  prevent_thread_lock=True, progress=False, echo=lambda *a, **k: None)
    try:
        yield demo
    finally:
        demo.close()


@pytest.mark.filterwarnings("ignore:.*:Warning:gradio.queueing")
@pytest.mark.parametrize("model", MODELS)
def test_demo_round_trip(benchmark, model, served_demo, bench_checkpoints, sample, bench_data) -> None:
    from gradio_client import Client, handle_file

    path, pixels = sample
    client = Client(served_demo.local_url, verbose=False)
    try:
        def once():
            out = client.predict(handle_file(str(path)), str(bench_checkpoints[model]), 0.4, api_name="/predict")
            assert out[2] is not None, out[3]  # the Grad-CAM overlay came back
            return out

        times = run_pedantic(benchmark, once, group="demo", rounds=SIZES.demo_rounds, warmup=2)
    finally:
        client.close()
    pct = percentiles_ms(times)
    describe(benchmark, data=bench_data.source, model=model, image_size=SIZES.image if model == "paper_cnn"
             else SIZES.resnet_image, upload=path.name, input_shape=list(pixels.shape), **pct)
    if model == "paper_cnn":
        check_target(benchmark, "demo p50 round trip", pct["p50_ms"], DEMO_TARGET_MS, at_least=False, unit=" ms")
