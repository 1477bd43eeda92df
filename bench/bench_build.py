"""End-to-end ``featstore build`` throughput, store size and peak memory.

Generates (once, cached) a corpus of speech-like FLACs in the ASVspoof 2019 LA layout with
at least ``--hours`` of audio, then times complete builds of ``mgd,logmel`` into a fresh Zarr
store with ``--jobs 1`` and ``--jobs 2``, interleaved, each in its own Python process (so
every run pays imports and worker start-up, as a user does). Also times the *kernel floor*:
decode + both kernels on every file in one process, nothing else (no IPC, no store).

Prints per configuration the median wall time, audio seconds per wall second (xRT), store
bytes per audio hour, and peak memory: the main process (its own ``ru_maxrss``) and the
whole process tree (sum of RSS over the build and its workers, sampled
every 0.1 s from ``/proc``; shared pages are counted once per process, so it is an upper
bound). Ratios: jobs2 / jobs1 (scaling) and jobs1 / kernel floor (pipeline overhead).

With ``--backend dask`` the runs are ``jobs2`` (loky, 2 processes) and ``dask2`` (a Dask
``LocalCluster`` of 2 single-threaded worker processes on 127.0.0.1, started by the build),
interleaved; it prints the overhead of the Dask path (dask2 / jobs2 build wall, the
``LocalCluster`` start included) and the bytes moved to the writing process per audio hour
(loky: its ``rchar`` from ``/proc/self/io`` during the build, i.e. the results read from the
workers' pipes, which since the shared-memory rings (``featstore.shared_rows``) carry only
references and the arrays sent inline; Dask: the bytes the workers sent,
``transfer_outgoing_bytes_total``).

With ``--views K`` the runs are ``clean`` (``--jobs 2``, no views) and one build with K
augmented views per ``--recipe`` (default: the issue's recipe, the ``codec`` default list
with Opus, the list without Opus, G.711 only, and ``gain`` -- nearly free, so its ratio is the
floor set by extracting K more views), interleaved; it prints each build's wall and CPU time
and their ratios to the clean build (issue 13: a 3-view build with codecs at most 4.5x the
clean one). ``--augment-splits`` is ``train,dev`` by default, i.e. every utterance gets K
views and the ratio is the per-utterance cost (1 + K extractions + K augmentations, against
one extraction); with ``--augment-splits train`` (the build's default) only 2/3 of this
corpus does.

Usage::

    .venv/bin/python bench/bench_build.py [--hours 2] [--repeat 3] [--cache DIR]
    .venv/bin/python bench/bench_build.py --backend dask [--hours 2] [--repeat 3]
    .venv/bin/python bench/bench_build.py --views 3 [--recipe R ...] [--augment-splits train]
        [--jobs 2] [--hours 0.5] [--repeat 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from corpus_fixture import protocol_path, speechlike, utt_id  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def make_bench_corpus(root: Path, hours: float, seed: int = 0) -> Path:
    """A corpus of >= ``hours`` of 1.5-6 s speech-like FLACs (train 2/3, dev 1/3), cached."""
    marker = root / f"complete-{hours:g}h"
    if marker.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    (root / "protocols").mkdir(parents=True)
    (root / "flac").mkdir()
    rng = np.random.default_rng(seed)
    total, i, lines = 0.0, 0, {"train": [], "dev": []}
    while total < hours * 3600:
        split = "train" if i % 3 else "dev"
        seconds = float(rng.uniform(1.5, 6.0))
        uid = utt_id(split, i)
        spoof = i % 10 != 0
        lines[split].append(
            f"LA_{i % 20:04d} {uid} - {'A0' + str(1 + i % 6) if spoof else '-'} "
            f"{'spoof' if spoof else 'bonafide'}"
        )
        sf.write(root / "flac" / f"{uid}.flac", speechlike(rng, seconds), 16000, subtype="PCM_16")
        total += seconds
        i += 1
    for split, rows in lines.items():
        protocol_path(root, split).write_text("\n".join(rows) + "\n")
    marker.write_text(f"{i} utterances, {total:.1f} s\n")
    return root


def _tree_rss(pid: int) -> int:
    """Sum of RSS (bytes) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as fh:
                rss[int(entry)] = int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


