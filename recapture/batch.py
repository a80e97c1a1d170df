"""Batch re-capture on Ray: ``python -m recapture batch JOBS --out DIR`` re-films many clips, one job per
line of a JSON Lines or CSV file, on as many Ray workers as the cluster holds (one per GPU).

A job is the ``run`` subcommand's options as data: its argv is built from the line and parsed by the real
``run`` parser, so defaults, ranges and messages are ``run``'s own. Paths in a job are resolved against
the job file's folder and must stay inside the allowed roots. Each job's files appear in ``DIR/<id>/``
all at once (written in ``DIR/.partial-<id>-<random>/``, renamed when complete, ``result.json`` last);
failures are appended to ``DIR/failures.jsonl``; a rerun skips the finished jobs.

Ray is an optional extra (``pip install 'comfyui-recapture[batch]'``): it is imported inside the
functions that need it, never at module import, so the node pack and the other subcommands never need it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

INSTALL_HINT = "pip install 'comfyui-recapture[batch]'"
JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
RESULT = "result.json"
FAILURES = "failures.jsonl"
PARTIAL = ".partial-"
LOG = "log.txt"
LOCK = ".batch.lock"
# job keys naming files: resolved against the job file's folder, then held inside the allowed roots
PATH_KEYS = ("video", "depth", "camera_file", "svd")
# `run` options a job may not set, and why
SET_BY_BATCH = {"out": "each job writes DIR/<id>/ (the batch's --out)",
                "device": "the worker's device comes from --gpus-per-job",
                "help": "not a setting"}
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
OBJECT_STORE_BYTES = 256 * 2**20  # jobs pass settings and small results only: the store barely holds anything


class UsageError(ValueError):
    """A bad job file or bad flags: the batch stops before running anything (exit code 2)."""


class JobError(ValueError):
    """One job's own problem (unknown key, bad value, missing file, path outside the roots): recorded in
    failures.jsonl, and the batch goes on."""


@dataclass
class Job:
    """One line of the job file: its id, where it is (1-based line), and its raw key -> value settings."""

    id: str
    line: int
    settings: dict[str, Any]


# --- Reading the job file -----------------------------------------------------------------------------
def read_jobs(path: str | os.PathLike) -> list[Job]:
    """The jobs of a ``.jsonl`` or ``.csv`` file (data only: the json / csv modules, never code), with their
    ids checked; raises ``UsageError`` for a file that cannot be read, an invalid id or a duplicate."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"the job file {path} does not exist: give a .jsonl or .csv file with one clip per line")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise UsageError(f"the job file {path} must end in .jsonl (JSON Lines) or .csv, not {suffix or 'nothing'}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets save CSV with a BOM
            rows = list(_jsonl_rows(f, path) if suffix == ".jsonl" else _csv_rows(f, path))
    except UnicodeDecodeError as e:
        raise UsageError(f"the job file {path} is not UTF-8 text ({e}): save it as UTF-8") from None
    except csv.Error as e:
        raise UsageError(f"the job file {path} is not valid CSV ({e})") from None
    jobs = [Job(_job_id(settings.pop("id", None), line, path), line, settings) for line, settings in rows]
    _check_unique(jobs, path)
    return jobs


