"""filewrap: a 1 MiB file (file.bin beside this module, written by bench/compare) returned
through the server's wsgi.file_wrapper (sendfile where the server does it). A server without
wsgi.file_wrapper gets the PEP 3333 fallback (64 KiB reads); the X-File-Wrapper header says
which one answered, and bench/compare reports it.
"""

import os

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "file.bin")
BLOCK = 65536


def _fallback(f):
    try:
        while True:
            data = f.read(BLOCK)
            if not data:
                break
            yield data
    finally:
        f.close()


def application(environ, start_response):
    f = open(PATH, "rb")
    size = os.fstat(f.fileno()).st_size
    wrapper = environ.get("wsgi.file_wrapper")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size)),
                              ("X-File-Wrapper", "server" if wrapper else "fallback")])
    if wrapper is not None:
        return wrapper(f, BLOCK)
    return _fallback(f)
