"""`python -m recapture batch`: many clips on local Ray workers (CPU, the tiny model), as a person runs it:
finished folders, failures.jsonl, resuming after a kill, model reuse, paths held inside the allowed
roots, and the pack without Ray.

Every batch runs as a subprocess in its own session, so that it and the Ray processes it starts can be
killed as one process group and checked gone afterwards (``ray stop --force`` would also stop other
people's Ray on a shared machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from comfy_harness import REPO
from conftest import save_tiny_svd_folder
from recapture.demo_clip import write_demo_clip

# the tiny model's settings: a few seconds per job on one CPU core
SMALL = {"depth": "clip/recapture_sample_depth", "depth_kind": "inverse", "near": 2.4, "far": 6, "svd": "tiny-svd",
         "size": "64x64", "steps": 2, "rank": 4, "sample_steps": 2, "refine": 0.5}
# three different jobs, the same in every batch below (so their files can be compared across batches)
JOBS = [{"id": "j1", "video": "clip/recapture_sample.mp4", "camera": "orbit_left", "amount": 15, **SMALL},
        {"id": "j2", "video": "clip/recapture_sample.mp4", "camera": "orbit_right", "amount": 10, **SMALL},
        {"id": "j3", "video": "clip/recapture_sample.mp4", "camera": "dolly_in", "amount": 20, "seed": 3, **SMALL}]
# usage statistics off: no network, no notice
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}


def needs_ray():
    pytest.importorskip("ray", reason="the batch extra is not installed: pip install 'comfyui-recapture[batch]'")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The allowed root: the tiny SVD folder and a 4-frame 64x64 clip with its depth."""
    folder = tmp_path_factory.mktemp("batch-data")
    save_tiny_svd_folder(folder / "tiny-svd")
    write_demo_clip(folder / "clip", num_frames=4, width=64, height=64)
    return folder


