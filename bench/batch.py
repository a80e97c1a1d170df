"""Jobs per hour of `python -m recapture batch` on local CPU workers with the tiny model:
`python bench/batch.py [--jobs 6] [--workers 1 2] [--train-steps 20]`.

The same jobs (one 4-frame 64x64 clip, a different camera move each) run once per worker count, each time
into a fresh output folder with a fresh local Ray; prints, per count, the wall time of the whole command
(Ray start-up, worker start-up and the one model load per worker included), jobs per hour from it, the mean
seconds of a job as its worker measured it (result.json), and the scaling ratio against the first count.
Needs the batch extra (ray). Run it with the dev environment's Python from the repository root.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from recapture.demo_clip import write_demo_clip  # noqa: E402
from recapture.svd import build_tiny_svd, save_svd_folder  # noqa: E402

MOVES = [("orbit_left", 15), ("orbit_right", 10), ("dolly_in", 20), ("pan_left", 10), ("truck_right", 10),
         ("pedestal_up", 10)]


def write_jobs(folder: Path, count: int, train_steps: int, sample_steps: int) -> Path:
    """``count`` jobs over one clip (a different move each) in ``folder/jobs.jsonl``."""
    lines = []
    for i in range(count):
        camera, amount = MOVES[i % len(MOVES)]
        lines.append(json.dumps({"id": f"job{i}", "video": "clip/recapture_sample.mp4",
                                 "depth": "clip/recapture_sample_depth", "depth_kind": "inverse", "near": 2.4,
                                 "far": 6, "camera": camera, "amount": amount, "svd": "tiny-svd", "size": "64x64",
                                 "steps": train_steps, "rank": 4, "sample_steps": sample_steps, "refine": 0.5}))
    (folder / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "jobs.jsonl"


def run(jobs: Path, out: Path, workers: int) -> tuple[float, list[dict]]:
    """Wall seconds of one batch command and its jobs' result.json records."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "recapture", "batch", str(jobs), "--out", str(out),
                           "--gpus-per-job", "0", "--workers", str(workers)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the batch with {workers} workers failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall, [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]


def load() -> str:
    """The 1-minute load average (other work competing for the cores), where the OS reports it."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=4)
    options = parser.parse_args()

    import ray
    import torch

    load_before = load()
    with tempfile.TemporaryDirectory(prefix="recapture-bench-batch-") as tmp:
        folder = Path(tmp)
        save_svd_folder(build_tiny_svd(), folder / "tiny-svd")
        write_demo_clip(folder / "clip", num_frames=4, width=64, height=64)
        jobs = write_jobs(folder, options.jobs, options.train_steps, options.sample_steps)
        rows = []
        for workers in options.workers:
            wall, records = run(jobs, folder / f"out-{workers}", workers)
            per_job = statistics.mean(r["timings_s"]["total"] for r in records)
            pids = {r["worker"]["pid"] for r in records}
            rows.append((workers, len(pids), wall, options.jobs / wall * 3600, per_job))

    print(f"device: {cpu_name()}, {os.cpu_count()} cores (1-minute load average before {load_before}, after "
          f"{load()}: other work on the machine slows the workers); torch {torch.__version__}, ray {ray.__version__}; "
          f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')}")
    print(f"command: python bench/batch.py --jobs {options.jobs} --workers {' '.join(map(str, options.workers))} "
          f"--train-steps {options.train_steps} --sample-steps {options.sample_steps}")
    print(f"jobs: {options.jobs} x (4 frames 64x64, tiny SVD, {options.train_steps} training steps, "
          f"{options.sample_steps} sampling steps, SDEdit 0.5), CPU workers (one core each)\n")
    print("| workers | workers used | wall s (whole command) | jobs / hour | mean s per job (worker) | scaling |")
    print("|---|---|---|---|---|---|")
    for workers, used, wall, per_hour, per_job in rows:
        print(f"| {workers} | {used} | {wall:.1f} | {per_hour:.0f} | {per_job:.2f} | x{per_hour / rows[0][3]:.2f} |")


if __name__ == "__main__":
    main()