_RUNNER = """
import contextlib, json, resource, sys, time, featstore, featstore.build, joblib, tqdm, zarr
from featstore.parallel import parallel_backend
backend = sys.argv[5] if len(sys.argv) > 5 else "loky"
views = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
def rchar():  # bytes this process read with read(): loky results (not the rows in rings)
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar")).split()[1])
t0 = time.perf_counter()
with parallel_backend(backend, int(sys.argv[4])) as info:  # dask: the LocalCluster
    start = time.perf_counter() - t0
    r0 = rchar()
    s = featstore.build(sys.argv[1], sys.argv[2], sys.argv[3], features="mgd,logmel",
                        jobs=int(sys.argv[4]), quiet=True, **views)
    if info.client is None:
        moved = rchar() - r0
    else:  # what the workers sent (results to the client, relayed or not)
        moved = sum(info.client.run(
            lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())
print(json.dumps({"wall": s.wall_seconds + start, "audio": s.audio_seconds,
                  "n": sum(s.written.values()), "q": len(s.quarantine), "moved": moved,
                  "start": start,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

_FLOOR = """
import json, resource, sys, time
from pathlib import Path
from featstore.audio import load_audio
from featstore.features.registry import get_feature
files = sorted(Path(sys.argv[1]).glob("*.flac"))
mgd, logmel = get_feature("mgd"), get_feature("logmel")
x = load_audio(files[0]).signal
mgd.function(x, **mgd.defaults); logmel.function(x, **logmel.defaults)  # warm-up / JIT
t0 = time.perf_counter(); audio = 0.0
for f in files:
    x = load_audio(f).signal
    mgd.function(x, **mgd.defaults); logmel.function(x, **logmel.defaults)
    audio += x.size / 16000
