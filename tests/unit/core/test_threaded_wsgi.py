"""The asyncio front's adapter: whole bodies in, WSGI on a thread pool, responses out, big bodies refused."""

import asyncio
import concurrent.futures
import json
import threading

from core.threaded_wsgi import ThreadedWsgi


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Length", environ["CONTENT_LENGTH"])])
    return [b"got:", body, environ["PATH_INFO"].encode("latin-1"), environ["REMOTE_ADDR"].encode()]


def scope(path="/up", headers=()):
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"a=1",
        "headers": list(headers),
        "server": ("127.0.0.1", 8000),
        "client": ("203.0.113.5", 40000),
    }


def run(coroutine):
    """Run on a fresh event loop in its own thread: the browser tests' Playwright keeps a loop running in the
    main thread of the test session, and asyncio.run refuses to start beside it."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def call(app, request_scope, chunks):
    async def go():
        incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent = []

        async def receive():
            return incoming.pop(0)

        async def send(message):
            sent.append(message)

        await app(request_scope, receive, send)
        return sent

    return run(go())


def test_a_body_in_chunks_reaches_the_application_whole():
    sent = call(ThreadedWsgi(echo, threads=2, max_body=100), scope("/caf\u00e9"), [b"ab", b"cd", b"e"])
    assert sent[0]["status"] == 201 and (b"X-Length", b"5") in sent[0]["headers"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body == b"got:abcde/caf\xc3\xa9203.0.113.5" and sent[-1]["more_body"] is False


def test_the_path_keeps_its_bytes_as_wsgi_wants():
    seen = []

    def app(environ, start_response):
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return []

    threaded = ThreadedWsgi(app, threads=1, max_body=10)
    call(threaded, {**scope("/caf\u00e9"), "raw_path": b"/caf%C3%A9"}, [b""])
    call(threaded, {**scope("/\ufffd"), "raw_path": b"/%FF"}, [b""])  # not UTF-8: the byte itself
    assert seen == ["/caf\xc3\xa9", "/\xff"]


def test_a_body_over_the_limit_is_refused_before_the_application_runs():
    called = []

    def app(environ, start_response):
        called.append(environ)
        return echo(environ, start_response)

    threaded = ThreadedWsgi(app, threads=1, max_body=4)
    for request_scope, chunks in [
        (scope(headers=[(b"content-length", b"10")]), [b"0123456789"]),  # declared too long
        (scope(), [b"012", b"345"]),  # chunked, grows too long
    ]:
        sent = call(threaded, request_scope, chunks)
        assert sent[0]["status"] == 413
        assert json.loads(sent[1]["body"])["error"]["code"] == "body_too_large"
    assert called == []


def test_requests_run_side_by_side_on_the_pool():
    # Both requests must be inside the application at once to pass the barrier: one thread would hang.
    barrier = threading.Barrier(2, timeout=5)

    def app(environ, start_response):
        barrier.wait()
        start_response("200 OK", [])
        return [b"ok"]

    threaded = ThreadedWsgi(app, threads=2, max_body=10)

    async def both():
        async def one():
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)

            await threaded(scope(), receive, send)
            return sent[0]["status"]

        return await asyncio.gather(one(), one())

    assert run(both()) == [200, 200]
