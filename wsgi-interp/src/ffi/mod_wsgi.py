# The `mod_wsgi` module of every interpreter (`import mod_wsgi`), with Apache mod_wsgi 4.9.4's
# names and meanings, plus mod_wsgi 6's RequestTimeout. Executed by `_wsgi_rs.install_mod_wsgi`
# into a fresh module, with `_host` (this interpreter's `_wsgi_rs`) and the values below
# injected. What each name holds under wsgi-rs: README, "import mod_wsgi".

import os as _os
import time as _time

# Injected: _host, version, process_group, application_group, maximum_processes,
# threads_per_process.

FileWrapper = _host.FileWrapper
RequestTimeout = _host.RequestTimeout

# Called as callback(event_name, **event) for 'request_started', 'response_started',
# 'request_exception', 'request_finished' and 'process_stopping'; a dict returned is merged
# into the event the next callback gets.
event_callbacks = []
# Called as callback('process_stopping', shutdown_reason=...) when the process stops.
shutdown_callbacks = []


def subscribe_events(callback):
    """Calls `callback(name, **event)` for each request event and at process shutdown."""
    event_callbacks.append(callback)
    _host.track_requests()
    return callback


def subscribe_shutdown(callback):
    """Calls `callback('process_stopping', shutdown_reason=...)` when the process stops."""
    shutdown_callbacks.append(callback)
    return callback


def server_metrics():
    """Apache's scoreboard: None here, as mod_wsgi answers with WSGIServerMetrics Off."""
    return None


def request_data():
    """The current request's own dict (RuntimeError outside a request)."""
    return _host.request_data()


def process_metrics():
    """This process's counters, memory and CPU time, as mod_wsgi's process_metrics()."""
    c = _host._native_metrics()
    times = _os.times()
    now = _time.time()
    return {
        'pid': _os.getpid(),
        'request_busy_time': c[1],
        'request_count': c[0],
        'memory_max_rss': c[5],
        'memory_rss': c[6],
        'cpu_user_time': times.user,
        'cpu_system_time': times.system,
        'restart_time': c[4],
        'current_time': now,
        'running_time': int(now - c[4]),
        'request_threads': len(c[3]),
        'active_requests': c[2],
        'threads': [{'thread_id': t, 'request_count': n} for t, n in c[3]],
    }


_sample = None


def request_metrics():
    """The counters since the previous call ({} on the first call, which starts the
    sampling), as mod_wsgi's request_metrics(), without its time histograms."""
    global _sample
    now = _time.time()
    c = _host._native_metrics()
    times = _os.times()
    previous, _sample = _sample, (now, c, times)
    if previous is None:
        return {}
    start, c0, times0 = previous
    period = now - start
    per_second = (lambda x: x / period) if period > 0 else (lambda x: 0.0)
    count = c[0] - c0[0]
    busy = c[1] - c0[1]
    before = dict(c0[3])
    size = max([threads_per_process] + [t for t, _ in c[3]])
    buckets = [0] * size
    for t, n in c[3]:
        buckets[t - 1] = n - before.get(t, 0)
    return {
        'pid': _os.getpid(),
        'start_time': start,
        'stop_time': now,
        'sample_period': period,
        'cpu_user_time': per_second(times.user - times0.user),
        'cpu_system_time': per_second(times.system - times0.system),
        'memory_max_rss': c[5],
        'memory_rss': c[6],
        'request_threads_maximum': threads_per_process,
        'request_threads_started': len(c[3]),
        'request_threads_active': sum(1 for n in buckets if n),
        'request_threads_buckets': buckets,
        'capacity_utilization': per_second(busy) / threads_per_process,
        'request_count': count,
        'request_throughput': per_second(count),
        'application_time': busy / count if count else 0.0,
    }


def __getattr__(name):
    # `active_requests` is made on first use, which starts tracking requests (a request costs
    # nothing more until something asks for it).
    if name == 'active_requests':
        return _host.track_requests()
    raise AttributeError('module %r has no attribute %r' % (__name__, name))


def __dir__():
    return sorted(set(globals()) | {'active_requests'})