print(json.dumps({"wall": time.perf_counter() - t0, "audio": audio, "n": len(files), "q": 0,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_measured(args: list[str]) -> tuple[dict, float, int, float]:
    """Run a Python child; return its JSON line, wall time, peak tree RSS, tree CPU seconds.

    CPU seconds (user + system) cover the child and every descendant it waited for (the
    joblib workers are joined when the build process exits).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    out = proc.stdout.read()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out.strip().splitlines()[-1]), wall, peak, cpu


DEFAULT_RECIPES = (
    "rawboost-5|codec|noise+reverb",
    "codec",
    "codec(codecs='mp3,vorbis,mulaw,alaw')",
    "codec(codecs='mulaw,alaw')",
    "gain",
)
"""The recipes ``--views`` times by default (see the module docstring)."""


def bench_views(
    corpus: Path, views: int, recipes: list[str], repeat: int, splits: str, jobs: int
) -> None:
    """Time clean and K-view builds of ``splits``, interleaved; print ratios to clean."""
    configs = [("clean", None)] + [(f"r{i}", r) for i, r in enumerate(recipes, 1)]
    results: dict[str, list[dict]] = {name: [] for name, _ in configs}
    tmp = Path(tempfile.mkdtemp(prefix="bench_views_"))
    try:
        for r in range(repeat):
            for name, recipe in configs:
                out = tmp / f"{name}-{r}.zarr"
                extra = {"augment": recipe, "views": views, "augment_splits": splits}
                extra = {} if recipe is None else extra
                child = [_RUNNER, str(corpus / "protocols"), str(corpus), str(out), str(jobs)]
                child.append("loky")
                info, wall, peak, cpu = run_measured([*child, json.dumps(extra)])
                results[name].append({**info, "process_wall": wall, "tree_peak": peak, "cpu": cpu})
                results[name][-1]["bytes"] = dir_bytes(out)
                shutil.rmtree(out)
                print(
                    f"  run {r + 1} {name:5s}: build {info['wall']:7.1f} s, CPU {cpu:7.1f} s, "
                    f"tree peak {peak / 2**20:6.0f} MiB, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(row[key] for row in results[name])

    audio = results["clean"][0]["audio"]
    print(
        f"\naudio: {audio / 3600:.3f} h (clean); {views} views of {splits}; --jobs {jobs}; "
        f"median of {repeat}"
    )
    print(
        f"{'config':6s} {'wall s':>8s} {'x clean':>8s} {'CPU s':>8s} {'x clean':>8s} "
        f"{'peak MiB':>9s} {'MB/audio-h':>11s}  recipe"
    )
    for name, recipe in configs:
        wall, cpu = med(name, "wall"), med(name, "cpu")
        print(
            f"{name:6s} {wall:8.1f} {wall / med('clean', 'wall'):8.2f} {cpu:8.1f} "
            f"{cpu / med('clean', 'cpu'):8.2f} {med(name, 'tree_peak') / 2**20:9.0f} "
            f"{med(name, 'bytes') / (audio / 3600) / 1e6:11.0f}  {recipe or '(no views)'}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=2.0, help="corpus size (audio hours)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "spoofstore-bench"
        / "build-corpus",
    )
    parser.add_argument(
        "--views",
        type=int,
        default=0,
        help="compare a clean build with builds of this many augmented views (per --recipe)",
    )
    parser.add_argument(
        "--recipe",
        action="append",
        default=None,
        help="augmentation recipe of the --views builds (repeatable) [default: five, see the "
        "module docstring]",
    )
    parser.add_argument(
        "--augment-splits",
        default="train,dev",
        help="splits the --views builds augment [default: train,dev: every utterance]",
    )
    parser.add_argument("--jobs", type=int, default=2, help="--jobs of the --views builds")
    parser.add_argument(
        "--backend",
        choices=["loky", "dask"],
        default="loky",
        help="dask: compare a 2-worker Dask LocalCluster build with --jobs 2",
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    corpus = make_bench_corpus(args.cache, args.hours)
    print(
        f"corpus: {corpus} ({(corpus / f'complete-{args.hours:g}h').read_text().strip()}; "
        f"ready in {time.perf_counter() - t0:.0f} s)"
    )
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.views:
        recipes = args.recipe or list(DEFAULT_RECIPES)
        bench_views(corpus, args.views, recipes, args.repeat, args.augment_splits, args.jobs)
        return

    configs = ("floor", "jobs1", "jobs2") if args.backend == "loky" else ("jobs2", "dask2")
    results: dict[str, list[dict]] = {name: [] for name in configs}
    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        for r in range(args.repeat):
            for name in configs:
                if name == "floor":
                    child = [_FLOOR, str(corpus / "flac")]
                    out = None
                else:
                    out = tmp / f"{name}-{r}.zarr"
                    child = [_RUNNER, str(corpus / "protocols"), str(corpus), str(out), name[-1]]
                    child.append("dask" if name.startswith("dask") else "loky")
                info, wall, peak, cpu = run_measured(child)
                row = {**info, "process_wall": wall, "tree_peak": peak, "cpu": cpu}
                if out is not None:
                    row["bytes"] = dir_bytes(out)
                    shutil.rmtree(out)
                results[name].append(row)
                print(
                    f"  run {r + 1} {name:5s}: build {info['wall']:6.1f} s "
                    f"(process {wall:6.1f} s), {info['audio'] / info['wall']:7.0f}x RT, "
                    f"CPU {cpu:6.1f} s, tree peak {peak / 2**20:6.0f} MiB, "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(row[key] for row in results[name])

    audio = results["jobs2"][0]["audio"]
    print(
        f"\naudio: {audio / 3600:.2f} h in {results['jobs2'][0]['n']} utterances; "
        f"median of {args.repeat} runs"
    )
    if args.backend == "dask":
        for name in configs:
            print(
                f"{name:8s} build wall {med(name, 'wall'):7.1f} s "
                f"(cluster start {med(name, 'start'):4.1f} s) "
                f"(process {med(name, 'process_wall'):7.1f} s), "
                f"{audio / med(name, 'wall'):5.0f}x RT, CPU {med(name, 'cpu'):5.1f} s, "
                f"moved to the writer "
                f"{med(name, 'moved') / (audio / 3600) / 1e6:6.0f} MB/audio-h, "
                f"store {med(name, 'bytes') / (audio / 3600) / 1e6:6.0f} MB/audio-h, "
                f"tree peak {med(name, 'tree_peak') / 2**20:5.0f} MiB"
            )
        ratio = med("dask2", "wall") / med("jobs2", "wall")
        pratio = med("dask2", "process_wall") / med("jobs2", "process_wall")
        cratio = med("dask2", "cpu") / med("jobs2", "cpu")
        print(
            f"\nDask overhead dask2 / jobs2: build wall {ratio:.2f}x, process {pratio:.2f}x, "
            f"CPU {cratio:.2f}x"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return
    print(
        f"{'config':8s} {'wall s':>8s} {'xRT':>8s} {'process s':>10s} {'proc xRT':>9s} "
        f"{'CPU s':>8s} {'CPU xRT':>8s} {'MB/audio-h':>11s} {'tree peak MiB':>14s} "
        f"{'main proc MiB':>13s}"
    )
    for name in ("floor", "jobs1", "jobs2"):
        wall, pwall, cpu = med(name, "wall"), med(name, "process_wall"), med(name, "cpu")
        size = f"{med(name, 'bytes') / (audio / 3600) / 1e6:11.0f}" if name != "floor" else " " * 11
        print(
            f"{name:8s} {wall:8.1f} {audio / wall:8.0f} {pwall:10.1f} {audio / pwall:9.0f} "
            f"{cpu:8.1f} {audio / cpu:8.0f} {size} {med(name, 'tree_peak') / 2**20:14.0f} "
            f"{med(name, 'maxrss') / 2**20:13.0f}"
        )
    ratio = med("jobs1", "wall") / med("jobs2", "wall")
    print(f"\nscaling jobs2 / jobs1 (build wall): {ratio:.2f}x")
    overhead = med("jobs1", "wall") / med("floor", "wall")
    print(f"pipeline overhead jobs1 / floor (wall): {overhead:.2f}x")
    cost = med("jobs2", "cpu") / med("jobs1", "cpu")
    print(
        f"CPU cost jobs2 / jobs1: {cost:.2f}x (1.00: parallelism adds no work; on an idle "
        f"2-core machine the jobs-2 speed-up is about 2 / this)"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
