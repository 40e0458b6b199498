"""echo: reads the POSTed body (wrk sends 64 KiB) and answers b"len=<n> crc32=<8 hex>\\n".

Reads CONTENT_LENGTH bytes when it is given (PEP 3333), otherwise until EOF (a server that
de-chunks a chunked body and sets wsgi.input_terminated).
"""

import zlib

CHUNK = 65536


def application(environ, start_response):
    stream = environ["wsgi.input"]
    length = (environ.get("CONTENT_LENGTH") or "").strip()
    remaining = int(length) if length else -1
    total = crc = 0
    while remaining != 0:
        data = stream.read(CHUNK if remaining < 0 else min(CHUNK, remaining))
        if not data:
            break
        total += len(data)
        crc = zlib.crc32(data, crc)
        if remaining > 0:
            remaining -= len(data)
    body = b"len=%d crc32=%08x\n" % (total, crc & 0xFFFFFFFF)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
