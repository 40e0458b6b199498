//! WSGI test applications that the tests of several crates serve, and readers of the
//! `name=value` lines test applications answer with.

use std::collections::BTreeMap;
use std::path::Path;

/// The value of the first `name=value` line of a text body (what the test applications
/// report); panics, with the body, when there is none.
pub fn field(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Every `name=value` line of a text body, by name (the last value of a repeated name; lines
/// without `=` left out).
pub fn fields(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `dir(mod_wsgi)` of Debian's mod_wsgi 4.9.4 (its public names, sorted), plus mod_wsgi 6's
/// `RequestTimeout`: what `import mod_wsgi` gives an application under wsgi-rs.
pub const MOD_WSGI_NAMES: &str = "['FileWrapper', 'RequestTimeout', 'active_requests', 'application_group', 'event_callbacks', 'maximum_processes', 'process_group', 'process_metrics', 'request_data', 'request_metrics', 'server_metrics', 'shutdown_callbacks', 'subscribe_events', 'subscribe_shutdown', 'threads_per_process', 'version']";

/// An application answering with each environ key and its value's type, one `key=type` line
/// each: the type's name for str, bool, int, float, tuple and type, `object` for the rest
/// (`wsgi.input` and `wsgi.errors` are each server's own classes).
pub const ENVIRON_TYPES_APP: &str = r#"
PLAIN = (str, bool, int, float, tuple, type)

def application(environ, start_response):
    lines = ['%s=%s' % (k, type(v).__name__ if type(v) in PLAIN else 'object') for k, v in sorted(environ.items())]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#;

/// The `key=type` lines of an [`ENVIRON_TYPES_APP`] answer, by key.
pub fn environ_types(body: &[u8]) -> BTreeMap<String, String> {
    fields(body)
}

/// How two [`environ_types`] maps differ: keys only one has, and keys whose types differ;
/// empty when they are the same.
pub fn environ_type_differences(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, t) in theirs {
        match ours.get(k) {
            None => out.push(format!("{k}: only mod_wsgi 6.1 ({t})")),
            Some(o) if o != t => out.push(format!("{k}: mod_wsgi 6.1 {t}, ours {o}")),
            Some(_) => {}
        }
    }
    for (k, t) in ours {
        if !theirs.contains_key(k) {
            out.push(format!("{k}: only ours ({t})"));
        }
    }
    out
}

/// An application answering with the environ values that are the server's (`apache.version`,
/// `DOCUMENT_ROOT`, `SERVER_ADMIN`, `CONTEXT_*`) and with what mod_wsgi 6.1's per-request
/// numbers mean: `queue_start`/`daemon_start` 0.0 in embedded mode; in daemon mode, the
/// request, queue, daemon and application times in that order; `server_pid` the process that
/// took the connection (in daemon mode, not the one running the application).
pub const ENVIRON_VALUES_APP: &str = r#"
import os, time

def application(environ, start_response):
    keys = ['apache.version', 'DOCUMENT_ROOT', 'SERVER_ADMIN', 'CONTEXT_PREFIX', 'CONTEXT_DOCUMENT_ROOT']
    lines = ['%s=%r' % (k, environ[k]) for k in keys]
    times = [environ['mod_wsgi.' + k] for k in ('request_start', 'queue_start', 'daemon_start', 'application_start')]
    daemon = environ['mod_wsgi.process_group'] != ''
    if daemon:
        ordered = times == sorted(times) and abs(time.time() - times[0]) < 60
    else:
        ordered = times[1] == times[2] == 0.0 and times[0] <= times[3] and abs(time.time() - times[0]) < 60
    lines.append('ordered=%s' % ordered)
    lines.append('server_pid_is_own=%s' % (environ['mod_wsgi.server_pid'] == str(os.getpid())))
    lines.append('thread_id_positive=%s' % (environ['mod_wsgi.thread_id'] >= 1))
    lines.append('request_id_length=%d' % len(environ['mod_wsgi.request_id']))
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#;

/// An application answering with what `<WSGIInterpreterOptions>` can change in its
/// interpreter: its groups, the `sys.path` folders under `root` (in order), the switch
/// interval, and whether `sys.stdout` and `sys.stdin` may be used.
pub fn interpreter_probe_app(root: &Path) -> String {
    format!(
        r#"
import sys

def usable(stream):
    try:
        stream.fileno
        return 'usable'
    except OSError as e:
        return 'restricted (%s)' % e
    except Exception:
        return 'usable'

def application(environ, start_response):
    lines = [
        'groups=%r %r' % (environ['mod_wsgi.process_group'], environ['mod_wsgi.application_group']),
        'path=%s' % ' '.join(p for p in sys.path if p.startswith({root:?})),
        'switch_interval=%s' % sys.getswitchinterval(),
        'stdout=%s' % usable(sys.stdout),
        'stdin=%s' % usable(sys.stdin),
    ]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return ['\n'.join(lines).encode()]
"#,
        root = root.display().to_string()
    )
}

/// A site with `<WSGIInterpreterOptions>` sections selecting a process group, an application
/// group in it, and the main interpreter of embedded mode, with the probe at `/emb` (embedded,
/// its own sub-interpreter), `/embg` (embedded, main interpreter), `/dae` and `/daes` (daemon
/// group `d`, its own sub-interpreter and the group `special`); folders `p1`..`p3` and `pp`
/// of `root` for `sys.path`.
pub fn interpreter_options_site(root: &Path) -> String {
    for folder in ["p1", "p2", "p3", "pp"] {
        crate::fs::create_dir_world_readable(&root.join(folder));
    }
    let probe =
        crate::fs::write_world_readable(&root.join("probe.wsgi"), &interpreter_probe_app(root));
    format!(
        "WSGIPythonPath {r}/p1
<WSGIInterpreterOptions process-group=d>
    WSGIPythonPath {r}/p2
    WSGISwitchInterval 0.02
    WSGIRestrictStdin On
</WSGIInterpreterOptions>
<WSGIInterpreterOptions process-group=d application-group=special>
    WSGIPythonPath {r}/p3
    WSGIRestrictStdout On
    WSGIRestrictStdin Off
</WSGIInterpreterOptions>
<WSGIInterpreterOptions application-group=%{{GLOBAL}}>
    WSGIPythonPath {r}/p3
</WSGIInterpreterOptions>
WSGIDaemonProcess d threads=2 python-path={r}/pp
WSGIScriptAlias /emb {probe}
WSGIScriptAlias /embg {probe} application-group=%{{GLOBAL}}
WSGIScriptAlias /dae {probe} process-group=d
WSGIScriptAlias /daes {probe} process-group=d application-group=special
<Directory {r}>
    Require all granted
</Directory>
",
        r = root.display(),
        probe = probe.display()
    )
}

/// An [`interpreter_probe_app`] answer without its first line (the groups, whose default
/// names differ by design) and with `root` written `ROOT`.
pub fn interpreter_probe_answer(root: &Path, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).replace(&root.display().to_string(), "ROOT");
    text.split_once('\n')
        .map_or(text.clone(), |(_, rest)| rest.to_string())
}

/// What [`interpreter_options_site`] answers under mod_wsgi 6.1.1, by path: the sections
/// apply to the interpreters they select and to no other.
pub const INTERPRETER_OPTIONS_EXPECTED: [(&str, &str); 4] = [
    (
        "/emb",
        "path=ROOT/p1\nswitch_interval=0.005\nstdout=usable\nstdin=usable",
    ),
    (
        "/embg",
        "path=ROOT/p3 ROOT/p1\nswitch_interval=0.005\nstdout=usable\nstdin=usable",
    ),
    (
        "/dae",
        "path=ROOT/p2 ROOT/pp\nswitch_interval=0.02\nstdout=usable\nstdin=restricted (sys.stdin access restricted by mod_wsgi)",
    ),
    (
        "/daes",
        "path=ROOT/p3 ROOT/p2 ROOT/pp\nswitch_interval=0.02\nstdout=restricted (sys.stdout access restricted by mod_wsgi)\nstdin=usable",
    ),
];

/// The application of the HTTP/2 tests (both fronts): `/env` answers environ values as
/// `KEY=value` lines, `/upload` the length and SHA-1 of the body it read, `/stream` 1 MiB in 16
/// yielded chunks of 64 KiB (chunk `i` all bytes `i`), `/slow?ms=N` after N ms.
pub const PROTOCOL_APP: &str = r#"
import hashlib, time

KEYS = ['SERVER_PROTOCOL', 'REQUEST_METHOD', 'HTTP_HOST', 'REQUEST_URI', 'SCRIPT_NAME',
        'PATH_INFO', 'QUERY_STRING', 'HTTP_X_TEST', 'CONTENT_LENGTH', 'wsgi.url_scheme',
        'REMOTE_ADDR']

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/upload':
        digest, size = hashlib.sha1(), 0
        while True:
            block = environ['wsgi.input'].read(65536)
            if not block:
                break
            digest.update(block)
            size += len(block)
        body = ('%d %s' % (size, digest.hexdigest())).encode()
    elif path == '/stream':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return (bytes([i]) * 65536 for i in range(16))
    elif path == '/slow':
        time.sleep(int(environ['QUERY_STRING'].split('=')[1]) / 1000)
        body = b'slept'
    else:
        body = ''.join('%s=%s\n' % (k, environ.get(k, '<unset>')) for k in KEYS).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;

/// The daemon tests' app (wsgi-daemon's and `wsgi serve`'s daemon mode), one behaviour per
/// `PATH_INFO`; the body is the process's pid unless the path says otherwise: `/sleep?S`,
/// `/exit` (the process dies), `/hang`, `/spin?S` (CPU), `/alloc?N` (N bytes, answers N),
/// `/loaded` (when the script and the preload ran), `/switch` (`sys.getswitchinterval()`),
/// `/stack` (the worker thread's stack size), `/echo`, `/whoami` (`uid cwd process_group`),
/// `/headers` (repeated headers), `/fail-mid`, `/big-headers?N` (N 100-byte headers),
/// `/environ` (the allocator variables in `os.environ`), `/file?PATH` (`wsgi.file_wrapper`
/// of the file from its byte 10).
pub const DAEMON_APP: &str = r#"
import ctypes, os, sys, time

LOADED_AT = time.time()

def application(environ, start_response):
    path = environ['PATH_INFO']
    body = str(os.getpid()).encode()
    if path == '/sleep':
        time.sleep(float(environ['QUERY_STRING'] or '0.5'))
    elif path == '/exit':
        os._exit(1)
    elif path == '/hang':
        time.sleep(3600)
    elif path == '/spin':
        start = time.process_time()
        while time.process_time() - start < float(environ['QUERY_STRING']):
            pass
    elif path == '/alloc':
        block = bytearray(int(environ['QUERY_STRING']))
        body = str(len(block)).encode()
    elif path == '/loaded':
        body = ('%r %r' % (LOADED_AT, getattr(sys, 'preloaded_at', None))).encode()
    elif path == '/switch':
        body = repr(sys.getswitchinterval()).encode()
    elif path == '/stack':
        # This worker thread's stack size, as the C library sees it.
        libc = ctypes.CDLL(None)
        attr = ctypes.create_string_buffer(256)
        size = ctypes.c_size_t()
        libc.pthread_self.restype = ctypes.c_ulong
        assert libc.pthread_getattr_np(ctypes.c_ulong(libc.pthread_self()), attr) == 0
        assert libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0
        libc.pthread_attr_destroy(attr)
        body = str(size.value).encode()
    elif path == '/echo':
        body = environ['wsgi.input'].read()
    elif path == '/whoami':
        body = ('%d %s %s' % (os.getuid(), os.getcwd(), environ['mod_wsgi.process_group'])).encode()
    elif path == '/headers':
        start_response('201 Created', [('X-Many', 'one'), ('Set-Cookie', 'a=1'),
                                       ('X-Many', 'two'), ('Set-Cookie', 'b=2')])
        return [b'ok']
    elif path == '/fail-mid':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        def gen():
            yield b'partial'
            raise RuntimeError('failed mid-body')
        return gen()
    elif path == '/big-headers':
        start_response('200 OK', [('X-Filler-%d' % i, 'x' * 100) for i in range(int(environ['QUERY_STRING']))])
        return [body]
    elif path == '/environ':
        body = ' '.join(sorted(k for k in os.environ if k.startswith(('MIMALLOC_', 'MALLOC_')))).encode()
    elif path == '/file':
        f = open(environ['QUERY_STRING'], 'rb')
        f.seek(10)
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
"#;
