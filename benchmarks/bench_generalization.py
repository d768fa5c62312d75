"""Generalization of the shipped model: other imaging, other particle sizes, distractors (issue 26, "Measure").

Measures where the shipped species-agnostic two-head network (trained on Fourier-mask simulations only,
pools of random seeds 1000 and 2000) stands on simulated data it was not trained on.  Nothing here
chooses or tunes a default: every row is scored with the default post-processing.

Data sets (simulated at 10 Å/voxel unless said; random seeds 5000-5399, used by no training pool (1000,
2000, 3000) and by no other benchmark set (bench_quality: 301, 302, 4242-4244, 7000+)):

* ``fourier``, ``tiltseries``: the same three scenes (random seeds 5000, 5001, 5002; 96 x 192 x 192,
  default conditions: SNR 0.3, +-60 degrees, -3 um, density 0.1, all six shipped templates, default
  membranes, no distractors) imaged once with Fourier masks (what the network was trained on) and once
  through a tilt series (``--imaging tiltseries``: 41 tilts of 3 degrees, dose-symmetric, 120 e/A^2,
  weighted back-projection).
* ``distractors/MODE/KIND``: particle-free tomograms (``n_particles=0``), 64 x 160 x 160, two per kind
  (random seeds 5100 + 10 k + i), the scene's default membranes and one distractor kind at its default
  count for the volume (``--distractors KIND``), KIND in none (membranes only: the baseline), microtubule,
  actin, gold, ice, edge, membrane, in both imaging modes (the same scenes); and ``KIND-absent``: the
  same scenes (seeds, membranes) without the distractor, the control of each kind.  The SNR of the simulator is
  relative to the signal present, so a tomogram without particles would get less noise; here the noise
  is matched instead to a default scene with particles (random seed 5199, same shape and imaging mode):
  a first noise-free pass measures the scene's signal variance ``s`` and the tomogram is made with
  ``snr = s / noise_var(reference)``, i.e. the same noise level (the same dose) as the particle scenes.
* ``size_scale/dD_i``: one template (4v4r, the 70S ribosome, 21.9 voxels across at 10 Å) rescaled so
  that its mask is D voxels across (D = 8, 10, 12, 14, 16, 20, 24, 32, 40; "across" is the diameter
  of a ball of the mask's volume, as in issue 26), by writing a copy of the template map with its
  header voxel size multiplied by D / 21.9 (the simulator resamples templates by their header voxel
  size, so this is a template scale factor); everything else as the default scene (96 x 192 x 192,
  10 Å/voxel, density 0.1); random seeds 5200 + 10 j + i; 1 to 4 tomograms per size (at least about
  40 particles).
* ``size_voxel/dD``: the same, unscaled 4v4r simulated at the voxel size 219 Å / D (5.5-27 Å/voxel), so
  the whole scene (membranes, CTF, resolution) is sampled differently, as with real data at another
  binning; random seeds 5300 + j + 10 i, as many tomograms per size as ``size_scale``.  The
  network sees the tomogram as it is (no ``--rescale``).

Commands (each caches what it computes in DIR)::

    python benchmarks/bench_generalization.py make DIR [--sets fourier,tiltseries,distractors,size_scale,size_voxel]
    python benchmarks/bench_generalization.py score DIR --weights twohead [--json out.json] \\
        [--png docs/img/recall_vs_diameter.png]

``score`` predicts every tomogram that has no cached maps (whole-volume ``models.predict_array``,
``--polarity as-is`` as ``detect``'s default, never rescaled), then scores with
``bench_quality.score_one`` (the default ``PostprocessParams``, chunked ``postprocess`` on the
synchronous scheduler, ``match_centres`` within ``--radius`` 5 voxels, AP of the picks ranked by the
centre-map peak).  Use ``CRYODET_THREADS=1 OMP_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import _maps, _pooled, _tomograms, _weights, score_one

from cryodet_dask import models
from cryodet_dask.postprocessing import PostprocessParams, postprocess

CROSS_SEEDS = (5000, 5001, 5002)
CROSS_SHAPE = (96, 192, 192)
DISTRACTOR_KINDS = ("none", "microtubule", "actin", "gold", "ice", "edge", "membrane")
DISTRACTOR_SHAPE = (64, 160, 160)
DISTRACTOR_PER_KIND = 2
DISTRACTOR_REFERENCE_SEED = 5199
SIZE_TEMPLATE = "4v4r"
SIZE_DIAMETERS = (8, 10, 12, 14, 16, 20, 24, 32, 40)
SIZE_SHAPE = (96, 192, 192)
MODES = ("fourier", "tiltseries")


def _ball_diameter(n_voxels: Any) -> np.ndarray:
    return 2.0 * np.cbrt(3.0 * np.asarray(n_voxels, dtype=np.float64) / (4.0 * np.pi))


def _template_diameter(name: str, voxel_size: float = 10.0) -> float:
    """Ball-equivalent diameter in voxels of a template's mask at ``voxel_size``."""
    from cryodet_dask.templates import load_template, prepare_template

    d, vs, nm = load_template(name)
    return float(
        _ball_diameter(
            prepare_template(
                d, source_voxel_size=vs, voxel_size=voxel_size, name=nm
            ).n_voxels
        )
    )


