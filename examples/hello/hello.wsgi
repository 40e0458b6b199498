# A minimal WSGI application: what every mod_wsgi tutorial starts with.
import sys


def application(environ, start_response):
    body = (
        "Hello from wsgi-rs\n"
        f"python: {sys.version.split()[0]} prefix: {sys.prefix}\n"
        f"application group: {environ.get('mod_wsgi.application_group')!r}\n"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
