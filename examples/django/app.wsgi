# The WSGI entry point of the Django example, as mod_wsgi and wsgi-rs load it:
#
#     wsgi serve examples/django/app.wsgi --python-home examples/django/.venv
#
# The project folder (this file's) goes on sys.path so that `mysite` can be imported; each
# application group (sub-interpreter) runs this file once and gets its own Django.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from mysite.wsgi import application  # noqa: E402,F401
