# The `_wsgi_rs` helper module, executed once in every interpreter (main and each
# sub-interpreter) by wsgi-interp. The host injects before this runs: `_native_log(tag,
# level, text)`, `_native_metrics()` (the process's request counters and memory, see
# mod_wsgi.py) and `_native_in_request()` (whether this thread is running a WSGI call).
# Everything here is per interpreter: no object crosses interpreters.

import os
import sys
import threading
import time
import traceback

LEVEL_INFO = 0
LEVEL_ERROR = 1
LEVEL_DEBUG = 2
LEVEL_WARNING = 3

# The level of the `logging` record a StreamHandler is writing on this thread, if any: its
# lines are logged at the record's level rather than the stream's.
_record = threading.local()


class LogWriter:
    """A text file that sends each complete line to the host's log, tagged."""

    encoding = 'utf-8'
    errors = 'backslashreplace'
    closed = False

    def __init__(self, tag, level):
        self._tag = tag
        self._level = level
        self._pending = ''
        self._unflushed = False
        self._lock = threading.Lock()

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError('write() argument must be str, not %s' % type(text).__name__)
        with self._lock:
            lines = (self._pending + text).split('\n')
            self._pending = lines.pop()
        level = getattr(_record, 'level', None)
        if level is None:
            level = self._level
        for line in lines:
            _native_log(self._tag, level, line)
        if self._pending and not self._unflushed:
            # Written out by the end of the request at the latest (flush_streams).
            self._unflushed = True
            unflushed.append(self)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        with self._lock:
            pending, self._pending = self._pending, ''
            self._unflushed = False
        if pending:
            _native_log(self._tag, self._level, pending)

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def seekable(self):
        return False


# The LogWriters holding a partial line; the host calls flush_streams() after a request when
# this is not empty (a list-length check per request otherwise).
unflushed = []


def flush_streams():
    while unflushed:
        unflushed.pop().flush()


class Input:
    """`wsgi.input`: a stream over the request body, read in bounded chunks."""

    __slots__ = ('_raw', '_buf', '_pos', '_eof')
    CHUNK = 65536

    def __init__(self, raw):
        self._raw = raw
        self._buf = b''
        self._pos = 0
        self._eof = False

    def _take(self, limit):
        end = len(self._buf) if limit < 0 else min(len(self._buf), self._pos + limit)
        piece = self._buf[self._pos:end]
        self._pos = end
        return piece

    def read(self, size=-1):
        # A read served by one piece returns that piece: b''.join would copy it.
        if size is None:
            size = -1
        parts = [self._take(size)] if self._pos < len(self._buf) else []
        if size < 0:
            while not self._eof:
                data = self._raw(self.CHUNK)
                if not data:
                    self._eof = True
                    break
                parts.append(data)
        else:
            have = len(parts[0]) if parts else 0
            while have < size and not self._eof:
                data = self._raw(min(size - have, self.CHUNK))
                if not data:
                    self._eof = True
                    break
                parts.append(data)
                have += len(data)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def readline(self, size=-1):
        if size is None:
            size = -1
        parts = []
        have = 0
        while size < 0 or have < size:
            if self._pos >= len(self._buf):
                if self._eof:
                    break
                data = self._raw(self.CHUNK)
                if not data:
                    self._eof = True
                    break
                self._buf = data
                self._pos = 0
            nl = self._buf.find(b'\n', self._pos)
            end = len(self._buf) if nl < 0 else nl + 1
            if size >= 0:
                end = min(end, self._pos + size - have)
            piece = self._buf[self._pos:end]
            self._pos = end
            parts.append(piece)
            have += len(piece)
            if piece.endswith(b'\n'):
                break
        return b''.join(parts)

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class RequestTimeout(BaseException):
    """Raised inside a request that ran past request-timeout, when interrupt-timeout is set
    (mod_wsgi 6): a BaseException, so `except Exception` in the app does not swallow it."""


