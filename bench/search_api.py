"""The search API's speed, end to end, with everything on: full-size ViT-B/32 text tower (random
weights: real compute, no semantic quality), text channel, reranking by a LightGBM ranker, the search
log, over a collection of N vectors. Measured through HTTP against gunicorn, like a partner calls it.

One run reports, side by side:
- text encoding: eager fp32 ``transformers`` vs ONNX Runtime fp32 vs int8 (and their cosine to eager);
- the search API, uncached (every query new) and cached (the same queries again), with reranking
  on and off, p50/p99;
- load: concurrent clients, requests/s and latency;
- ANN recall@10 against exact search at several ``hnsw.ef_search``, with the baselines over the same
  vectors in the same run: an exact NumPy scan and FAISS HNSW.

Run (after bin/setup dev; needs ../shared; builds its data under --var-dir on the first run):
    .venv/bin/python bench/search_api.py --size 100000 --var-dir var/benchapi100k
    .venv/bin/python bench/search_api.py --size 1000000 --var-dir var/benchapi1m
It writes docs/bench/search_api_<size>.json and .png.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_latency as base  # noqa: E402  (the data builders and baselines are shared)

ROOT = base.ROOT
OUT_DIR = base.OUT_DIR


def ensure_ranker() -> dict:
    """An active LightGBM ranker over the registry's features, trained on synthetic graded searches.

    Its trees cost what a learned ranker costs at serve time (features, prediction); what it learned
    is irrelevant to speed. Kept between runs.
    """
    from ranking.features import NAMES
    from ranking.ltr import RankingData, train_ranker
    from ranking.models import RankerVersion
    from ranking.registry import promote, save_candidate

    active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).first()
    if active is not None:
        return {"ranker": active.label, "trees": active.metrics.get("trees")}
    rng = np.random.default_rng(0)

    def searches(n: int) -> RankingData:
        X = rng.normal(size=(n * 50, len(NAMES)))
        y = ((X[:, 0] + 0.5 * X[:, 7] + rng.normal(scale=0.5, size=len(X))) > 1.5).astype(float)
        return RankingData(X, y, np.full(n, 50), feature_names=list(NAMES))

    trained = train_ranker(searches(2000), searches(300))
    from django.utils import timezone

    version = save_candidate(
        trained,
        trained_from=timezone.now(),
        trained_until=timezone.now(),
        train_searches=2000,
        validation_searches=300,
        metrics={"trees": trained.booster.num_trees(), "note": "synthetic, for the speed benchmark"},
    )
    promote(version)
    return {"ranker": version.label, "trees": trained.booster.num_trees()}


def set_reranking(use_reranker: bool) -> None:
    """Production's configuration: reranking on or off (web processes pick it up within a second here)."""
    from ranking.models import ServingConfig

    ServingConfig.objects.create(
        use_reranker=use_reranker, rerank_depth=100, created_by="bench", source="bench/search_api.py"
    )


def text_encoding(model_dir: Path, texts: list[str]) -> dict:
    """Eager fp32 transformers vs ONNX Runtime fp32 vs int8, one query at a time, as search encodes."""
    import tempfile

    from collection.encoders import Encoder

    def timed(encoder) -> tuple[list[float], np.ndarray]:
        for text in texts[:10]:
            encoder.encode_texts([text + " warmup"])
        samples, vectors = [], []
        for text in texts:
            started = time.perf_counter()
            vectors.append(encoder.encode_texts([text])[0])
            samples.append(time.perf_counter() - started)
        return samples, np.stack(vectors)

    eager = Encoder(str(model_dir), local_files_only=True)
    eager_times, eager_vectors = timed(eager)
    result = {"eager_fp32_ms": {"p50": base.percentile_ms(eager_times, 50), "p99": base.percentile_ms(eager_times, 99)}}
    with tempfile.TemporaryDirectory() as folder:
        for label, int8 in (("onnx_fp32", False), ("onnx_int8", True)):
            encoder = Encoder(str(model_dir), local_files_only=True)
            encoder.accelerate_text(Path(folder), int8=int8)
            times, vectors = timed(encoder)
            cosines = np.sum(vectors * eager_vectors, axis=1)
            result[f"{label}_ms"] = {"p50": base.percentile_ms(times, 50), "p99": base.percentile_ms(times, 99)}
            result[f"{label}_runtime"] = encoder.text_runtime
            result[f"{label}_cosine_to_eager"] = {
                "min": round(float(cosines.min()), 5),
                "mean": round(float(cosines.mean()), 5),
            }
            result[f"{label}_speedup_p50"] = round(result["eager_fp32_ms"]["p50"] / result[f"{label}_ms"]["p50"], 2)
    return result


