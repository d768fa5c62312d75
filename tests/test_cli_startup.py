"""The command line answers at once: ``--help``, ``--version`` and every command's ``--help`` import
neither torch nor dask, zarr or pandas (each command imports them in its ``run``), and the global
options are taken after the command too."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest

from cryodet_dask.cli import _merge_global_options, build_parser

#: Modules ``--help`` must not import (each costs 0.3-5 s on a busy 2-core machine).
HEAVY = ("torch", "distributed", "dask", "zarr", "pandas", "scipy", "openvino", "matplotlib", "skimage",
         "cryodet_dask.models", "cryodet_dask.simulation", "cryodet_dask.pipeline", "cryodet_dask.prediction")

_HELP = """
import sys
import cryodet_dask.cli
try:
    cryodet_dask.cli.main({argv!r})
except SystemExit:
    pass
heavy = {heavy!r}
print(','.join(sorted(m for m in sys.modules if m in heavy)), file=sys.stderr)
"""


def _commands() -> list[str]:
    sub = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    return sorted(sub.choices)


def _heavy_after(argv: list[str]) -> list[str]:
    code = _HELP.format(argv=argv, heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode == 0, r.stderr
    return [m for m in last.split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_heavy(argv):
    assert _heavy_after(argv) == []


def test_every_commands_help_imports_nothing_heavy():
    commands = _commands()
    assert {"detect", "predict", "postprocess", "convert", "train", "picks", "simulate-pool"} <= set(commands)
    for name in commands:
        assert _heavy_after([name, "--help"]) == [], name
    assert _heavy_after(["picks", "convert", "--help"]) == []


def _median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def test_help_starts_within_a_few_interpreter_starts():
    """Measured against ``python -c pass`` on the same machine, so that a busy machine does not fail it:
    ``--help`` (numpy and argparse included) takes a few interpreter starts, where importing torch alone
    takes 50-100."""
    help_code = _HELP.format(argv=["--help"], heavy=())
    for _ in range(2):  # warm the file cache
        subprocess.run([sys.executable, "-c", help_code], capture_output=True, timeout=120)
    base = _median_seconds([sys.executable, "-c", "pass"], 5)
    took = _median_seconds([sys.executable, "-c", help_code], 5)
    assert took < 20 * base, f"--help took {took:.3f} s, {took / base:.1f}x `python -c pass` ({base:.3f} s)"


def test_importing_the_package_stays_light_and_its_names_resolve():
    """``import cryodet_dask`` (and its subpackages) imports the stages on first use (PEP 562)."""
    code = ("import sys, cryodet_dask, cryodet_dask.io, cryodet_dask.particles, cryodet_dask.training, "
            "cryodet_dask.postprocessing\n"
            f"print(','.join(sorted(m for m in sys.modules if m in {HEAVY!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip() == ""
    import cryodet_dask
    import cryodet_dask.io
    import cryodet_dask.particles
    import cryodet_dask.postprocessing
    import cryodet_dask.training

    for package in (cryodet_dask, cryodet_dask.io, cryodet_dask.particles, cryodet_dask.postprocessing,
                    cryodet_dask.training):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
            assert name in dir(package)
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018
    assert cryodet_dask.detect.__module__ == "cryodet_dask.pipeline.detect"
    assert cryodet_dask.postprocess is cryodet_dask.postprocessing.postprocess


@pytest.mark.parametrize("argv,verbose,quiet,progress", [
    (["convert", "a.mrc", "b.zarr", "-q"], 0, True, None),
    (["-q", "convert", "a.mrc", "b.zarr"], 0, True, None),
    (["convert", "a.mrc", "b.zarr", "-v", "--progress"], 1, False, True),
    (["-v", "convert", "a.mrc", "b.zarr", "-v"], 2, False, None),
    (["--progress", "convert", "a.mrc", "b.zarr", "--no-progress"], 0, False, False),
    (["detect", "t.mrc", "-o", "out", "-q"], 0, True, None),
    (["picks", "convert", "a.star", "b.csv", "-q", "-vv"], 2, True, None),
])
def test_global_options_after_the_command(argv, verbose, quiet, progress):
    args = build_parser().parse_args(argv)
    _merge_global_options(args)
    assert (args.verbose, args.quiet, args.progress) == (verbose, quiet, progress)
    assert not [k for k in vars(args) if k.endswith("_after")]


def test_detect_quiet_after_the_command_is_quiet(tmp_path, capsys):
    """``cryodet-dask detect ... -q``: the save-config path runs no computation and says nothing."""
    from cryodet_dask.cli import main

    cfg = tmp_path / "run.yaml"
    assert main(["detect", "-o", str(tmp_path / "out"), "--save-config", str(cfg), "-q"]) == 0
    assert cfg.exists()


def test_network_flags_state_detectparams_defaults():
    """The networks' flags state their defaults (``--help`` does not import the pipeline): they are
    DetectParams'."""
    from cryodet_dask.cli._flags import NETWORK_FLAGS
    from cryodet_dask.pipeline import DetectParams

    d = DetectParams()
    for flag in NETWORK_FLAGS:
        assert flag.default == getattr(d, flag.name), flag.name
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]  # type: ignore[union-attr]
    args = predict.parse_args(["t.mrc", "-o", "p.zarr"])
    for flag in NETWORK_FLAGS:
        assert getattr(args, flag.name) == getattr(d, flag.name), flag.name


def test_detect_on_a_local_cluster_never_imports_torch_in_the_driver(tmp_path, net):
    """The process that plans and records a ``detect`` run reads the checkpoints' configuration without
    PyTorch (2-3 s of imports); only the workers, which run the networks, import it.  The run record
    still names the PyTorch that ran them."""
    import json

    import numpy as np

    from cryodet_dask.testing import make_mrc

    tomo = make_mrc(tmp_path / "t.mrc", np.random.default_rng(0).normal(size=(24, 40, 40)).astype(np.float32),
                    voxel_size=10.0)
    code = ("import sys\nfrom cryodet_dask.cli import main\n"
            f"rc = main(['-q', 'detect', {str(tomo)!r}, '-o', {str(tmp_path / 'out')!r}, '-m', {str(net)!r}, "
            "'--cluster', 'local', '--workers', '1', '--device', 'auto'])\n"
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 False", r.stdout + r.stderr
    record = json.loads((tmp_path / "out" / "t_run.json").read_text())
    import torch

    assert record["versions"]["torch"] == str(torch.__version__)