class FileWrapper:
    """`wsgi.file_wrapper`: the host sends the file with sendfile when it can."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, 'close'):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def file_range(wrapper):
    """(fd, offset, size) of a wrapped regular file, or None to iterate instead."""
    filelike = wrapper.filelike
    try:
        fd = filelike.fileno()
        offset = filelike.tell()
        st = os.fstat(fd)
    except Exception:
        return None
    import stat
    if not stat.S_ISREG(st.st_mode) or offset > st.st_size:
        return None
    return (fd, offset, st.st_size - offset)


def format_exc(exc):
    return ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# The standard library's single-phase-init extension modules that Python 3.12 refuses in
# interpreters with their own GIL, less those with import side effects (readline, _tkinter)
# or deprecation warnings (nis, ossaudiodev). CPython 3.12 runs such a module's init function
# *before* refusing it, so its static types get readied in the refusing interpreter's own
# allocator; a later import elsewhere then uses memory that dies with that interpreter (heap
# corruption: ending several own-GIL interpreters that had imported datetime aborted the
# process on 3.12.1 and 3.13.0; CPython gh-136423, gh-119450; ARCHITECTURE.md, "Own-GIL
# interpreters"). Imported first in the main interpreter, the module is cached, and own-GIL
# interpreters are refused before its init runs.
# `hashlib` is here for a measured reason, cause not found: on 3.12.1 an own-GIL interpreter
# that imports hashlib before the main interpreter did makes `Py_FinalizeEx` abort (free():
# invalid pointer in the main tuple freelist), in plain CPython too (_xxsubinterpreters).
OWN_GIL_PRELOAD = ('_ctypes', '_curses', '_curses_panel', '_datetime', '_decimal',
                   '_elementtree', '_lsprof', 'pyexpat', 'hashlib')


def preload_for_own_gil():
    import importlib
    loaded = []
    for name in OWN_GIL_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        loaded.append(name)
    return loaded


class Restricted:
    """`sys.stdin` or `sys.stdout` under WSGIRestrictStdin/WSGIRestrictStdout On: any use
    raises OSError, as mod_wsgi's restricted streams do."""

    def __init__(self, name):
        object.__setattr__(self, '_name', name)

    def __getattr__(self, attr):
        raise OSError('%s access restricted by mod_wsgi' % object.__getattribute__(self, '_name'))

    def __setattr__(self, attr, value):
        self.__getattr__(attr)


def setup(tag, environ, python_path_layers, restrict_stdin, restrict_stdout):
    if environ is not None:
        # Start from the process's original environment (no putenv: the C environ is shared
        # by all interpreters and is left alone).
        os.environ._data.clear()
        os.environ._data.update(environ)
    # Each layer (python-path, then <WSGIInterpreterOptions>' WSGIPythonPath, least specific
    # first) goes in front of what is there, as mod_wsgi adds them.
    for python_path in python_path_layers:
        if not python_path:
            continue
        import site
        before = list(sys.path)
        for folder in python_path:
            site.addsitedir(folder)
        added = [p for p in sys.path if p not in before]
        sys.path[:] = added + [p for p in sys.path if p not in added]
    sys.stdout = Restricted('sys.stdout') if restrict_stdout else LogWriter(tag + ' stdout', LEVEL_INFO)
    if restrict_stdin:
        sys.stdin = Restricted('sys.stdin')
    sys.stderr = LogWriter(tag + ' stderr', LEVEL_ERROR)
    _log_records_at_their_level()


def _level_of(levelno):
    if levelno >= 40:
        return LEVEL_ERROR
    if levelno >= 30:
        return LEVEL_WARNING
    if levelno >= 20:
        return LEVEL_INFO
    return LEVEL_DEBUG


def _log_records_at_their_level():
    """Makes a `logging.StreamHandler` writing to one of our streams (sys.stderr, sys.stdout,
    wsgi.errors) log its record's lines at the record's level: an app's logging.info is
    info, not an error (under Apache every line still goes to its error log, as mod_wsgi)."""
    import logging
    emit = logging.StreamHandler.emit
    if getattr(emit, '_wsgi_rs', False):
        return

    def emit_at_level(self, record):
        if not isinstance(getattr(self, 'stream', None), LogWriter):
            return emit(self, record)
        _record.level = _level_of(record.levelno)
        try:
            return emit(self, record)
        finally:
            _record.level = None

    emit_at_level._wsgi_rs = True
    logging.StreamHandler.emit = emit_at_level


