"""Small helpers shared by the benchmark commands: timing, process-tree memory, tables."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import psutil


def _anon_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples RSS and anonymous RSS (RssAnon) of a process and all its children, keeps the peaks."""

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        self.proc = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak_rss = 0
        self.peak_anon = 0
        self.peak_anon_per_child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            procs = [self.proc]
            try:
                procs += self.proc.children(recursive=True)
            except psutil.Error:
                pass
            rss = anon = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    continue
                a = _anon_kib(p.pid) * 1024
                anon += a
                if p.pid != self.proc.pid:
                    self.peak_anon_per_child = max(self.peak_anon_per_child, a)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_anon = max(self.peak_anon, anon)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def timer(results: dict, key: str):
    t = time.perf_counter()
    yield
    results[key] = time.perf_counter() - t


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def report(results: dict, json_path: str | None) -> None:
    """Print a benchmark's results as JSON, and write them to ``json_path`` when given."""
    import json
    from pathlib import Path

    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text)
