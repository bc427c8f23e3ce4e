"""Bulk ingest of Caltech images through the jobs API against `manage.py ingest`, in one run (issue 20).

Jobs: `manage.py run --no-demo-data` (gunicorn, a Celery worker and beat, embedded PostgreSQL and Redis)
in a fresh var folder; one `POST /api/v1/ingest-jobs` names the N files (paths under
LOUPE_INGEST_ROOTS) and the clock stops when every one of them is stored *and* embedded, which is when
a search can find it. CLI: `manage.py ingest FOLDER` in another fresh var folder over a copy of the same
files (one pass: stored and embedded); its clock includes starting Django and loading the model (a few
seconds, reported apart by timing `manage.py ingest` of an empty folder first).

Both use the full-size ViT-B/32 with random weights (real compute, not CLIP quality) and this machine's
defaults (decode pool, int8 ONNX image tower after its check). Both go through the same one-pass ingest
(``collection.ingestion.one_pass``): each file decoded once, 32 rows a round trip, embedded in the same
pass. Before that, the jobs' worker stored items one by one and embedded them in a task of its own
behind the storing (2.6 against the CLI's 3.7 images/s on 200 images).

While the job runs, only its progress is polled (one HTTP GET every 2 s): a job reads done once its
images are stored and embedded; the vector count is checked after (a `manage.py shell` each time, a few
CPU seconds, so not in the loop while the clock runs).

Run (after bin/setup dev; needs ../shared):
    .venv/bin/python bench/bulk_ingest.py --images 2000
Writes docs/bench/bulk_ingest.json and docs/bench/bulk_ingest.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feedback_load import ROOT, fresh_var_dir  # noqa: E402
from search_latency import CALTECH, build_full_size_model, machine  # noqa: E402

OUT_DIR = ROOT / "docs" / "bench"


def chosen_files(count: int) -> list[Path]:
    if not CALTECH.is_dir():
        sys.exit(f"Caltech 101 is not at {CALTECH}: this bench needs ../shared/datasets.")
    files = sorted(p for p in CALTECH.rglob("*.jpg"))
    random.Random(0).shuffle(files)
    if len(files) < count:
        sys.exit(f"Caltech 101 has {len(files)} images; asked for {count}.")
    return files[:count]


def product_env(var_dir: Path, model_dir: Path) -> dict:
    env = dict(os.environ, LOUPE_VAR_DIR=str(var_dir), LOUPE_CLIP_MODEL=str(model_dir), PYTHONUNBUFFERED="1")
    env.update(LOUPE_INGEST_ROOTS=str(CALTECH), LOUPE_EMBED_EVERY_SECONDS="2")
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


def manage(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def embedded_count(env: dict) -> int:
    code = (
        "from collection.models import ImageEmbedding; from collection.versions import serving_version; "
        "print(ImageEmbedding.objects.filter(encoder_version=serving_version()[1]).count())"
    )
    return int(manage(env, "shell", "-c", code).strip().splitlines()[-1])


def run_jobs(files: list[Path], var_dir: Path, model_dir: Path, port: int) -> dict:
    fresh_var_dir(var_dir)
    env = product_env(var_dir, model_dir)
    log = open(var_dir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--no-demo-data"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"The server did not come up; see {var_dir / 'server.log'}")
            try:
                if requests.get(f"{base}/api/v1/tags", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        key = manage(env, "apikey", "create", "bulk-bench", "--scopes", "ingest,search", "--per-minute", "100000")
        headers = {"Authorization": f"Bearer {key.strip().splitlines()[-1]}", "Content-Type": "application/x-ndjson"}
        body = "\n".join(json.dumps({"path": str(f), "tags": [f.parent.name]}) for f in files)
        started = time.perf_counter()
        answer = requests.post(f"{base}/api/v1/ingest-jobs", data=body, headers=headers, timeout=600)
        if answer.status_code not in (201, 202):
            sys.exit(f"The job was refused: {answer.status_code} {answer.text[:500]}")
        job = answer.json()["id"]

        def progress() -> dict:
            return requests.get(f"{base}/api/v1/ingest-jobs/{job}", headers=headers, timeout=60).json()

        status = progress()
        while status.get("status") != "done":
            time.sleep(2)
            status = progress()
        searchable = done_at = time.perf_counter() - started
        if embedded_count(env) < len(files):  # some image was sent to the embed workers after all: wait for it
            while embedded_count(env) < len(files):
                time.sleep(2)
            searchable = time.perf_counter() - started
        return {
            "done_seconds": round(done_at, 1),
            "searchable_seconds": round(searchable, 1),
            "images_per_second": round(len(files) / searchable, 2),
            "counts": status.get("counts"),
        }
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def run_cli(files: list[Path], var_dir: Path, model_dir: Path) -> dict:
    fresh_var_dir(var_dir)
    env = product_env(var_dir, model_dir)
    manage(env, "migrate", "--verbosity", "0")
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        manage(env, "ingest", empty)  # Django start, migrations checked, the model loaded: the fixed cost
        fixed = time.perf_counter() - started
        for file in files:
            target = Path(folder) / file.parent.name / file.name
            target.parent.mkdir(exist_ok=True)
            shutil.copy(file, target)
        started = time.perf_counter()
        manage(env, "ingest", folder)
        took = time.perf_counter() - started
    assert embedded_count(env) == len(files), "the CLI pass left images without vectors"
    return {
        "searchable_seconds": round(took, 1),
        "fixed_seconds": round(fixed, 1),
        "images_per_second": round(len(files) / took, 2),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["jobs API (worker)", "manage.py ingest"]
    rates = [results["jobs"]["images_per_second"], results["cli"]["images_per_second"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(names, rates, color=["#4a7", "#47a"])
    ax.set_ylabel("images/s until searchable")
    ax.set_title(f"Bulk ingest, {results['images']} Caltech images")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--output", type=Path, default=OUT_DIR / "bulk_ingest.json")
    args = parser.parse_args()
    files = chosen_files(args.images)
    load_at_start = [round(v, 1) for v in os.getloadavg()]
    model_dir = ROOT / "var" / "bench-models" / "clip-vit-b32-random"
    build_full_size_model(model_dir)
    print(f"Jobs API: {len(files)} images...", flush=True)
    jobs = run_jobs(files, ROOT / "var" / "bench-bulk-jobs", model_dir, args.port)
    print(f"  {jobs}", flush=True)
    print("CLI...", flush=True)
    cli = run_cli(files, ROOT / "var" / "bench-bulk-cli", model_dir)
    print(f"  {cli}", flush=True)
    results = {
        "command": f"bench/bulk_ingest.py --images {args.images}",
        "machine": machine(),
        "load_average_at_start": load_at_start,
        "images": len(files),
        "load_average_at_end": [round(v, 1) for v in os.getloadavg()],
        "jobs": jobs,
        "cli": cli,
        "jobs_over_cli": round(jobs["images_per_second"] / cli["images_per_second"], 2),
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.output.with_suffix(".png"))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