def _exec_module(path, restore_previous):
    """Executes the file at `path` as a module named as mod_wsgi names script modules
    (`_mod_wsgi_` + md5 of the path), in sys.modules while it runs. On an error the module is
    taken out again, and with `restore_previous` the module it was replacing is put back.
    Returns (name, module)."""
    import types
    try:
        # CPython's own MD5: `hashlib` would load OpenSSL's libcrypto (3 MiB resident) into
        # every process just to name a module.
        from _md5 import md5
    except ImportError:
        from hashlib import md5
    name = '_mod_wsgi_' + md5(os.fsencode(path)).hexdigest()
    previous = sys.modules.pop(name, None)
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    try:
        with open(path, 'rb') as f:
            source = f.read()
        exec(compile(source, path, 'exec', dont_inherit=True), module.__dict__)
    except BaseException:
        if sys.modules.get(name) is module:
            if restore_previous and previous is not None:
                sys.modules[name] = previous
            else:
                del sys.modules[name]
        raise
    return (name, module)


def load_script(path, callable_name):
    name, module = _exec_module(path, False)
    app = getattr(module, callable_name, None)
    if app is None:
        del sys.modules[name]
    return (module, app)


def load_module(path):
    """Executes a hook script (access, auth, dispatch) as the module mod_wsgi would name it,
    and returns the module; it stays in sys.modules."""
    return _exec_module(path, True)[1]


def join_threads(timeout, include_daemon):
    """Joins this interpreter's threads for at most `timeout` seconds in total; returns the
    names of those still alive."""
    me = threading.current_thread()
    end = time.monotonic() + max(0.0, timeout)
    alive = []
    for t in threading.enumerate():
        if t is me or isinstance(t, threading._DummyThread):
            continue
        if t.daemon and not include_daemon:
            continue
        t.join(max(0.0, end - time.monotonic()))
        if t.is_alive():
            alive.append(t)
    forget = getattr(threading, '_shutdown_locks', None)
    if forget is not None and alive:
        # threading._shutdown must not wait for them (CPython gh-122517, mod_wsgi #923).
        with threading._shutdown_locks_lock:
            for t in alive:
                if t._tstate_lock is not None:
                    forget.discard(t._tstate_lock)
    return [t.name for t in alive]


def guard_shutdown():
    """Makes threading._shutdown unable to wait for a thread other than the caller."""
    original = threading._shutdown

    def _shutdown():
        locks = getattr(threading, '_shutdown_locks', None)
        main = threading._main_thread
        if locks is not None and main.ident != threading.get_ident():
            with threading._shutdown_locks_lock:
                if main._tstate_lock is not None:
                    locks.discard(main._tstate_lock)
        original()

    threading._shutdown = _shutdown


def run_atexit():
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


# --- the `mod_wsgi` module and what it needs from the requests -------------------------------

_mod_wsgi = None
# Non-empty once requests are tracked (request_data(), active_requests, request events):
# the host reads its length before each call and does nothing more while it is empty.
tracking = []
_tracking_lock = threading.Lock()
_local = threading.local()
_request_ids = None


def install_mod_wsgi(source, version, process_group, application_group, maximum_processes,
                     threads_per_process):
    """Makes this interpreter's `mod_wsgi` module and puts it in sys.modules."""
    global _mod_wsgi, _request_ids
    import itertools
    import types
    _request_ids = itertools.count(1)
    from importlib.machinery import ModuleSpec
    module = types.ModuleType('mod_wsgi')
    # Found by importlib.util.find_spec('mod_wsgi'), as mod_wsgi's own module is.
    module.__spec__ = ModuleSpec('mod_wsgi', None, origin='built-in')
    module.__dict__.update(
        _host=sys.modules[__name__],
        version=version,
        process_group=process_group,
        application_group=application_group,
        maximum_processes=maximum_processes,
        threads_per_process=threads_per_process,
    )
    exec(compile(source, '<mod_wsgi>', 'exec', dont_inherit=True), module.__dict__)
    _mod_wsgi = module
    sys.modules['mod_wsgi'] = module


