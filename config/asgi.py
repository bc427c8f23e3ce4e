"""ASGI entry point (gunicorn's ``asgi`` worker, ``config.asgi:application``).

The event loop reads requests, so slow clients cannot hold the threads; the unchanged Django WSGI
application (``config.wsgi``) then runs on ``LOUPE_WEB_THREADS`` threads per worker. See
``core.threaded_wsgi`` for why not Django's own ASGI handler.
"""

import os

from django.conf import settings

from config.wsgi import application as wsgi_application
from core.threaded_wsgi import ThreadedWsgi

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# An upload's form fields and multipart framing come on top of the image's own bytes.
application = ThreadedWsgi(
    wsgi_application,
    threads=int(os.environ.get("LOUPE_WEB_THREADS", "4")),
    max_body=settings.LOUPE_MAX_UPLOAD_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
)