def recall_by_ef_search(version, query_vectors: np.ndarray, ef_values: list[int]) -> dict:
    """ANN recall@10 against an exact scan, and the index query's own latency, per ef_search."""
    from django.conf import settings

    from collection.index import nearest_images

    exact = [[n.id for n in nearest_images(version, v, k=10, exact=True)] for v in query_vectors]
    rows = {}
    for ef in ef_values:
        settings.LOUPE_HNSW_EF_SEARCH = ef
        recalls, times = [], []
        for vector, truth in zip(query_vectors, exact, strict=True):
            started = time.perf_counter()
            found = [n.id for n in nearest_images(version, vector, k=10)]
            times.append(time.perf_counter() - started)
            recalls.append(len(set(found) & set(truth)) / 10)
        rows[str(ef)] = {
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "query_ms": {"p50": base.percentile_ms(times, 50), "p99": base.percentile_ms(times, 99)},
        }
    settings.LOUPE_HNSW_EF_SEARCH = 100
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Web:
    """gunicorn serving this benchmark's var folder (the product's own web command)."""

    def __init__(self, var_dir: Path, model_dir: Path, workers: int, ef_search: int) -> None:
        from django.conf import settings

        from core.embedded_postgres.base import database_url
        from searchapp.processes import WEB

        self.port = free_port()
        # The product's own settings, not this process's: search_latency.setup_django turns the result cache
        # off for in-process passes, but the API's cached case is what the result cache does.
        own = ("PROMETHEUS_MULTIPROC_DIR", "LOUPE_RESULT_CACHE_SECONDS")
        env = {k: v for k, v in os.environ.items() if k not in own}
        env.update(
            DATABASE_URL=database_url(settings.DATABASES["default"]),
            REDIS_URL=settings.REDIS_URL,
            LOUPE_VAR_DIR=str(var_dir),
            LOUPE_CLIP_MODEL=str(model_dir),
            LOUPE_ENCODER_FALLBACK="false",
            LOUPE_HNSW_EF_SEARCH=str(ef_search),
            LOUPE_EXPERIMENT_CHECK_SECONDS="1",
            LOUPE_LOG_LEVEL="WARNING",
            # Its end users search at machine speed (the warm-up is hundreds a second as one user), which
            # the per-user search throttle exists to refuse; the partner key's own budget still applies.
            LOUPE_THROTTLE_USER_SEARCH="0/min",
            DJANGO_SETTINGS_MODULE="config.settings",
        )
        self.log = (var_dir / "bench-web.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", *WEB, "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)


class Client:
    """One keep-alive connection, like a partner's HTTP client."""

    def __init__(self, web: Web, key: str) -> None:
        self.web, self.key = web, key
        self.conn = web.connection()

    def search(self, q: str, user: str) -> tuple[float, dict]:
        path = "/api/v1/search?" + urllib.parse.urlencode({"q": q, "page_size": 24, "user": user})
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("GET", path, headers={"Authorization": f"Bearer {self.key}"})
                response = self.conn.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                # The server closes idle keep-alive connections (gunicorn: after 2 s), as HTTP clients expect:
                # reconnect once, as they do.
                self.conn.close()
                self.conn = self.web.connection()
                if attempt == 2:
                    raise
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {body[:300]!r}")
        return elapsed, json.loads(body)


def wait_until_ready(web: Web) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            conn = web.connection()
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the web server did not become ready; see {web.log.name}")


def sequential(client: Client, texts: list[str], label: str) -> dict:
    """Each query once, one after another: (uncached) then the same again (cached)."""
    uncached, cached, rankers, hits, stages = [], [], set(), [], []
    for i, text in enumerate(texts):
        elapsed, body = client.search(text, f"bench-{i % 50}")
        uncached.append(elapsed)
        rankers.add(body["meta"]["ranker"])
        hits.append(body["meta"]["cached"])
        stages.append(body["meta"]["took_ms"])
    for i, text in enumerate(texts):
        elapsed, body = client.search(text, f"bench-{i % 50}")
        cached.append(elapsed)
        hits.append(body["meta"]["cached"])
    served_cached = sum(hits[len(texts) :])
    print(
        f"  {label}: uncached p50 {base.percentile_ms(uncached, 50)} ms, cached p50 "
        f"{base.percentile_ms(cached, 50)} ms ({served_cached}/{len(texts)} from the result cache)",
        flush=True,
    )
    return {
        "uncached_ms": {
            "p50": base.percentile_ms(uncached, 50),
            "p90": base.percentile_ms(uncached, 90),
            "p99": base.percentile_ms(uncached, 99),
        },
        "cached_ms": {
            "p50": base.percentile_ms(cached, 50),
            "p90": base.percentile_ms(cached, 90),
            "p99": base.percentile_ms(cached, 99),
        },
        "uncached_server_stages_p50_ms": {
            k: round(float(np.median([st.get(k, 0) for st in stages])), 2) for k in stages[0]
        },
        "uncached_hits_from_result_cache": sum(hits[: len(texts)]),
        "cached_hits_from_result_cache": served_cached,
        "rankers": sorted(rankers),
    }


def load(web: Web, key: str, pool: list[str], clients: int, seconds: float) -> dict:
    """``clients`` threads searching a Zipf-distributed mix of queries for ``seconds``."""
    rng = np.random.default_rng(clients)
    weights = 1 / np.arange(1, len(pool) + 1) ** 1.0
    picks = rng.choice(len(pool), size=200_000, p=weights / weights.sum())
    samples: list[float] = []
    errors = [0]
    lock = threading.Lock()
    cursor = [0]
    stop_at = time.monotonic() + seconds

    def run(worker: int) -> None:
        client = Client(web, key)
        while time.monotonic() < stop_at:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            try:
                elapsed, _ = client.search(pool[picks[i]], f"load-{worker}-{i % 20}")
            except Exception:  # noqa: BLE001 - counted: the benchmark reports errors
                with lock:
                    errors[0] += 1
                continue
            with lock:
                samples.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    result = {
        "clients": clients,
        "requests": len(samples),
        "errors": errors[0],
        "requests_per_s": round(len(samples) / wall, 1),
        "ms": {"p50": base.percentile_ms(samples, 50), "p99": base.percentile_ms(samples, 99)},
    }
    print(
        f"  load, {clients} clients: {result['requests_per_s']} req/s, p50 {result['ms']['p50']} ms, "
        f"p99 {result['ms']['p99']} ms, errors {errors[0]}",
        flush=True,
    )
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    runs = results["api"]
    labels = list(runs)
    x = np.arange(len(labels))
    for offset, (case, colour) in enumerate((("uncached_ms", "#4c72b0"), ("cached_ms", "#55a868"))):
        for j, stat in enumerate(("p50", "p99")):
            values = [runs[label][case][stat] for label in labels]
            axes[0].bar(
                x + (offset * 2 + j) * 0.2 - 0.3,
                values,
                0.2,
                color=colour,
                alpha=1 if stat == "p50" else 0.5,
                label=f"{case.split('_')[0]} {stat}",
            )
    axes[0].axhline(25, color="grey", ls="--", lw=1)
    axes[0].axhline(8, color="grey", ls=":", lw=1)
    axes[0].set_xticks(x, labels, fontsize=8)
    axes[0].set_ylabel("ms")
    axes[0].set_title(f"search API at {results['vectors']:,} vectors (targets: 25 ms, 8 ms)")
    axes[0].legend(fontsize=7)
    enc = results["text_encoding"]
    names = ["eager_fp32", "onnx_fp32", "onnx_int8"]
    axes[1].bar(names, [enc[f"{n}_ms"]["p50"] for n in names], color=["#c44e52", "#8172b2", "#55a868"])
    axes[1].set_title("ViT-B/32 text tower, one query, p50 ms")
    ax2 = axes[2].twinx()
    for text_channel, colour in ((True, "#4c72b0"), (False, "#55a868")):
        loads = [r for r in results["load"] if r.get("text_channel", True) == text_channel]
        if not loads:
            continue
        name = "text channel" if text_channel else "CLIP only"
        axes[2].plot(
            [r["clients"] for r in loads],
            [r["requests_per_s"] for r in loads],
            "o-",
            color=colour,
            label=f"{name}: requests/s",
        )
        ax2.plot(
            [r["clients"] for r in loads],
            [r["ms"]["p50"] for r in loads],
            "s--",
            color=colour,
            alpha=0.6,
            label=f"{name}: p50 ms",
        )
    axes[2].set_xlabel("concurrent clients (on the same 2 cores)")
    axes[2].set_title("load (Zipf query mix)")
    axes[2].legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def measure_components(args, results: dict, model_dir: Path, target, mixture, texts: list[str]) -> None:
    """Text encoding (eager vs ONNX Runtime), ANN recall per ef_search, and the NumPy and FAISS baselines."""
    print("Text encoding...", flush=True)
    results["text_encoding"] = text_encoding(model_dir, texts[:200])
    print(json.dumps(results["text_encoding"], indent=1), flush=True)

    print("Recall against exact...", flush=True)
    query_vectors = mixture.queries(args.recall_queries)
    results["recall_by_ef_search"] = recall_by_ef_search(target, query_vectors, args.ef_search)
    print(json.dumps(results["recall_by_ef_search"], indent=1), flush=True)
    ids, vectors = base.load_vectors(target)
    numpy_times = []
    for vector in query_vectors:
        started = time.perf_counter()
        scores = vectors @ vector
        np.argpartition(-scores, 10)[:10]
        numpy_times.append(time.perf_counter() - started)
    results["numpy_exact_ms"] = {"p50": base.percentile_ms(numpy_times, 50), "p99": base.percentile_ms(numpy_times, 99)}
    results["faiss"] = base.faiss_baseline(vectors, query_vectors, ids)
    del vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--images", type=int, default=2000, help="real Caltech images (the rest are synthetic rows)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200, 400])
    parser.add_argument("--serve-ef-search", type=int, default=100, help="hnsw.ef_search the web server uses")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--load-seconds", type=float, default=20)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--api-only", action="store_true", help="only the API and load (keep the other figures)")
    parser.add_argument("--no-text-channel", action="store_true", help="skip captions (faster setup at 1M)")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "benchapi100k")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not base.CONFIG_DIR.is_dir() or not base.CALTECH.is_dir():
        sys.exit(f"This benchmark needs {base.CONFIG_DIR} and {base.CALTECH} (the shared folder beside the repo).")
    output = args.output or OUT_DIR / f"search_api_{args.size}.json"

    model_dir = args.var_dir / "models" / "clip-vit-b32-random"
    args.var_dir.mkdir(parents=True, exist_ok=True)
    base.build_full_size_model(model_dir)
    base.setup_django(args.var_dir, model_dir)

    from collection.versions import serving_version
    from feedback.api_keys import issue_key

    choice, version = serving_version()
    results: dict = {
        "machine": base.machine(),
        "model": "CLIP ViT-B/32 architecture, random weights",
        "vectors": args.size,
        "command": " ".join(sys.argv),
    }
    print("Data...", flush=True)
    results["ingest"] = base.ingest_real_images(args.images)
    mixture = base.ClipLikeMixture(version.dimension)
    # The serving version itself holds the N CLIP-like vectors, so the web server serves them.
    target = base.synthetic_version(version, mixture, args.size, fill=version)
    if not args.no_text_channel:
        results["text_channel_setup"] = base.add_captions_everywhere()
    results["ranker"] = ensure_ranker()
    texts = base.queries(args.queries)

    if args.api_only:
        previous = json.loads(output.read_text()) if output.exists() else {}
        results.update({k: v for k, v in previous.items() if k not in results and k not in ("api", "load")})
    else:
        measure_components(args, results, model_dir, target, mixture, texts)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
    key = issue_key("bench", ["search"], requests_per_minute=1_000_000).plaintext
    results["api"], results["load"] = {}, []
    results["settings"] = {
        "web_workers": args.web_workers,
        "threads_per_worker": 4,
        "ef_search": args.serve_ef_search,
        "text_channel": not args.no_text_channel,
        "rerank_depth": 100,
        "result_cache_seconds": "product default (60)",
    }
    channel_modes = [False] if args.no_text_channel else [True, False]
    for text_channel in channel_modes:
        os.environ["LOUPE_TEXT_CHANNEL"] = "true" if text_channel else "false"
        web = Web(args.var_dir, model_dir, args.web_workers, args.serve_ef_search)
        try:
            wait_until_ready(web)
            client = Client(web, key)
            # A server that has run a while has its index, vectors and rows in memory; a fresh one (this
            # benchmark just started PostgreSQL) reads them from the OS on first touch. Warm it the way
            # traffic would: distinct queries, none of them measured.
            for i, text in enumerate(texts * 2):
                client.search(f"{text} warm-up {i}", "warmup")
            for rerank in (True, False):
                set_reranking(rerank)
                time.sleep(2.5)  # web processes re-read production's configuration every second here
                label = ("text channel" if text_channel else "CLIP only") + (" + rerank" if rerank else "")
                for text in texts[-20:]:
                    client.search(f"{text} warmup {label}", "warmup")
                # Distinct queries per configuration, so nothing is cached from the one before.
                results["api"][label] = sequential(client, [f"{t} ({label})" for t in texts], label)
            set_reranking(True)
            time.sleep(2.5)
            pool = [f"{t} #{i}" for i, t in enumerate(texts * 4)]  # 1,200 distinct queries, Zipf-weighted
            for clients in args.clients:
                measured = load(web, key, pool, clients, args.load_seconds)
                results["load"].append({**measured, "text_channel": text_channel, "rerank": True})
        finally:
            web.stop()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    plot(results, output.with_suffix(".png"))
    print(f"Saved {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