def track_requests():
    """Starts tracking requests (once); returns `mod_wsgi.active_requests`."""
    with _tracking_lock:
        if not tracking:
            _mod_wsgi.active_requests = {}
            tracking.append(True)
    return _mod_wsgi.active_requests


def request_data():
    data = getattr(_local, 'data', None)
    if data is None:
        if not _native_in_request():
            raise RuntimeError('no active request for thread')
        # A request that began before anything tracked them: its own dict from now on (it is
        # not listed in active_requests); the host calls end_request for it.
        track_requests()
        data = _local.data = {}
    return data


def _log_callback_error(name):
    for line in traceback.format_exc().rstrip('\n').split('\n'):
        _native_log('mod_wsgi %s callback' % name, LEVEL_ERROR, line)


def _publish(name, event, *lists):
    """Calls every callback of `lists` as callback(name, **event); a dict returned is merged
    into the event. A callback that raises an Exception is logged and the others still run."""
    for callbacks in lists:
        for callback in list(callbacks):
            try:
                result = callback(name, **event)
            except Exception:
                _log_callback_error(name)
                continue
            if isinstance(result, dict):
                event.update(result)


def publish_stopping(reason):
    """The 'process_stopping' event, to the event callbacks and then the shutdown callbacks."""
    if _mod_wsgi is None:
        return
    event = {'shutdown_reason': reason}
    try:
        _publish('process_stopping', event, _mod_wsgi.event_callbacks,
                 _mod_wsgi.shutdown_callbacks)
    except BaseException:
        _log_callback_error('process_stopping')


def begin_request(environ, application, start_response, thread_id):
    """A tracked request starts: its request_data() dict, its entry in active_requests, the
    'request_started' event (whose callbacks may replace `application_object`). Returns
    (state, application, start_response) for the call."""
    data = {}
    _local.data = data
    request_id = environ.get('mod_wsgi.request_id') or str(next(_request_ids))
    now = time.time()
    state = (request_id, data, now)
    _mod_wsgi.active_requests[request_id] = data
    if not _mod_wsgi.event_callbacks:
        return (state, application, start_response)
    try:
        try:
            request_start = float(environ.get('mod_wsgi.request_start') or now)
        except ValueError:
            request_start = now
        event = {
            'request_id': request_id,
            'thread_id': thread_id,
            'request_start': request_start,
            'application_object': application,
            'callable_object': environ.get('mod_wsgi.callable_object', 'application'),
            'request_environ': environ,
            'application_start': now,
            'request_data': data,
        }
        _publish('request_started', event, _mod_wsgi.event_callbacks)
    except BaseException:
        # Raised into the request (RequestTimeout): it fails, and is no longer active.
        end_request(None, 0)
        _mod_wsgi.active_requests.pop(request_id, None)
        raise
    application = event.get('application_object', application)
    return (state, application, _announcing(state, start_response))


def _announcing(state, start_response):
    """`start_response` publishing 'response_started' first."""
    def start(status, response_headers, exc_info=None):
        _publish('response_started', {
            'request_id': state[0],
            'response_status': status,
            'response_headers': response_headers,
            'exception_info': exc_info,
            'request_data': state[1],
        }, _mod_wsgi.event_callbacks)
        return start_response(status, response_headers, exc_info)
    return start


def request_exception(state, exc):
    """The application raised `exc` (the request fails): 'request_exception'."""
    if state is not None and _mod_wsgi.event_callbacks:
        _publish('request_exception', {
            'request_id': state[0],
            'exception_info': (type(exc), exc, exc.__traceback__),
            'request_data': state[1],
        }, _mod_wsgi.event_callbacks)


def end_request(state, output_length):
    """A tracked request ended (`state` None: one that began untracked): out of
    active_requests, and 'request_finished'."""
    _local.data = None
    if state is None:
        return
    request_id, data, started = state
    _mod_wsgi.active_requests.pop(request_id, None)
    if _mod_wsgi.event_callbacks:
        finished = time.time()
        _publish('request_finished', {
            'request_id': request_id,
            'output_length': output_length,
            'application_start': started,
            'application_finish': finished,
            'application_time': max(0.0, finished - started),
            'request_data': data,
        }, _mod_wsgi.event_callbacks)