def _jsonl_rows(f, path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line; a line that is not a JSON object is a usage error."""
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            value = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path} line {line} is not JSON ({e.msg}): write one JSON object per line") from None
        except _DuplicateKey as e:
            raise UsageError(f"{path} line {line} gives {e.args[0]!r} twice: keep one") from None
        if not isinstance(value, dict):
            raise UsageError(f"{path} line {line} must be a JSON object ({{\"video\": ...}}), not "
                             f"{type(value).__name__}")
        yield line, value


class _DuplicateKey(Exception):
    """A JSON object naming a key twice (json keeps the last one silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise _DuplicateKey(k)
    return dict(pairs)


def _csv_rows(f, path: Path) -> Iterator[tuple[int, dict]]:
    """(line number where the record starts, header -> cell) per record; empty cells are left out (the
    option's default). Cells are strings, whatever they look like (``=1+1`` included)."""
    reader = csv.reader(f)
    header = next(reader, None)
    if not header:
        raise UsageError(f"{path} has no header row: its first line names the columns (video,depth,...)")
    keys = [k.strip() for k in header]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UsageError(f"{path}: the header names the column {twice[0]!r} twice: keep one")
    previous_end = reader.line_num
    for row in reader:
        start, previous_end = previous_end + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) > len(keys):
            raise UsageError(f"{path} line {start} has {len(row)} cells but the header names {len(keys)} columns")
        yield start, {k: cell for k, cell in zip(keys, row) if cell != ""}


def _job_id(given: Any, line: int, path: Path) -> str:
    """The job's id: given, or its line number; it names ``DIR/<id>/`` so it must be a plain file name."""
    job_id = str(line) if given is None or given == "" else str(given)
    if not JOB_ID.fullmatch(job_id) or job_id.startswith(".") or job_id == FAILURES:
        raise UsageError(f"{path} line {line}: the id {job_id!r} is not usable as a folder name: use 1-100 of "
                         "A-Z a-z 0-9 . _ - (not starting with a dot)")
    return job_id


def _check_unique(jobs: list[Job], path: Path) -> None:
    """Ids must differ, also in case alone (they are folder names on case-insensitive disks too)."""
    seen: dict[str, Job] = {}
    for job in jobs:
        first = seen.setdefault(job.id.casefold(), job)
        if first is not job:
            raise UsageError(f"{path}: lines {first.line} and {job.line} have the same id {job.id!r}: give each "
                             "job its own id")


# --- One job's settings -------------------------------------------------------------------------------
def run_parser() -> argparse.ArgumentParser:
    """The ``run`` subcommand's parser, raising ``JobError`` instead of exiting on a bad value."""
    from . import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no public way
    run = sub.choices["run"]

    def error(message: str):
        raise JobError(message)

    run.error = error  # argparse's documented hook: it must not return
    return run


def job_argv(settings: dict[str, Any], parser: argparse.ArgumentParser) -> list[str]:
    """``run``'s argv for a job's settings: keys are option names without dashes (``-`` or ``_``); None
    leaves an option out. Values are joined as ``--flag=value`` so a value can never be read as an option."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    given: dict[str, str] = {}
    for key, value in settings.items():
        dest = str(key).strip().lstrip("-").replace("-", "_")
        if dest in given:  # sample-steps and sample_steps: argparse would silently keep the last
            raise JobError(f"{given[dest]!r} and {key!r} are the same option: keep one")
        given[dest] = key
        if dest in SET_BY_BATCH:
            raise JobError(f"the key {key!r} cannot be set in a job: {SET_BY_BATCH[dest]}")
        if dest not in actions:
            raise JobError(f"unknown key {key!r}: use the `run` options without dashes "
                           f"(python -m recapture run --help), e.g. video, depth_kind, camera, amount")
        if value is None:
            continue
        if isinstance(value, (dict, list)):
            raise JobError(f"{key} must be a number, a string or true/false, not a JSON {type(value).__name__}")
        argv += _option(actions[dest], key, value)
    return argv


def _option(action: argparse.Action, key: str, value: Any) -> list[str]:
    """The argv words for one option: switches take true/false, the rest ``--flag=value``."""
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return [flag if _switch(key, value) else f"--no-{flag[2:]}"]
    if action.nargs == 0:  # store_true
        return [flag] if _switch(key, value) else []
    if isinstance(value, bool):
        raise JobError(f"{key} takes a value, not {str(value).lower()}")
    return [f"{flag}={value}"]


def _switch(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE | FALSE:
        return text in TRUE
    raise JobError(f"{key} must be true or false, got {value!r}")


def parse_job(job: Job, parser: argparse.ArgumentParser, base: Path, roots: list[str],
              out: Path) -> argparse.Namespace:
    """The job's ``run`` options, parsed by ``run``'s parser (defaults from ``recapture.config``), with its
    file paths resolved (``resolve_path``), its LoRA name checked and ``out`` = ``out/<id>``; raises
    ``JobError``."""
    args = parser.parse_args([*job_argv(job.settings, parser), f"--out={out / job.id}"])
    for key in PATH_KEYS:
        if getattr(args, key, None):
            setattr(args, key, resolve_path(key, getattr(args, key), base, roots))
    if not JOB_ID.fullmatch(args.lora_name) or args.lora_name.startswith("."):
        raise JobError(f"lora_name {args.lora_name!r} must be a plain file name: 1-100 of A-Z a-z 0-9 . _ -")
    return args


def resolve_path(key: str, value: str, base: Path, roots: list[str]) -> str:
    """``value`` resolved against ``base`` (the job file's folder) with every symlink followed; raises
    ``JobError`` when that lies outside every allowed root or does not exist."""
    real = os.path.realpath(os.path.join(base, value))  # an absolute value stays as it is
    if not any(_inside(real, root) for root in roots):
        raise JobError(f"{key} {value!r} resolves to {real}, outside the allowed folders ({', '.join(roots)}): move "
                       "it inside or allow its folder with --allow-root")
    if not os.path.exists(real):
        raise JobError(f"{key} {value!r}: {real} does not exist")
    if os.path.isdir(real):  # a frames folder or a diffusers model: every file in it must stay inside too
        for folder, dirs, files in os.walk(real):
            for name in dirs + files:
                inner = os.path.realpath(os.path.join(folder, name))
                if not any(_inside(inner, root) for root in roots):
                    raise JobError(f"{key} {value!r} holds {os.path.join(folder, name)}, which leads to {inner}, "
                                   f"outside the allowed folders ({', '.join(roots)}): remove the link or allow its "
                                   "folder with --allow-root")
    return real


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


# --- The output folder --------------------------------------------------------------------------------
def is_finished(out: Path, job_id: str) -> bool:
    """A job is finished only when ``DIR/<id>/result.json`` exists (it is written last)."""
    return (out / job_id / RESULT).is_file()


def hold_lock(out: Path):
    """An open ``DIR/.batch.lock`` held exclusively (a context manager: closing it lets go; so does the
    process's death): a second batch on the same folder would remove this one's unfinished folders. Where
    the OS has no ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        return contextlib.nullcontext()
    f = open(out / LOCK, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UsageError(f"another batch is writing to {out}: wait for it to end, or give another --out") from None
    return f


def remove_partials(out: Path) -> int:
    """Removes the ``.partial-*`` folders an interrupted run left in ``out``; returns how many."""
    leftovers = [p for p in out.glob(PARTIAL + "*") if p.is_dir() and not p.is_symlink()]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return len(leftovers)


def record_failure(out: Path, job_id: str, error: str, kind: str) -> None:
    """Appends ``{"id", "error", "type", "time"}`` to ``DIR/failures.jsonl``, on disk before returning."""
    line = json.dumps({"id": job_id, "error": error, "type": kind,
                       "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    with open(out / FAILURES, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def frames_sha256(frames) -> str:
    """sha256 of ``(N, H, W, 3)`` frames as float32 C-order bytes (the encoded mp4 is not reproducible)."""
    import numpy as np

    data = np.ascontiguousarray(frames.detach().float().cpu().numpy(), dtype=np.float32)
    return hashlib.sha256(data.tobytes()).hexdigest()


def _publish(partial: Path, target: Path) -> None:
    """Renames the complete ``partial`` folder to ``target``; an unfinished ``target`` (no result.json) is
    replaced, a finished one never."""
    if target.exists() and not (target / RESULT).exists():
        shutil.rmtree(target)
    os.rename(partial, target)  # fails rather than replace a finished folder


# --- A worker -----------------------------------------------------------------------------------------
def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name, distribution in (("recapture", "comfyui-recapture"), ("torch", "torch"), ("diffusers", "diffusers"),
                               ("ray", "ray")):
        try:
            found[name] = version(distribution)
        except PackageNotFoundError:
            found[name] = None
    if found["recapture"] is None:  # the pack used from a checkout (ComfyUI's custom_nodes), not installed
        match = re.search(r'^version = "([^"]+)"', _read(Path(__file__).parents[1] / "pyproject.toml"), re.M)
        found["recapture"] = match.group(1) if match else None
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


class JobWorker:
    """A worker (a Ray actor: ``ray.remote(...)(JobWorker)``): runs jobs one after another on its device,
    keeping the SVD model loaded between jobs."""

    def __init__(self, device: str):
        self.device = device
        self.models = None
        self.model_key = None
        self.loads = 0

    def models_for(self, args: argparse.Namespace):
        """SVD for this job, loaded by the CLI's loader only when the model or device changes. The loader
        picks the dtype from the device, so (path, device) fixes (path, dtype, device). One model at a time:
        a second would double the device memory."""
        from . import cli

        key = (os.path.realpath(args.svd), args.device)
        if key != self.model_key:
            self.models = self.model_key = None  # free the old one before loading the new
            _empty_device_cache()
            self.models = cli._load_models(args)
            self.model_key = key
            self.loads += 1
        return self.models

    def run(self, job_id: str, settings: dict[str, Any], out: str) -> dict[str, Any]:
        """Runs one job into ``out/<job_id>/``; returns ``{"ok": True, "result": ...}`` or ``{"ok": False,
        "error", "type"}`` (any exception, out of memory included: the worker lives on for the next job)."""
        from . import cli
        from .memory import OutOfMemory

        partial = Path(out) / f"{PARTIAL}{job_id}-{secrets.token_hex(4)}"
        partial.mkdir()
        try:
            args = argparse.Namespace(**settings, out=str(partial), device=self.device)
            with open(partial / LOG, "w", encoding="utf-8") as log, contextlib.redirect_stderr(log):
                result = self._run(job_id, args)
            result["settings"]["out"] = str(Path(out) / job_id)
            _write_json(partial / RESULT, result)  # last: its presence says the folder is complete
            _publish(partial, Path(out) / job_id)
            return {"ok": True, "result": result}
        except Exception as e:  # noqa: BLE001 - a job's failure of any kind is recorded, the batch goes on
            shutil.rmtree(partial, ignore_errors=True)
            message = str(e.with_advice(cli._ways_out(e))) if isinstance(e, OutOfMemory) else str(e)
            return {"ok": False, "error": message or repr(e), "type": type(e).__name__}
        finally:
            _empty_device_cache()

    def _run(self, job_id: str, args: argparse.Namespace) -> dict[str, Any]:
        """The method's stages as ``run`` does them, timed; the result.json record."""
        import torch

        from . import cli

        cuda = args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        timings, start = {}, time.perf_counter()
        with _timed(timings, "anchor"):
            frames, fps, anchor, mask, path = cli.render_stage1(args)
            cli.write_stage1(Path(args.out), fps, anchor, mask, path)
        with _timed(timings, "load_model"):
            models = self.models_for(args)
        with _timed(timings, "train"):
            lora = cli._train(args, models, anchor, mask, frames)
        with _timed(timings, "sample"):
            refilmed = cli._sample(args, models, lora, anchor, mask, fps)
        timings["total"] = time.perf_counter() - start
        return {
            "id": job_id,
            "settings": {k: v for k, v in vars(args).items() if k != "func"},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "peak_device_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            "versions": _versions(),
            "worker": {"pid": os.getpid(), "host": socket.gethostname(), "device": args.device,
                       "model_loads": self.loads},
            "frames_sha256": frames_sha256(refilmed),
            "frames_shape": list(refilmed.shape),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


# --- The driver ---------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(f"the batch command needs Ray: {INSTALL_HINT}") from None
    return ray


def connect(ray, address: str | None) -> None:
    """A local Ray (``address`` None) or the cluster at ``address`` (``auto``, ``ray://host:10001``)."""
    with warnings.catch_warnings():  # Ray's notice about a future default for CPU-only workers: not ours
        warnings.simplefilter("ignore", FutureWarning)
        try:
            if address is None:
                ray.init(include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, num_cpus=_cpu_count(),
                         logging_level=logging.WARNING)
            else:
                ray.init(address=address, logging_level=logging.WARNING)
        except Exception as e:  # noqa: BLE001 - whatever stops Ray from starting, nothing can run
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise UsageError(f"could not start {where} ({type(e).__name__}: {e}): check --address, or that "
                             f"{'it is running (ray status)' if address else 'this machine can run Ray'}") from e


def _cpu_count() -> int:
    """The cores this process may use (its affinity where the OS has one: containers pin fewer)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(resources: dict[str, float], gpus_per_job: float, wanted: int | None, jobs: int) -> int:
    """How many workers to start: what the cluster holds (its GPUs / gpus_per_job, or its CPUs for CPU
    workers), at most ``wanted`` and the number of jobs; raises ``UsageError`` when none fits."""
    if gpus_per_job > 0:
        gpus = resources.get("GPU", 0)
        if gpus < gpus_per_job:
            raise UsageError(f"the Ray cluster has {gpus:g} GPUs but each job needs {gpus_per_job:g} "
                             "(--gpus-per-job): run on a machine with a GPU, or use --gpus-per-job 0 for CPU workers")
        fits = int(gpus // gpus_per_job)
    else:
        fits = max(1, int(resources.get("CPU", 1)))
    if wanted is not None and wanted > fits:
        print(f"batch: only {fits} workers fit in the cluster, not {wanted}", file=sys.stderr)
    return max(1, min(fits, wanted or fits, jobs))


def run_batch(options: argparse.Namespace) -> int:
    """The ``batch`` command: 0 when every job succeeded, 1 when any failed, 2 for usage errors."""
    try:
        ray = _import_ray()
        jobs, out, roots = _prepare(options)
        lock = hold_lock(out)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with lock:
        return _run_jobs(ray, options, jobs, out, roots)


def _run_jobs(ray, options: argparse.Namespace, jobs: list[Job], out: Path, roots: list[str]) -> int:
    """Skips the finished jobs, records the invalid ones and runs the rest on Ray (``run_batch``)."""
    removed = remove_partials(out)
    if removed:
        print(f"batch: removed {removed} unfinished folder(s) of an interrupted run", file=sys.stderr)
    todo = [job for job in jobs if not is_finished(out, job.id)]
    if len(todo) < len(jobs):
        print(f"batch: {len(jobs) - len(todo)} of {len(jobs)} jobs already finished in {out}: skipped",
              file=sys.stderr)
    ready, invalid = _parse_jobs(todo, Path(options.jobs).resolve().parent, roots, out)
    progress = None
    try:
        pool = _Pool(ray, options, len(ready)) if ready else None  # a cluster without a GPU stops us here
        progress = Progress(len(todo))
        for job, error in invalid:
            progress.failed(out, job.id, str(error), type(error).__name__)
        if pool is not None:
            pool.run(ready, out, progress)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("batch: interrupted; rerun the same command to go on (finished jobs are kept)", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
        if ready:
            ray.shutdown()
    print(f"batch: {progress.done} done, {progress.failures} failed, {len(jobs) - len(todo)} skipped"
          + (f"; failures in {out / FAILURES}" if progress.failures else ""), file=sys.stderr)
    return 1 if progress.failures else 0


def _prepare(options: argparse.Namespace) -> tuple[list[Job], Path, list[str]]:
    """Checks the flags and reads the job file before anything runs: (jobs, DIR, allowed roots)."""
    if options.gpus_per_job < 0:
        raise UsageError(f"--gpus-per-job must be 0 (CPU workers) or more, got {options.gpus_per_job:g}")
    if options.workers is not None and options.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {options.workers}")
    jobs = read_jobs(options.jobs)
    roots = []
    for root in options.allow_root or [str(Path(options.jobs).resolve().parent)]:
        if not os.path.isdir(root):
            raise UsageError(f"--allow-root {root} is not a folder")
        roots.append(os.path.realpath(root))
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder")
    out.mkdir(parents=True, exist_ok=True)
    return jobs, out, roots


def _parse_jobs(jobs: list[Job], base: Path, roots: list[str], out: Path
                ) -> tuple[list[tuple[Job, dict]], list[tuple[Job, JobError]]]:
    """Each job's ``run`` settings (a plain dict for the worker), or its ``JobError``."""
    parser = run_parser()
    ready, invalid = [], []
    for job in jobs:
        try:
            settings = vars(parse_job(job, parser, base, roots, out))
        except JobError as e:
            invalid.append((job, e))
            continue
        ready.append((job, {k: v for k, v in settings.items() if k not in ("func", "out", "device")}))
    return ready, invalid


class _Pool:
    """Ray workers for the jobs: connects (``connect``) and sizes the pool (``worker_count``) on creation,
    so that a cluster that cannot run a job is a usage error before anything runs."""

    def __init__(self, ray, options: argparse.Namespace, jobs: int):
        connect(ray, options.address)
        self.ray = ray
        self.count = worker_count(ray.cluster_resources(), options.gpus_per_job, options.workers, jobs)
        self.gpu = options.gpus_per_job > 0
        self.device = "cuda" if self.gpu else "cpu"  # Ray shows a GPU worker only its own GPU(s)
        self.actor = ray.remote(num_gpus=options.gpus_per_job, num_cpus=1)(JobWorker)
        print(f"batch: {jobs} jobs on {self.count} {'GPU' if self.gpu else 'CPU'} worker(s) "
              f"({options.address or 'local Ray'})", file=sys.stderr)

    def run(self, ready: list[tuple[Job, dict]], out: Path, progress: Progress) -> None:
        """Runs the jobs in file order, a job per idle worker, recording each end as it comes."""
        from ray.exceptions import RayError, RayTaskError

        idle = [self.actor.remote(self.device) for _ in range(self.count)]
        queue = list(reversed(ready))
        running: dict[Any, tuple[Job, Any]] = {}
        while queue or running:
            while queue and idle:
                job, settings = queue.pop()
                worker = idle.pop()
                running[worker.run.remote(job.id, settings, str(out))] = (job, worker)
            progress.running(len(running))
            ends, _ = self.ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ends:
                job, worker = running.pop(ref)
                try:
                    reply = self.ray.get(ref)
                except RayTaskError as e:  # raised outside the job's own try (DIR not writable...): worker alive
                    cause = e.cause or e
                    reply = {"ok": False, "error": str(cause), "type": type(cause).__name__}
                except RayError as e:  # the worker died (killed for memory, crashed): a fresh one replaces it
                    reply = {"ok": False, "error": f"the worker died: {e}", "type": type(e).__name__}
                    worker = self.actor.remote(self.device)
                idle.append(worker)
                if reply["ok"]:
                    progress.finished(job.id, reply["result"])
                else:
                    progress.failed(out, job.id, reply["error"], reply["type"])


class Progress:
    """Progress on stderr: a line per finished or failed job, and a bar with done, failed, running, ETA."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.done = self.failures = self._running = 0
        self.bar = tqdm(total=total, desc="batch", unit="job", file=sys.stderr, dynamic_ncols=True)
        self._show()

    def finished(self, job_id: str, result: dict) -> None:
        self.done += 1
        self.bar.write(f"done   {job_id} in {result['timings_s']['total']:.1f} s (worker pid "
                       f"{result['worker']['pid']})", file=sys.stderr)
        self.bar.update(1)
        self._show()

    def failed(self, out: Path, job_id: str, error: str, kind: str) -> None:
        """Records the failure in failures.jsonl, then shows it."""
        record_failure(out, job_id, error, kind)
        self.failures += 1
        self.bar.write(f"failed {job_id}: {error.splitlines()[0] if error else ''}", file=sys.stderr)
        self.bar.update(1)
        self._show()

    def running(self, count: int) -> None:
        if count != self._running:
            self._running = count
            self._show()

    def _show(self) -> None:
        self.bar.set_postfix(done=self.done, failed=self.failures, running=self._running)

    def close(self) -> None:
        self.bar.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``batch`` subcommand's options."""
    parser.add_argument("jobs", metavar="JOBS",
                        help="job file: .jsonl (one JSON object per line) or .csv (a header row); keys are `run`'s "
                             "options without dashes, plus an optional id")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: DIR/<id>/ per job, DIR/failures.jsonl")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to use: auto (this machine's running cluster) or ray://host:10001; "
                             "omitted: start a local Ray")
    parser.add_argument("--gpus-per-job", type=float, default=1.0,
                        help="GPUs per worker (default 1); 0: CPU workers, for machines without a GPU")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers to start (default: as many as the cluster holds, one per GPU; on CPU "
                             "one per core, each with its own copy of the model)")
    parser.add_argument("--allow-root", action="append", metavar="PATH",
                        help="folder the jobs' files may come from (repeatable; default: the job file's folder); "
                             "paths are checked with symlinks followed")
