"""big: a 1 MiB response streamed from a generator in 16 chunks of 64 KiB, Content-Length set."""

CHUNK = bytes(range(256)) * 256  # 64 KiB
COUNT = 16
LENGTH = len(CHUNK) * COUNT


def _body():
    for _ in range(COUNT):
        yield CHUNK


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(LENGTH))])
    return _body()
