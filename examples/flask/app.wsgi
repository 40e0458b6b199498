# The WSGI entry point of the Flask example, as mod_wsgi and wsgi-rs load it:
#
#     wsgi serve examples/flask/app.wsgi --python-home examples/flask/.venv
#
# The folder of this file goes on sys.path (mod_wsgi does not add it), so that the
# application module next to it can be imported; each application group (sub-interpreter)
# runs this file once.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from flask_example import app as application  # noqa: E402
