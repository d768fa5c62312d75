"""The README and docs/ agree with the code.

* every default in a parameter table (a Markdown table with a ``default`` column) equals the code's
  default, taken from the declarations: the ``DetectParams`` and ``PostprocessParams`` dataclasses, and
  the argparse defaults of the CLI (built from ``cli/_flags.py``) for the flags the dataclasses do not hold;
  every flag named in such a table is one the CLI has;
* the README stays short, its relative links (and their ``#anchors``) point to what exists, and its
  Python example runs;
* no user-facing document carries issue numbers or development history.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_DOCS = [README, *DOCS]

TRUE = {"on", "true", "yes"}
FALSE = {"off", "false", "no"}


# -- Markdown helpers ------------------------------------------------------------------------------------

def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", s)]


def tables(path: Path) -> Iterator[tuple[list[str], list[tuple[int, list[str]]]]]:
    """(header, [(line number, cells), ...]) of every Markdown table outside code blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    in_code = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif (not in_code and line.lstrip().startswith("|") and i + 1 < len(lines)
              and re.match(r"^\s*\|\s*:?-{3,}", lines[i + 1])):
            header = [c.lower() for c in _cells(line)]
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                rows.append((j + 1, _cells(lines[j])))
                j += 1
            yield header, rows
            i = j
            continue
        i += 1


def _code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def _prose(path: Path) -> str:
    """The text outside fenced code blocks."""
    out, in_code = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code:
            out.append(line)
    return "\n".join(out)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            s = github_slug(m.group(2))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


# -- the code's defaults, from the declarations --------------------------------------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from cryodet_dask.cli import build_parser

    parser = build_parser()
    subs: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs.update(action.choices)
    return subs


@pytest.fixture(scope="module")
def options() -> dict[str, dict[str, object]]:
    """option string -> {dest: the code's default}.

    A dest that is a field of ``PostprocessParams`` or ``DetectParams`` takes the dataclass's default (``detect``
    leaves its flags unset so that a YAML config can fill them; the dataclasses hold the defaults). Other
    dests take the argparse default of ``detect``, else of the first subcommand that has the option.
    """
    from cryodet_dask.pipeline.params import DetectParams
    from cryodet_dask.postprocessing import PostprocessParams

    pp = {f.name: getattr(PostprocessParams(), f.name) for f in dataclasses.fields(PostprocessParams)}
    dp = {f.name: getattr(DetectParams(), f.name) for f in dataclasses.fields(DetectParams)}
    subs = _subparsers()
    order = ["detect", "postprocess", "predict"] + sorted(set(subs) - {"detect", "postprocess", "predict"})
    out: dict[str, dict[str, object]] = {}
    for name in order:
        for action in subs[name]._actions:
            for opt in action.option_strings:
                dest = action.dest
                if dest in pp:
                    value = pp[dest]
                elif dest in dp:
                    value = dp[dest]
                else:
                    value = None if action.default is argparse.SUPPRESS else action.default
                out.setdefault(opt, {}).setdefault(dest, value)
    return out


def _field_names() -> dict[str, object]:
    from cryodet_dask.pipeline.params import DetectParams
    from cryodet_dask.postprocessing import PostprocessParams

    d = {f.name: getattr(DetectParams(), f.name) for f in dataclasses.fields(DetectParams)}
    d.update({f.name: getattr(PostprocessParams(), f.name) for f in dataclasses.fields(PostprocessParams)})
    return d


def _leading_token(cell: str) -> float | str | None:
    """The default a table cell states: its leading number, or its leading word; None for "—" or nothing."""
    t = re.sub(r"[`*]", "", cell).strip()
    m = re.match(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w,])", t)
    if m:
        return float(m.group(0).replace(",", ""))
    m = re.match(r"[A-Za-z][\w.,-]*[\w]|[A-Za-z]", t)
    return m.group(0).lower() if m else None


def matches(code: object, cell: str, dest: str) -> bool:
    tok = _leading_token(cell)
    if isinstance(code, bool):
        return tok in (TRUE if code else FALSE)
    if code is None:
        # no plain default (derived, from the file, planned...): the docs must not state a value
        return not isinstance(tok, float) and tok not in TRUE | FALSE
    if isinstance(code, int | float):
        return isinstance(tok, float) and math.isclose(tok, float(code), rel_tol=0, abs_tol=1e-12)
    if isinstance(code, tuple | list):
        if dest == "formats":
            from cryodet_dask.exports import FORMATS

            if tok == "all":
                return set(code) == set(FORMATS)
        text = re.sub(r"[`*]", "", cell).strip()
        m = re.match(r"[\w.-]+(?:,[\w.-]+)*", text)
        if not m:
            return False
        given = m.group(0).split(",")
        want = [str(x) for x in code]
        return given == want or (len(set(want)) == 1 and len(given) == 1 and given[0] == want[0])
    if isinstance(code, str):
        return isinstance(tok, str) and tok == code.lower()
    return False