def _tomograms_per_size(diameter: float) -> int:
    """Enough tomograms for about 40 particles at density 0.1 (ball volumes)."""
    per_tomogram = 0.1 * float(np.prod(SIZE_SHAPE)) / (np.pi / 6.0 * diameter**3)
    return int(min(4, max(1, np.ceil(40.0 / per_tomogram))))


def _scaled_template(root: Path, factor: float) -> Path:
    """A copy of the size template whose header voxel size is ``factor`` times its own: the simulator
    resamples it by ``factor`` (a template scale factor without any change to the simulator)."""
    import mrcfile

    from cryodet_dask.templates import load_template

    path = root / "templates" / f"{SIZE_TEMPLATE}_x{factor:.4f}.mrc"
    if not path.exists():
        d, vs, _ = load_template(SIZE_TEMPLATE)
        path.parent.mkdir(parents=True, exist_ok=True)
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(d.astype(np.float32))
            m.voxel_size = vs * factor
    return path


def _write_row(d: Path, row: dict[str, Any]) -> None:
    (d / "row.json").write_text(json.dumps(row))


def make(root: Path, sets: list[str]) -> None:
    from cryodet_dask.simulation import simulate, simulate_arrays

    t0 = time.perf_counter()
    for mode in MODES:
        if mode not in sets:
            continue
        for s in CROSS_SEEDS:
            d = root / mode / f"s{s}"
            if not (d / "simulation.json").exists():
                simulate(d, shape=CROSS_SHAPE, seed=s, imaging=mode, overwrite=True)
                _write_row(d, {"set": mode, "seed": s, "imaging": mode})
            print(
                f"{d.relative_to(root)} ({time.perf_counter() - t0:.0f} s)", flush=True
            )
    if "distractors" in sets:
        for mode in MODES:
            ref = simulate_arrays(
                shape=DISTRACTOR_SHAPE, seed=DISTRACTOR_REFERENCE_SEED, imaging=mode
            )
            noise_ref = float(ref.stats["noise_var"])
            for k, kind in enumerate(DISTRACTOR_KINDS):
                for i, absent in itertools.product(
                    range(DISTRACTOR_PER_KIND),
                    (False, True) if kind != "none" else (False,),
                ):
                    # absent: the same scene (seed) without the distractor, the control of that kind
                    seed = 5100 + 10 * k + i
                    name = f"{kind}-absent" if absent else kind
                    d = root / "distractors" / mode / name / f"s{seed}"
                    if (d / "simulation.json").exists():
                        continue
                    kw: dict[str, Any] = {
                        "shape": DISTRACTOR_SHAPE,
                        "seed": seed,
                        "imaging": mode,
                        "n_particles": 0,
                        "distractors": () if kind == "none" or absent else kind,
                    }
                    clean = simulate_arrays(snr=float("inf"), **kw)
                    snr = float(clean.stats["signal_var"]) / noise_ref
                    res = simulate(d, snr=snr, overwrite=True, **kw)
                    stats = json.loads((d / "simulation.json").read_text())["stats"]
                    _write_row(
                        d,
                        {
                            "set": "distractors",
                            "imaging": mode,
                            "kind": name,
                            "seed": seed,
                            "snr": snr,
                            "noise_var": stats["noise_var"],
                            "reference_noise_var": noise_ref,
                            "n_distractors": stats.get("n_distractors", {}),
                        },
                    )
                    print(
                        f"{d.relative_to(root)}: snr {snr:.3f}, noise var {stats['noise_var']:.4g} "
                        f"(reference {noise_ref:.4g}), {res.n_particles} particles "
                        f"({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
    if "size_scale" in sets:
        d0 = _template_diameter(SIZE_TEMPLATE)
        for j, diam in enumerate(SIZE_DIAMETERS):
            tpl = _scaled_template(root, diam / d0)
            for i in range(_tomograms_per_size(diam)):
                d = root / "size_scale" / f"d{diam:02d}_{i}"
                if (d / "simulation.json").exists():
                    continue
                seed = 5200 + 10 * j + i
                res = simulate(
                    d,
                    shape=SIZE_SHAPE,
                    seed=seed,
                    templates=(str(tpl),),
                    overwrite=True,
                )
                _write_row(
                    d,
                    {
                        "set": "size_scale",
                        "diameter": diam,
                        "scale": diam / d0,
                        "seed": seed,
                        "voxel_size": 10.0,
                    },
                )
                print(
                    f"{d.relative_to(root)}: {res.n_particles} particles ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    if "size_voxel" in sets:
        d0 = _template_diameter(
            SIZE_TEMPLATE
        )  # at 10 Å: the template's size in Å is 10 * d0
        for j, diam in enumerate(SIZE_DIAMETERS):
            vs = round(10.0 * d0 / diam, 2)
            for i in range(_tomograms_per_size(diam)):
                d = (
                    root
                    / "size_voxel"
                    / (f"d{diam:02d}" if i == 0 else f"d{diam:02d}_{i}")
                )
                if (d / "simulation.json").exists():
                    continue
                seed = 5300 + j + 10 * i
                res = simulate(
                    d,
                    shape=SIZE_SHAPE,
                    seed=seed,
                    templates=(SIZE_TEMPLATE,),
                    voxel_size=vs,
                    overwrite=True,
                )
                _write_row(
                    d,
                    {
                        "set": "size_voxel",
                        "diameter": diam,
                        "seed": seed,
                        "voxel_size": vs,
                    },
                )
                print(
                    f"{d.relative_to(root)}: {vs} Å/voxel, {res.n_particles} particles "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )


def predict(root: Path, dirs: list[Path], spec: str, tag: str) -> None:
    """Whole-volume maps of every tomogram in ``dirs`` without cached maps; never rescaled."""
    import mrcfile
    import torch

    torch.set_num_threads(int(os.environ.get("CRYODET_THREADS", "2")))
    nets = [models.load(p) for p in _weights(spec)]
    for d in dirs:
        out = d / f"maps_{tag}.npz"
        if out.exists():
            continue
        t = time.perf_counter()
        with mrcfile.open(d / "tomogram.mrc") as m:
            vol = np.array(m.data, dtype=np.float32)
        maps: dict[str, np.ndarray] = {}
        for net in nets:
            y = models.predict_array(net, vol, polarity="as-is")
            for i, h in enumerate(net.config.heads):
                maps[h] = y[i]
        np.savez(out, mask=maps["mask"], center=maps["center"], scale=np.float64(1.0))
        print(
            f"{d.relative_to(root)}: predicted in {time.perf_counter() - t:.1f} s",
            flush=True,
        )


def _picks(d: Path, tag: str, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Pick centres (z, y, x) and ranking scores, post-processed exactly as ``score_one`` does."""
    import dask
    import dask.array as da

    z = _maps(d, tag)
    with dask.config.set(scheduler="synchronous"):
        res = postprocess(
            da.from_array(z["mask"], chunks=128),
            da.from_array(z["center"], chunks=128),
            **params,
        )
    rank = getattr(res, "center_scores", None)
    return np.asarray(res.centers, dtype=np.float64).reshape(-1, 3), np.asarray(
        rank if rank is not None else res.scores, dtype=np.float64
    )


def _row(d: Path) -> dict[str, Any]:
    return dict(json.loads((d / "row.json").read_text()))


def score_cross(
    root: Path, tag: str, params: dict[str, Any], radius: float
) -> dict[str, Any]:
    from cryodet_dask.evaluation import match_centres

    out: dict[str, Any] = {}
    for mode in MODES:
        tomos = _tomograms(root, mode)
        if not tomos:
            continue
        rows = [score_one(d, tag, params, radius) for d in tomos]
        tp_scores, fp_scores = [], []
        for d in tomos:
            pred, rank = _picks(d, tag, params)
            truth = pd.read_csv(d / "particles.csv")[["z", "y", "x"]].to_numpy(
                np.float64
            )
            _, match = match_centres(pred, truth, radius)
            tp_scores += list(rank[match >= 0])
            fp_scores += list(rank[match < 0])
        pooled = _pooled(rows)
        out[mode] = dict(
            pooled,
            n_tomograms=len(rows),
            n_true=sum(r["n_true"] for r in rows),
            n_pred=sum(r["n_pred"] for r in rows),
            per_tomogram=rows,
            tp_score_quartiles=[
                float(q) for q in np.percentile(tp_scores, (25, 50, 75))
            ]
            if tp_scores
            else None,
            fp_score_quartiles=[
                float(q) for q in np.percentile(fp_scores, (25, 50, 75))
            ]
            if fp_scores
            else None,
        )
    return out


def _score_sizes(
    root: Path, which: str, tag: str, params: dict[str, Any], radius: float
) -> list[dict[str, Any]]:
    tomos = _tomograms(root, which)
    by_size: dict[int, list[Path]] = {}
    for d in tomos:
        by_size.setdefault(int(_row(d)["diameter"]), []).append(d)
    table = []
    for diam in sorted(by_size):
        ds = by_size[diam]
        rows = [score_one(d, tag, params, radius) for d in ds]
        nvox = np.concatenate(
            [pd.read_csv(d / "particles.csv")["n_voxels"].to_numpy() for d in ds]
        )
        measured = _ball_diameter(nvox)
        pooled = _pooled(rows)
        ctp = sum(r["cz_tp"] for r in rows)
        n_true = sum(r["n_true"] for r in rows)
        vs = float(_row(ds[0]).get("voxel_size", 10.0))
        table.append(
            {
                "diameter": diam,
                "measured_diameter_median": float(np.median(measured))
                if len(measured)
                else None,
                "measured_diameter_range": [
                    float(measured.min()),
                    float(measured.max()),
                ]
                if len(measured)
                else None,
                "voxel_size": vs,
                "diameter_angstrom": float(np.median(measured)) * vs
                if len(measured)
                else None,
                "n_tomograms": len(ds),
                "n_true": n_true,
                "n_pred": sum(r["n_pred"] for r in rows),
                "recall": pooled["recall"],
                "precision": pooled["precision"],
                "f1": pooled["f1"],
                "ap": pooled["ap"],
                "cz_recall": ctp / max(n_true, 1),
            }
        )
    return table


def score_distractors(
    root: Path, tag: str, params: dict[str, Any], near: float = 5.0
) -> dict[str, Any]:
    """Picks per 10^6 voxels on particle-free tomograms (every pick is false), and the part of them within
    ``near`` voxels of the distractor (of a scene membrane)."""
    import mrcfile
    from scipy import ndimage

    def stats(tomos: list[Path], kind: str) -> dict[str, Any]:
        n_vox = n_picks = n_near_d = n_near_m = n_objects = 0
        scores: list[float] = []
        for d in tomos:
            pred, rank = _picks(d, tag, params)
            idx = np.clip(np.rint(pred).astype(int), 0, None)
            with mrcfile.open(d / "membranes.mrc") as m:
                memb = np.asarray(m.data) > 0
            n_vox += memb.size
            n_picks += len(pred)
            n_objects += int(_row(d).get("n_distractors", {}).get(kind, 0))
            scores += list(rank)
            if len(pred):
                idx = np.minimum(idx, np.array(memb.shape) - 1)
                if memb.any():
                    dist_m = ndimage.distance_transform_edt(~memb)
                    n_near_m += int((dist_m[tuple(idx.T)] <= near).sum())
                dpath = d / "distractors.mrc"
                if dpath.exists():
                    with mrcfile.open(dpath) as m:
                        dis = np.asarray(m.data) > 0
                    if dis.any():
                        dist_d = ndimage.distance_transform_edt(~dis)
                        n_near_d += int((dist_d[tuple(idx.T)] <= near).sum())
        return {
            "n_tomograms": len(tomos),
            "voxels": n_vox,
            "picks": n_picks,
            "distractors": n_objects,
            "per_million": n_picks / max(n_vox, 1) * 1e6,
            "near_distractor_per_million": n_near_d / max(n_vox, 1) * 1e6,
            "near_membrane_per_million": n_near_m / max(n_vox, 1) * 1e6,
            "score_median": float(np.median(scores)) if scores else None,
            "score_max": float(np.max(scores)) if scores else None,
        }

    out: dict[str, Any] = {}
    for mode in MODES:
        for kind in DISTRACTOR_KINDS:
            tomos = _tomograms(root, f"distractors/{mode}/{kind}")
            if not tomos:
                continue
            out[f"{mode}/{kind}"] = {
                "imaging": mode,
                "kind": kind,
                **stats(tomos, kind),
            }
            absent = _tomograms(root, f"distractors/{mode}/{kind}-absent")
            if absent:  # the same scenes without the distractor
                out[f"{mode}/{kind}"]["absent"] = stats(absent, kind)
    return out


def plot_sizes(tables: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    styles = {
        "size_scale": ("o", "-", "C0", "template rescaled, 10 Å/voxel"),
        "size_voxel": ("s", "--", "C2", "template at 27-5.5 Å/voxel"),
    }
    for which, table in tables.items():
        if not table:
            continue
        marker, ls, colour, label = styles[which]
        xs = [r["measured_diameter_median"] for r in table]
        ax.plot(
            xs,
            [r["recall"] for r in table],
            marker=marker,
            ls=ls,
            color=colour,
            label=f"recall, {label}",
        )
        ax.plot(
            xs,
            [r["cz_recall"] for r in table],
            marker=marker,
            ls=":",
            color=colour,
            alpha=0.6,
            ms=3,
            label=f"recall, any pick within half the radius (CZ), {label}",
        )
        ax.plot(
            xs,
            [r["precision"] for r in table],
            marker=marker,
            ls=ls,
            color="C3" if which == "size_scale" else "C1",
            alpha=0.35,
            label=f"precision, {label}",
        )
    ax.axvspan(
        2 * np.cbrt(3 * 790 / (4 * np.pi)),
        2 * np.cbrt(3 * 5600 / (4 * np.pi)),
        color="grey",
        alpha=0.12,
        label="training particles (790-5,600 voxels)",
    )
    ax.axhline(0.9, color="grey", lw=0.7, ls=":")
    ax.set_xlabel("particle diameter, voxels (ball of the mask's volume)")
    ax.set_ylabel("recall / precision (match within 5 voxels)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(6, 42)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(
        "shipped two-head model, default flags, no --rescale (4v4r, SNR 0.3, ±60°)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def score(
    root: Path,
    spec: str,
    tag: str,
    radius: float,
    json_path: Path | None,
    png: Path | None,
) -> dict[str, Any]:
    dirs = sorted(p.parent for p in root.rglob("simulation.json"))
    predict(root, dirs, spec, tag)
    params = dict(PostprocessParams().__dict__)
    result: dict[str, Any] = {"weights": spec, "params": params, "radius": radius}
    result["cross_domain"] = cross = score_cross(root, tag, params, radius)
    print(
        f"\n(a) cross-domain, weights {spec}; default flags, match within {radius:g} voxels"
    )
    print(
        "| test on | tomograms | particles | picks | F1 | precision | recall | AP | TP score quartiles | "
        "FP score quartiles |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, r in cross.items():
        q = lambda v: "–" if v is None else " / ".join(f"{x:.2f}" for x in v)
        print(
            f"| {mode} | {r['n_tomograms']} | {r['n_true']} | {r['n_pred']} | {r['f1']:.3f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['ap']:.3f} | {q(r['tp_score_quartiles'])} | "
            f"{q(r['fp_score_quartiles'])} |"
        )
    tables = {
        w: _score_sizes(root, w, tag, params, radius)
        for w in ("size_scale", "size_voxel")
    }
    result["size"] = tables
    for which, table in tables.items():
        if not table:
            continue
        print(f"\n(b) recall against diameter: {which}")
        print(
            "| nominal D | measured D (median, range) | Å/voxel | D in Å | tomograms | particles | picks | recall | "
            "precision | F1 | AP | CZ recall |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in table:
            lo, hi = r["measured_diameter_range"] or (float("nan"),) * 2
            print(
                f"| {r['diameter']} | {r['measured_diameter_median']:.1f} ({lo:.1f}-{hi:.1f}) | "
                f"{r['voxel_size']:g} | {r['diameter_angstrom']:.0f} | {r['n_tomograms']} | {r['n_true']} | "
                f"{r['n_pred']} | {r['recall']:.3f} | {r['precision']:.3f} | {r['f1']:.3f} | {r['ap']:.3f} | "
                f"{r['cz_recall']:.3f} |"
            )
    if png is not None and any(tables.values()):
        plot_sizes(tables, png)
    result["distractors"] = dis = score_distractors(root, tag, params)
    if dis:
        print(
            "\n(c) particle-free tomograms: false picks per 10^6 voxels (all picks are false)"
        )
        print(
            "| imaging | distractor | tomograms | distractors | voxels | picks | per 10^6 voxels | within 5 voxels "
            "of the distractor | of a scene membrane | score median / max | same scenes without it: picks "
            "(per 10^6 voxels) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in dis.values():
            a = r.get("absent")
            absent = "–" if a is None else f"{a['picks']} ({a['per_million']:.1f})"
            sc = (
                "–"
                if r["score_median"] is None
                else f"{r['score_median']:.2f} / {r['score_max']:.2f}"
            )
            print(
                f"| {r['imaging']} | {r['kind']} | {r['n_tomograms']} | {r['distractors']} | {r['voxels']} | "
                f"{r['picks']} | "
                f"{r['per_million']:.1f} | {r['near_distractor_per_million']:.1f} | "
                f"{r['near_membrane_per_million']:.1f} | {sc} | {absent} |"
            )
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1, default=float))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=("make", "score"))
    ap.add_argument("dir", type=Path)
    ap.add_argument(
        "--sets", default="fourier,tiltseries,distractors,size_scale,size_voxel"
    )
    ap.add_argument(
        "--weights",
        default="twohead",
        help="twohead, pair, or checkpoint paths SEG,CEN or TWOHEAD",
    )
    ap.add_argument(
        "--tag", default=None, help="name of the cached maps (default: from --weights)"
    )
    ap.add_argument(
        "--radius",
        type=float,
        default=5.0,
        help="matching radius in voxels (default 5)",
    )
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.command == "make":
        make(args.dir, args.sets.split(","))
    else:
        tag = args.tag or args.weights.replace("/", "_").replace(",", "+")
        score(args.dir, args.weights, tag, args.radius, args.json, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
