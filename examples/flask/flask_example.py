"""A small Flask application served by wsgi-rs (see app.wsgi).

Routes:
    GET  /               an HTML page with a form (links built with url_for, so they carry the
                         mount prefix when the app is mounted below /)
    GET  /hello/<name>   plain text
    POST /greet          the form's target: greets the posted `name` (HTML-escaped)
    GET  /api/info       JSON: the framework, Python, sys.prefix, the mount and the application group
    POST /api/echo       JSON in, JSON out
"""

import sys
from importlib.metadata import version

from flask import Flask, abort, jsonify, render_template, request

app = Flask(__name__)


@app.get("/")
def index():
    return render_template("index.html", python=sys.version.split()[0])


@app.get("/hello/<name>")
def hello(name):
    return f"Hello, {name}!\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.post("/greet")
def greet():
    name = request.form.get("name", "").strip()
    if not name:
        abort(400, description="the form needs a name")
    return render_template("greet.html", name=name)


@app.get("/api/info")
def info():
    return jsonify(
        framework="flask",
        flask_version=version("flask"),
        python=sys.version.split()[0],
        sys_prefix=sys.prefix,
        script_name=request.script_root,
        application_group=request.environ.get("mod_wsgi.application_group"),
    )


@app.post("/api/echo")
def echo():
    payload = request.get_json(silent=True)
    if payload is None:
        abort(415, description="send a JSON body (Content-Type: application/json)")
    return jsonify(received=payload, length=request.content_length)
