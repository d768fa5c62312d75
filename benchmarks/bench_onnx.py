"""CPU inference through ONNX Runtime and OpenVINO against PyTorch, for the shipped networks (issue 17, item 3).

The issue asks for an ONNX Runtime (or OpenVINO) CPU path if it is at least 1.3x faster than the
PyTorch forward pass.  This measures that before anything is built: the shipped network is exported
with ``torch.onnx.export`` (fixed input shape, float32) and both run the same normalized block with
the same number of threads, alternating, median of ``--repeats`` after a warm-up; the largest
difference of the outputs is reported too.  OpenVINO (when installed) compiles the same ONNX file
for its CPU plugin with ``INFERENCE_NUM_THREADS`` and ``LATENCY`` hint.

    pip install onnxruntime onnx onnxscript [openvino]     # not dependencies of cryodet-dask
    python benchmarks/bench_onnx.py [--threads 1 2] [--sizes 216 128] [--repeats 5]

A block of 216^3 is what one 128^3 storage chunk computes with the 44-voxel halo on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cryodet_dask.models import default_weights, load


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _openvino(path: Path, threads: int):
    """A callable running the ONNX file on OpenVINO's CPU plugin, or None when OpenVINO is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                            "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[216])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--network", default="twohead", choices=["twohead", "segnet", "centernet"])
    args = ap.parse_args()
    import onnxruntime as ort

    weights = default_weights()
    net = load(getattr(weights, args.network))
    net.eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cryodet-onnx-") as tmp:
        for size in args.sizes:
            x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, size, size, size), dtype=np.float32))
            path = Path(tmp) / f"{args.network}_{size}.onnx"
            with torch.no_grad():
                torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
            for threads in args.threads:
                torch.set_num_threads(threads)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                xn = x.numpy()
                with torch.no_grad():
                    y_torch = net(x).numpy()
                y_ort = sess.run(None, {"x": xn})[0]
                diff = float(np.abs(y_torch - y_ort).max())
                ov = _openvino(path, threads)
                diff_ov = float(np.abs(y_torch - ov(xn)).max()) if ov else float("nan")
                t_torch, t_ort, t_ov = [], [], []
                for _ in range(2):  # alternate, so all see the same load
                    with torch.no_grad():
                        t_torch.append(_median_time(lambda: net(x), args.repeats))
                    t_ort.append(_median_time(lambda: sess.run(None, {"x": xn}), args.repeats))
                    if ov:
                        t_ov.append(_median_time(lambda: ov(xn), args.repeats))
                tt, to = min(t_torch), min(t_ort)
                tv = min(t_ov) if t_ov else float("nan")
                mvox = size ** 3 / 1e6
                print(f"{args.network} {size}^3 threads {threads}: torch {tt:.2f} s ({mvox / tt:.2f} Mvox/s), "
                      f"onnxruntime {to:.2f} s ({tt / to:.2f}x, max |diff| {diff:.1e}), "
                      f"openvino {tv:.2f} s ({tt / tv:.2f}x, max |diff| {diff_ov:.1e})", flush=True)
                rows.append((size, threads, mvox / tt, mvox / to, tt / to, diff, mvox / tv, tt / tv, diff_ov))
    print(f"\ntorch {torch.__version__}, onnxruntime {ort.__version__}\n")
    print("| block | threads | PyTorch (Mvox/s) | ONNX Runtime (Mvox/s) | ONNX Runtime / PyTorch | max \\|Δ\\| "
          "| OpenVINO (Mvox/s) | OpenVINO / PyTorch | max \\|Δ\\| |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, threads, a, b, r, d, c, rv, dv in rows:
        print(f"| {size}³ | {threads} | {a:.2f} | {b:.2f} | {r:.2f} | {d:.1e} | {c:.2f} | {rv:.2f} | {dv:.1e} |")


if __name__ == "__main__":
    main()