def parameter_rows() -> Iterator[tuple[Path, int, list[str], str]]:
    """(file, line, the flags or parameter names of the row, its default cell) of every parameter table."""
    fields = _field_names()
    for path in USER_DOCS:
        for header, rows in tables(path):
            if "default" not in header:
                continue
            k = header.index("default")
            for line, cells in rows:
                if len(cells) <= k:
                    continue
                names: list[str] = []
                for cell in cells[:k]:
                    for span in _code_spans(cell):
                        for tok in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*|[a-z][a-z0-9_]*)", span):
                            if tok.startswith("-") or tok in fields:
                                names.append(tok)
                yield path, line, names, cells[k]


# -- tests ---------------------------------------------------------------------------------------------------

def test_parameter_tables_state_the_codes_defaults(options):
    fields = _field_names()
    checked: dict[str, int] = {}
    errors = []
    for path, line, names, cell in parameter_rows():
        where = f"{path.relative_to(ROOT)}:{line}"
        dests: dict[str, object] = {}
        for name in names:
            if name.startswith("-"):
                if name not in options:
                    errors.append(f"{where}: {name} is no option of any cryodet-dask command")
                    continue
                dests.update(options[name])
            else:
                dests[name] = fields[name]
        for dest, code in dests.items():
            checked[str(path.relative_to(ROOT))] = checked.get(str(path.relative_to(ROOT)), 0) + 1
            if not matches(code, cell, dest):
                errors.append(f"{where}: {', '.join(names)}: the table says {cell!r}, the code's default is {code!r}")
    assert not errors, "\n".join(errors)
    # the tables are there and were read: a parser that silently matched nothing would pass the loop above
    assert checked.get("README.md", 0) >= 20, checked
    assert checked.get("docs/postprocessing.md", 0) >= 11, checked


def test_the_check_catches_a_wrong_default(options):
    # the comparison itself, on the values the docs state
    assert matches(0.5, "0.5", "mask_threshold")
    assert not matches(0.5, "0.1", "mask_threshold")
    assert not matches(7.0, "0 (today's behaviour)", "center_min_distance")
    assert matches(384, "384", "min_particle_size")
    assert not matches(384, "0", "min_particle_size")
    assert matches(False, "off", "filter_outlier") and not matches(False, "on", "filter_outlier")
    assert matches(None, "—", "tile") and not matches(None, "128", "tile")
    assert matches((128,), "128", "chunks") and not matches((128,), "64", "chunks")
    assert matches("as-is", "as-is", "polarity") and not matches("as-is", "both", "polarity")


def test_particle_diameter_is_described_as_the_code_computes_it():
    from cryodet_dask.postprocessing import from_particle_diameter

    text = (ROOT / "docs" / "postprocessing.md").read_text(encoding="utf-8")
    m = re.search(r"For a ([\d.]+) Å particle at ([\d.]+) Å per voxel: r = ([\d.]+), `center_min_distance`\s+"
                  r"([\d.]+) and `remove_min_size` ([\d,]+)", text)
    assert m, "docs/postprocessing.md lost its --particle-diameter example"
    d, vs, r, cmd, rs = m.groups()
    got = from_particle_diameter(float(d), float(vs))
    assert float(r) == got["center_min_distance"] == float(cmd)
    assert int(rs.replace(",", "")) == got["remove_min_size"]
    # the README says round(pi/6 r^3): a ball of diameter r (one eighth of the particle's volume)
    assert "round(π/6 · r³)" in README.read_text(encoding="utf-8")
    assert got["remove_min_size"] == round(math.pi / 6 * got["center_min_distance"] ** 3)


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 350, f"README.md has {n} lines; move details to docs/"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers_or_development_history(path):
    text = path.read_text(encoding="utf-8")
    bad = []
    for pattern in (r"\bissues?[\s_-]*#?\d+", r"\bthis session\b", r"\ba later session\b", r"\bno GPU was (?:lent|available)"):
        for m in re.finditer(pattern, text, re.IGNORECASE):
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)!r}")
    assert not bad, "\n".join(bad)


def _links(path: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(path))


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_anchors(path):
    bad = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not bad, f"{path.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_readme_python_example_runs(tmp_path):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "the README's Python API section has no python block"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    r = subprocess.run([sys.executable, "-c", m.group(1)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "precision" in r.stdout and "particles" in r.stdout


def test_readme_command_table_lists_every_subcommand():
    text = README.read_text(encoding="utf-8")
    listed = set()
    for header, rows in tables(README):
        if header[:1] == ["command"]:
            for _, cells in rows:
                for span in _code_spans(cells[0]):
                    listed.add(span.split()[0])
                    if span.startswith("picks "):
                        listed.add(" ".join(span.split()[:2]))
    subs = _subparsers()
    missing = sorted(set(subs) - listed)
    assert not missing, f"README.md's command table lacks: {', '.join(missing)}"
    for action in subs["picks"]._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing = sorted(f"picks {a}" for a in action.choices if f"picks {a}" not in listed)
            assert not missing, f"README.md's command table lacks: {', '.join(missing)}"
    assert "## Command line" in text