def write_jsonl(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    import psutil

    alive = []
    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the batch's whole process group (driver and Ray), then waits until none of it lives."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(process.pid), "Ray processes outlived the batch"


def start_batch(jobs: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recapture", "batch", str(jobs), "--out", str(out), *flags],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def run_batch(jobs: Path, out: Path, *flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Runs a batch to its end (CPU workers unless flags say otherwise); nothing of it outlives it."""
    process = start_batch(jobs, out, *(flags or ("--gpus-per-job", "0")))
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process)  # Ray's processes, should the driver have left any
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def batch_here(capsys, jobs: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    """The batch command in this process, for job files with no runnable job (Ray is never started)."""
    from recapture.cli import main

    capsys.readouterr()
    code = main(["batch", str(jobs), "--out", str(out), *(flags or ("--gpus-per-job", "0"))])
    captured = capsys.readouterr()
    assert "worker(s)" not in captured.err  # Ray did not start
    return subprocess.CompletedProcess(["batch"], code, captured.out, captured.err)


def result(out: Path, job_id: str) -> dict:
    return json.loads((out / job_id / "result.json").read_text())


def failures(out: Path) -> list[dict]:
    path = out / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_same_job(a: Path, b: Path) -> None:
    """Two runs of a job made the same re-filmed frames, anchor arrays and LoRA tensors."""
    from safetensors.torch import load_file

    assert json.loads((a / "result.json").read_text())["frames_sha256"] == \
        json.loads((b / "result.json").read_text())["frames_sha256"]
    anchors = np.load(a / "anchor.npz"), np.load(b / "anchor.npz")
    for name in ("anchor", "mask"):
        np.testing.assert_array_equal(anchors[0][name], anchors[1][name])
    for file in ("recapture_temporal.safetensors", "recapture_spatial.safetensors"):
        first, second = load_file(a / file), load_file(b / file)
        assert first.keys() == second.keys()
        for key in first:
            assert first[key].equal(second[key]), f"{file} {key}"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The three jobs, uninterrupted, on one worker: the output folder."""
    needs_ray()
    out = tmp_path_factory.mktemp("reference") / "out"
    done = run_batch(write_jsonl(data / "reference.jsonl", JOBS), out, "--gpus-per-job", "0", "--workers", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_failed_job_is_recorded_and_the_others_finish(data, reference, tmp_path):
    """Three jobs, one with a missing video, on two workers: two finished folders with everything `run`
    writes and result.json; one line in failures.jsonl naming the missing file; exit code 1."""
    missing = {**JOBS[0], "id": "missing", "video": "clip/no_such_clip.mp4"}
    out = tmp_path / "out"
    done = run_batch(write_jsonl(data / "one_bad.jsonl", [JOBS[0], missing, JOBS[1]]), out,
                     "--gpus-per-job", "0", "--workers", "2")
    assert done.returncode == 1, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".batch.lock", "failures.jsonl", "j1", "j2"]
    for job_id in ("j1", "j2"):
        files = {p.name for p in (out / job_id).iterdir()}
        assert {"anchor.mp4", "mask.mp4", "anchor.npz", "camera_path.json", "recapture_temporal.safetensors",
                "recapture_spatial.safetensors", "recaptured.mp4", "result.json"} <= files
        record = result(out, job_id)
        assert record["id"] == job_id and record["frames_shape"] == [4, 64, 64, 3]
        assert record["settings"]["video"] == os.path.realpath(data / "clip" / "recapture_sample.mp4")
        assert record["settings"]["size"] == [64, 64] and record["settings"]["steps"] == 2
        assert record["settings"]["fov"] == 60.0  # run's default, from recapture.config
        assert set(record["timings_s"]) == {"anchor", "load_model", "train", "sample", "total"}
        assert record["peak_device_memory_bytes"] is None  # a CPU reports none
        assert record["versions"]["torch"] and record["versions"]["ray"]
        # a second worker, other neighbours: the same files as the one-worker run
        assert_same_job(out / job_id, reference / job_id)
    [failure] = failures(out)
    assert failure["id"] == "missing" and failure["type"] == "JobError"
    assert f"{os.path.realpath(data / 'clip' / 'no_such_clip.mp4')} does not exist" in failure["error"]
    assert set(failure) == {"id", "error", "type", "time"}
    assert "failed missing:" in done.stderr and "done   j1" in done.stderr
    assert "done=2" in done.stderr and "failed=1" in done.stderr  # the overall bar


def test_workers_keep_the_model_between_jobs(reference):
    """Three jobs on one worker: one process, one model load for all three."""
    records = [result(reference, job["id"]) for job in JOBS]
    assert {r["worker"]["pid"] for r in records} == {records[0]["worker"]["pid"]}
    assert [r["worker"]["model_loads"] for r in records] == [1, 1, 1]
    assert records[0]["timings_s"]["load_model"] > 10 * records[2]["timings_s"]["load_model"]
    assert len({r["frames_sha256"] for r in records}) == 3  # three different jobs


def test_a_killed_batch_resumes_where_it_stopped(data, reference, tmp_path):
    """The whole batch killed (SIGKILL to its process group) once the first job finished; the rerun
    keeps that job as it is, clears the half-written folder and finishes the rest, with the same files as
    an uninterrupted run (the second job now runs on a fresh worker: the model reuse left nothing behind)."""
    jobs = write_jsonl(data / "resume.jsonl", JOBS)
    out = tmp_path / "out"
    process = start_batch(jobs, out, "--gpus-per-job", "0", "--workers", "1")
    try:
        deadline = time.monotonic() + 240
        while not (out / "j1" / "result.json").exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first job did not finish"
            time.sleep(0.1)
    finally:
        kill_group(process)
    first = (out / "j1" / "result.json").read_bytes(), (out / "j1" / "result.json").stat().st_mtime_ns
    assert not (out / "j3").exists()

    done = run_batch(jobs, out, "--gpus-per-job", "0", "--workers", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 of 3 jobs already finished" in done.stderr
    assert ((out / "j1" / "result.json").read_bytes(), (out / "j1" / "result.json").stat().st_mtime_ns) == first
    assert result(out, "j2")["worker"]["pid"] != json.loads(first[0])["worker"]["pid"]
    assert not list(out.glob(".partial-*")) and not failures(out)
    for job in JOBS:
        assert_same_job(out / job["id"], reference / job["id"])


def test_paths_stay_inside_the_allowed_roots(data, tmp_path):
    """A video symlinked from outside the allowed root, and one given as ../outside.mp4, fail with a
    message naming the path and --allow-root; nothing is read. --allow-root admits the outside folder."""
    needs_ray()
    outside = Path(os.path.realpath(data.parent)) / "outside.mp4"
    outside.write_bytes((data / "clip" / "recapture_sample.mp4").read_bytes())
    (data / "innocent.mp4").unlink(missing_ok=True)
    (data / "innocent.mp4").symlink_to(outside)
    jobs = write_jsonl(data / "escapes.jsonl", [{**JOBS[0], "id": "symlink", "video": "innocent.mp4"},
                                                {**JOBS[0], "id": "dotdot", "video": "../outside.mp4"}])
    done = run_batch(jobs, tmp_path / "out")
    assert done.returncode == 1, done.stderr[-3000:]
    by_id = {f["id"]: f["error"] for f in failures(tmp_path / "out")}
    assert set(by_id) == {"symlink", "dotdot"}
    for job_id, given in (("symlink", "innocent.mp4"), ("dotdot", "../outside.mp4")):
        assert given in by_id[job_id] and str(outside) in by_id[job_id]
        assert "outside the allowed folders" in by_id[job_id] and "--allow-root" in by_id[job_id]
    assert "worker(s)" not in done.stderr  # no job was runnable: Ray never started

    from recapture.batch import Job, JobError, parse_job, run_parser
    settings = {k: v for k, v in JOBS[0].items() if k != "id"}
    allowed = parse_job(Job("dotdot", 2, {**settings, "video": "../outside.mp4"}), run_parser(), data,
                        [os.path.realpath(data), os.path.realpath(data.parent)], tmp_path)
    assert allowed.video == str(outside)
    with pytest.raises(JobError, match="outside the allowed folders"):  # a root is a folder, not a prefix
        parse_job(Job("x", 1, {**settings, "video": str(data) + "-evil/clip.mp4"}), run_parser(), data,
                  [os.path.realpath(data)], tmp_path)
    # a frames folder inside the root whose frame links out is refused too, naming the frame
    folder = data / "linked_depth"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(data / "clip" / "recapture_sample_depth", folder)
    (folder / "0001.png").unlink()
    (folder / "0001.png").symlink_to(outside)
    with pytest.raises(JobError, match=r"linked_depth.*holds .*0001.png, which leads to .*outside.mp4, outside the "
                                       r"allowed folders"):
        parse_job(Job("x", 1, {**settings, "depth": "linked_depth"}), run_parser(), data, [os.path.realpath(data)],
                  tmp_path)


def test_job_files_are_data(data, tmp_path, capsys):
    """CSV cells are strings whatever they look like (a formula included); a value cannot become an
    option; unknown keys and bad values are that job's failure in argparse's words; bad ids and duplicate
    ids are usage errors before anything runs. (No job here is runnable, so no Ray starts: the command
    runs in this process.)"""
    needs_ray()
    from recapture.batch import read_jobs

    formula = '=HYPERLINK("http://x","y")'
    quoted = '"' + formula.replace('"', '""') + '"'  # as a spreadsheet saves it
    csv_file = data / "jobs.csv"
    csv_file.write_text("id,video,depth,depth_kind,camera,svd,amount\n"
                        f"formula,clip/recapture_sample.mp4,clip/recapture_sample_depth,inverse,{quoted},tiny-svd,\n"
                        "\n"
                        "option,--help,clip/recapture_sample_depth,inverse,orbit_left,tiny-svd,-5\n")
    jobs = read_jobs(csv_file)
    assert [(j.id, j.line) for j in jobs] == [("formula", 2), ("option", 4)]
    assert jobs[0].settings["camera"] == formula and "amount" not in jobs[0].settings  # empty cell: the default
    out = tmp_path / "out"
    done = batch_here(capsys, csv_file, out)
    assert done.returncode == 1
    by_id = {f["id"]: f["error"] for f in failures(out)}
    assert by_id["formula"] == f"argument --camera: invalid choice: {formula!r} (choose from " + \
        by_id["formula"].split("(choose from ", 1)[1]
    # a file name, not --help
    assert by_id["option"] == f"video '--help': {os.path.realpath(data / '--help')} does not exist"

    wrong = write_jsonl(data / "wrong.jsonl", [{**JOBS[0], "id": "a", "colour": "red"},
                                               {**JOBS[0], "id": "b", "steps": 0},
                                               {**JOBS[0], "id": "c", "out": "/etc"},
                                               {**JOBS[0], "id": "d", "lora_name": "../../x"}])
    done = batch_here(capsys, wrong, tmp_path / "wrong")
    by_id = {f["id"]: f["error"] for f in failures(tmp_path / "wrong")}
    assert done.returncode == 1 and "unknown key 'colour'" in by_id["a"]
    assert by_id["b"] == "argument --steps: 0 is outside 1..100000"
    assert "cannot be set in a job" in by_id["c"] and "must be a plain file name" in by_id["d"]

    for bad, message in (([{**JOBS[0], "id": "x"}, {**JOBS[1], "id": "X"}], "lines 1 and 2 have the same id 'X'"),
                         ([{**JOBS[0], "id": ".."}], "not usable as a folder name"),
                         ([JOBS[0], JOBS[1], {**JOBS[2], "id": 4}, {**JOBS[2], "id": None}],
                          "lines 3 and 4 have the same id '4'")):
        done = batch_here(capsys, write_jsonl(data / "bad.jsonl", bad), tmp_path / "bad")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert not (tmp_path / "bad").exists()  # nothing ran
    twice = write_jsonl(data / "twice.jsonl", [{**JOBS[0], "sample-steps": 3}])
    done = batch_here(capsys, twice, tmp_path / "twice")
    assert done.returncode == 1
    assert failures(tmp_path / "twice")[0]["error"] == "'sample_steps' and 'sample-steps' are the same option: keep one"
    (data / "twice.jsonl").write_text('{"id": "a", "steps": 1, "steps": 2}\n')
    done = batch_here(capsys, data / "twice.jsonl", tmp_path / "bad")
    assert done.returncode == 2 and "line 1 gives 'steps' twice" in done.stderr
    (data / "broken.jsonl").write_text(json.dumps(JOBS[0]) + "\n{video: x}\n")
    done = batch_here(capsys, data / "broken.jsonl", tmp_path / "bad")
    assert done.returncode == 2 and "line 2 is not JSON" in done.stderr
    done = batch_here(capsys, data / "broken.jsonl", tmp_path / "bad", "--gpus-per-job", "-1")
    assert done.returncode == 2 and "--gpus-per-job must be 0" in done.stderr


def test_one_batch_at_a_time_per_output_folder(data, tmp_path, capsys):
    """A second batch on a folder another batch is writing to stops at once (it would remove the first
    one's unfinished folders)."""
    needs_ray()
    from recapture.batch import hold_lock

    out = tmp_path / "out"
    out.mkdir()
    with hold_lock(out):
        done = batch_here(capsys, write_jsonl(data / "locked.jsonl", [JOBS[0]]), out)
    assert done.returncode == 2 and f"another batch is writing to {out}" in done.stderr
    assert not (out / "failures.jsonl").exists()


def test_without_ray_the_batch_says_how_to_install_it_and_the_rest_works(data, tmp_path):
    """Ray hidden: `batch` prints the pip install hint and exits 2; the library, the CLI and `anchor` do
    not import Ray at all."""
    hide = "import sys; sys.modules['ray'] = None; "
    code = (hide + "from recapture.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "batch", str(data / "reference.jsonl"), "--out",
                           str(tmp_path / "out"), "--gpus-per-job", "0"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "error: the batch command needs Ray: pip install 'comfyui-recapture[batch]'" in done.stderr
    done = subprocess.run([sys.executable, "-c", code, "anchor", "--video", str(data / "clip" / "recapture_sample.mp4"),
                           "--depth", str(data / "clip" / "recapture_sample_depth"), "--depth-kind", "inverse",
                           "--camera", "orbit_left", "--out", str(tmp_path / "anchor")], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "anchor" / "anchor.npz").exists()
    imports = subprocess.run([sys.executable, "-c", "import sys, recapture.cli, recapture.batch, recapture.train, "
                              "recapture.sampling; print('ray' in sys.modules)"], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert imports.stdout.strip() == "False", imports.stderr
