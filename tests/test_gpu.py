"""On a CUDA GPU: the GPU's numerics (TF32 convolutions by default, bf16 autocast on request) against
strict fp32, on the particles they give; and GPU against CPU maps.

Skipped without a GPU (CI has none); run it on a GPU machine with ``pytest tests/test_gpu.py -s``
(``-s`` prints the measured differences that the README's Performance section quotes).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def simulated():
    from cryodet_dask.simulation import simulate_arrays

    return simulate_arrays(shape=(96, 256, 256), seed=23)


def _particles(tomogram: np.ndarray, amp: bool):
    import dask

    from cryodet_dask.pipeline.params import DetectParams
    from cryodet_dask.postprocessing import PostprocessParams, postprocess
    from cryodet_dask.prediction import predict

    pred = predict(tomogram, chunks=96, device="cuda", amp=amp)
    with dask.config.set(scheduler="threads"):
        mask, center = dask.compute(pred.mask, pred.center)
        det = postprocess(mask, center, PostprocessParams(**DetectParams().postprocess_kwargs()))
        centers = np.asarray(det.centers)
    return mask, center, centers


def _matched(p_ref: np.ndarray, p_other: np.ndarray) -> tuple[int, int]:
    """(reference particles with one of the others within 2 voxels, with one at exactly the same centre)."""
    if not len(p_other):
        return 0, 0
    d = np.sqrt(((p_ref[:, None, :] - p_other[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return int(np.count_nonzero(d <= 2.0)), int(np.count_nonzero(d == 0.0))


def _assert_same_particles(p_ref: np.ndarray, p_other: np.ndarray, matched: int) -> None:
    """Every reference particle has one within 2 voxels (98 %), and the counts agree within 2 %."""
    assert matched >= 0.98 * len(p_ref)
    assert abs(len(p_other) - len(p_ref)) <= max(1, 0.02 * len(p_ref))


def test_tf32_default_gives_the_strict_fp32_particles(simulated):
    """The GPU default, fp32 with TF32 convolutions (2x faster than strict fp32 on an H200), against
    strict fp32: the particles a user gets."""
    prev = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        m32, _, p32 = _particles(simulated.tomogram, amp=False)
        torch.backends.cudnn.allow_tf32 = True
        mtf, _, ptf = _particles(simulated.tomogram, amp=False)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    matched, exact = _matched(p32, ptf)
    flips = int(np.count_nonzero((m32 > 0.5) != (mtf > 0.5)))
    print(f"\nTF32 vs strict fp32 on a simulated 96x256x256 block: max |mask diff| {np.abs(m32 - mtf).max():.4g}, "
          f"mask voxels across 0.5: {flips} of {m32.size}; particles fp32 {len(p32)}, TF32 {len(ptf)}, "
          f"matched within 2 voxels {matched}, same centre {exact}")
    _assert_same_particles(p32, ptf, matched)


def test_bf16_autocast_gives_the_fp32_particles(simulated):
    from cryodet_dask.prediction._engine import _bf16_ok

    if not _bf16_ok("cuda"):
        pytest.skip("bf16 autocast is refused on this torch/cuDNN (the networks run in fp32)")
    m32, c32, p32 = _particles(simulated.tomogram, amp=False)
    m16, c16, p16 = _particles(simulated.tomogram, amp=True)
    assert len(p32) > 20, "the simulated block should hold particles"
    flips = int(np.count_nonzero((m32 > 0.5) != (m16 > 0.5)))
    # every fp32 particle has a bf16 particle within 2 voxels, and the counts agree within 2 %
    matched, exact = _matched(p32, p16)
    print(f"\nbf16 vs fp32 on a simulated 96x256x256 block: max |mask diff| {np.abs(m32 - m16).max():.4g}, "
          f"max |center diff| {np.abs(c32 - c16).max():.4g}, mask voxels across 0.5: {flips} of {m32.size}; "
          f"particles fp32 {len(p32)}, bf16 {len(p16)}, matched within 2 voxels {matched}, same centre {exact}")
    _assert_same_particles(p32, p16, matched)


def test_predict_on_the_gpu_matches_the_cpu_in_fp32(simulated):
    """The same maps on either device when both run fp32 (TF32 off): the GPU path is not a different model."""
    import dask

    from cryodet_dask.prediction import predict

    block = simulated.tomogram[:48, :128, :128]
    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with dask.config.set(scheduler="synchronous"):
            gpu = predict(block, chunks=48, device="cuda", amp=False).mask.compute()
            cpu = predict(block, chunks=48, device="cpu").mask.compute()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev
    print(f"\nfp32 GPU vs CPU mask on 48x128x128: max |diff| {np.abs(gpu - cpu).max():.3g}")
    assert np.abs(gpu - cpu).max() < 1e-3
