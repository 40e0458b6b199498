//! In-process integration tests against the real embedded CPython (one Runtime shared by
//! every test of this binary). Scenarios needing their own start-up config are in
//! `scenarios.rs`.

mod util;

use std::io;
use std::sync::Arc;

use util::{Generated, VecSink, call, get, head, runtime, script};
use wsgi_interp::{
    CallOptions, LoadStatus, Outcome, ReloadMode, RequestHead, ScriptError, ScriptSpec,
};
use wsgi_testkit::apps;

const HELLO: &str = r#"
def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'hello ', environ['mod_wsgi.application_group'].encode()]
"#;

#[test]
fn hello_in_main_and_sub() {
    let spec = script("hello.wsgi", HELLO);
    for group in ["", "hello-sub"] {
        let interp = runtime().interpreter(group).unwrap();
        let (out, sink) = get(&interp, &spec);
        assert!(
            matches!(out, Outcome::Complete { status: 200, body_bytes } if body_bytes == 6 + group.len() as u64),
            "{out:?}"
        );
        assert_eq!(sink.body, format!("hello {group}").as_bytes());
        assert_eq!(sink.status, Some((200, "OK".into())));
        assert_eq!(sink.header("content-type").as_deref(), Some("text/plain"));
    }
}

#[test]
fn interpreters_are_isolated() {
    let rt = runtime();
    let handles: Vec<_> = ["", "iso-a", "iso-b"]
        .iter()
        .map(|g| rt.interpreter(g).unwrap())
        .collect();
    let mut ids = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        let id = h
            .run(|py| {
                py.exec(&format!("import sys\nCOUNT = globals().get('COUNT', 0) + {}\nsys.modules.setdefault('iso_marker', type(sys)('iso_marker')).tag = {i}", i + 1))
                    .unwrap();
                py.eval("(id(sys.modules), COUNT, sys.modules['iso_marker'].tag)").unwrap()
            })
            .unwrap();
        ids.push(id);
    }
    let parsed: Vec<(String, String, String)> = ids
        .iter()
        .map(|s| {
            let parts: Vec<String> = s
                .trim_matches(|c| c == '(' || c == ')')
                .split(", ")
                .map(str::to_string)
                .collect();
            (parts[0].clone(), parts[1].clone(), parts[2].clone())
        })
        .collect();
    assert_ne!(parsed[0].0, parsed[1].0);
    assert_ne!(parsed[1].0, parsed[2].0);
    for (i, p) in parsed.iter().enumerate() {
        assert_eq!(p.2, i.to_string(), "{ids:?}");
    }
    // Same group again: same module state.
    let again = handles[1]
        .run(|py| py.eval("sys.modules['iso_marker'].tag").unwrap())
        .unwrap();
    assert_eq!(again, "1");
    assert_eq!(
        rt.interpreter("iso-a")
            .unwrap()
            .run(|py| py.group().to_string())
            .unwrap(),
        "iso-a"
    );
}

#[test]
fn nested_attach_to_another_interpreter_is_refused() {
    let rt = runtime();
    let a = rt.interpreter("nest-a").unwrap();
    let b = rt.interpreter("nest-b").unwrap();
    let r = a.run(|_| b.run(|_| ()).map_err(|e| e.to_string())).unwrap();
    assert!(
        r.unwrap_err()
            .contains("already running Python in application group `nest-a`")
    );
    // Same interpreter nests fine.
    assert_eq!(
        a.run(|_| a.run(|py| py.eval("1+1").unwrap()).unwrap())
            .unwrap(),
        "2"
    );
    assert!(
        a.run(|_| rt.interpreter("nest-c").map(|_| ()))
            .unwrap()
            .is_err()
    );
}

#[test]
fn environ_is_complete() {
    let spec = script(
        "environ.wsgi",
        r#"
def application(environ, start_response):
    keys = ['REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'SERVER_NAME', 'SERVER_PORT',
            'SERVER_PROTOCOL', 'REMOTE_ADDR', 'REMOTE_PORT', 'HTTP_HOST', 'HTTP_X_MULTI', 'HTTP_COOKIE',
            'CONTENT_TYPE', 'wsgi.url_scheme', 'mod_wsgi.process_group', 'mod_wsgi.application_group',
            'mod_wsgi.callable_object', 'mod_wsgi.script_reloading', 'mod_wsgi.path_info',
            'mod_wsgi.queue_start', 'mod_wsgi.daemon_start', 'mod_wsgi.request_id']
    out = ['%s=%s' % (k, environ.get(k)) for k in keys]
    out.append('version=%r' % (environ['wsgi.version'],))
    out.append('mversion=%r' % (environ['mod_wsgi.version'],))
    out.append('flags=%r' % ((environ['wsgi.multithread'], environ['wsgi.multiprocess'], environ['wsgi.run_once'], environ['wsgi.input_terminated']),))
    out.append('apache=%r' % (environ['apache.version'],))
    out.append('times=%s' % [type(environ['mod_wsgi.' + k]).__name__ for k in ('request_start', 'application_start')])
    out.append('pid=%s thread=%s' % (environ['mod_wsgi.server_pid'] == str(__import__('os').getpid()), environ['mod_wsgi.thread_id'] >= 1))
    out.append('types=%s' % sorted(set(type(v).__name__ for k, v in environ.items() if k.isupper())))
    out.append('nounderscore=%s' % ('HTTP_X_BAD' not in environ and 'HTTP_X_BAD_NAME' not in environ))
    environ['wsgi.errors'].write('hello from wsgi.errors\n')
    start_response('200 OK', [])
    return ['\n'.join(out).encode('utf-8')]
"#,
    );
    let interp = runtime().interpreter("environ").unwrap();
    let mut h = head();
    h.path_info = b"/caf\xe9".to_vec();
    h.headers.extend([
        ("X-Multi".to_string(), b"1".to_vec()),
        ("X-Multi".to_string(), b"2".to_vec()),
        ("Cookie".to_string(), b"a=1".to_vec()),
        ("Cookie".to_string(), b"b=2".to_vec()),
        ("X_Bad_Name".to_string(), b"evil".to_vec()),
        ("Content-Type".to_string(), b"text/plain".to_vec()),
    ]);
    let opts = CallOptions {
        process_group: "pg".into(),
        multithread: true,
        ..Default::default()
    };
    let mut sink = VecSink::default();
    let out = interp.call(&spec, &h, &opts, &mut io::empty(), &mut sink);
    assert!(
        matches!(out, Outcome::Complete { status: 200, .. }),
        "{out:?}"
    );
    let body = String::from_utf8(sink.body).unwrap();
    for expected in [
        "REQUEST_METHOD=GET",
        "SCRIPT_NAME=/app",
        "PATH_INFO=/café",
        "QUERY_STRING=a=1",
        "SERVER_PORT=8080",
        "HTTP_X_MULTI=1, 2",
        "HTTP_COOKIE=a=1; b=2",
        "CONTENT_TYPE=text/plain",
        "wsgi.url_scheme=http",
        "mod_wsgi.process_group=pg",
        "mod_wsgi.application_group=environ",
        "mod_wsgi.callable_object=application",
        "mod_wsgi.script_reloading=None",
        "mod_wsgi.path_info=/café",
        "mod_wsgi.queue_start=0.0",
        "mod_wsgi.daemon_start=0.0",
        "mod_wsgi.request_id=None",
        "apache=(2, 4, 0)",
        "times=['float', 'float']",
        "pid=True thread=True",
        "version=(1, 0)",
        "mversion=(6, 0, 0)",
        "flags=(True, False, False, True)",
        "types=['str']",
        "nounderscore=True",
    ] {
        assert!(
            body.lines().any(|l| l == expected),
            "missing {expected:?} in\n{body}"
        );
    }
}

#[test]
fn wsgiref_validator_accepts_us() {
    let spec = script(
        "validated.wsgi",
        r#"
from wsgiref.validate import validator

def app(environ, start_response):
    data = environ['wsgi.input'].read(int(environ['CONTENT_LENGTH']))
    lines = environ['wsgi.input'].readlines()
    environ['wsgi.errors'].write('validated\n')
    environ['wsgi.errors'].flush()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(data) + 3))])
    return [b'ok:', data]

application = validator(app)
"#,
    );
    let interp = runtime().interpreter("validated").unwrap();
    let mut h = head();
    h.headers.push(("Content-Length".into(), b"5".to_vec()));
    let mut sink = VecSink::default();
    let out = interp.call(
        &spec,
        &h,
        &CallOptions::default(),
        &mut b"hello".as_slice(),
        &mut sink,
    );
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 200,
                body_bytes: 8
            }
        ),
        "{out:?}"
    );
    assert_eq!(sink.body, b"ok:hello");
}

#[test]
fn input_stream_methods() {
    let spec = script(
        "input.wsgi",
        r#"
def application(environ, start_response):
    inp = environ['wsgi.input']
    parts = [inp.readline(), inp.readline(3), inp.readline(), inp.read(4)]
    parts += list(inp.readlines(1))
    parts += [line for line in inp]
    parts.append(inp.read())
    parts.append(inp.read(10))
    start_response('200 OK', [])
    return [repr(parts).encode()]
"#,
    );
    let interp = runtime().interpreter("").unwrap();
    let mut sink = VecSink::default();
    let body = b"line1\nabcdef\nxyz0123\nr1\nr2\nr3\ntail";
    let out = interp.call(
        &spec,
        &head(),
        &CallOptions::default(),
        &mut body.as_slice(),
        &mut sink,
    );
    assert!(matches!(out, Outcome::Complete { .. }), "{out:?}");
    assert_eq!(
        String::from_utf8(sink.body).unwrap(),
        "[b'line1\\n', b'abc', b'def\\n', b'xyz0', b'123\\n', b'r1\\n', b'r2\\n', b'r3\\n', b'tail', b'', b'']"
    );
}

#[test]
fn upload_of_64_mib_streams_in_bounded_chunks() {
    let spec = script(
        "upload.wsgi",
        r#"
import hashlib
def application(environ, start_response):
    inp = environ['wsgi.input']
    total = 0
    h = hashlib.md5()
    biggest = 0
    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        biggest = max(biggest, len(chunk))
        total += len(chunk)
        h.update(chunk)
    start_response('200 OK', [])
    return [('%d %d %s' % (total, biggest, h.hexdigest())).encode()]
"#,
    );
    const SIZE: u64 = 64 * 1024 * 1024;
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let interp = runtime().interpreter("upload").unwrap();
    // The process's RSS also moves with the tests running beside this one (each starts
    // interpreters): an upload buffered whole grows it by 64 MiB every time, so take the
    // smaller growth of two uploads.
    let mut growth = Vec::new();
    for _ in 0..2 {
        let before = rss();
        let mut body = Generated {
            left: SIZE,
            max_ask: 0,
            total: 0,
        };
        let mut sink = VecSink::default();
        let out = interp.call(
            &spec,
            &head(),
            &CallOptions::default(),
            &mut body,
            &mut sink,
        );
        growth.push(rss().saturating_sub(before));
        assert!(matches!(out, Outcome::Complete { .. }), "{out:?}");
        let text = String::from_utf8(sink.body).unwrap();
        let mut fields = text.split(' ');
        assert_eq!(fields.next().unwrap(), SIZE.to_string());
        assert_eq!(fields.next().unwrap(), "65536");
        assert_eq!(body.total, SIZE);
        assert!(
            body.max_ask <= 64 * 1024,
            "a read asked for {} bytes",
            body.max_ask
        );
        if growth[0] < 32 * 1024 * 1024 {
            break;
        }
    }
    let grew = growth.iter().copied().min().unwrap();
    assert!(
        grew < 32 * 1024 * 1024,
        "RSS grew by {growth:?} bytes for 64 MiB uploads"
    );
}

#[test]
fn sixteen_threads_three_groups() {
    let spec = Arc::new(script(
        "counter.wsgi",
        r#"
import threading
COUNT = 0
LOCK = threading.Lock()
def application(environ, start_response):
    global COUNT
    with LOCK:
        COUNT += 1
    start_response('200 OK', [])
    return [environ['mod_wsgi.application_group'].encode(), b':', environ['QUERY_STRING'].encode()]
"#,
    ));
    let groups = ["conc-a", "conc-b", ""];
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                for i in 0..60 {
                    let group = groups[(t + i) % 3];
                    let interp = runtime().interpreter(group).unwrap();
                    let mut h = head();
                    h.query_string = format!("{t}-{i}").into_bytes();
                    let mut sink = VecSink::default();
                    let out = interp.call(
                        &spec,
                        &h,
                        &CallOptions::default(),
                        &mut io::empty(),
                        &mut sink,
                    );
                    assert!(
                        matches!(out, Outcome::Complete { status: 200, .. }),
                        "{out:?}"
                    );
                    assert_eq!(sink.body, format!("{group}:{t}-{i}").into_bytes());
                }
                wsgi_interp::Runtime::release_thread();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for g in ["conc-a", "conc-b"] {
        let n = runtime()
            .interpreter(g)
            .unwrap()
            .run(|py| py.eval(&format!("__import__('sys').modules['_mod_wsgi_' + __import__('hashlib').md5({:?}.encode()).hexdigest()].COUNT", spec.path.display().to_string())).unwrap())
            .unwrap();
        assert_eq!(n, "320", "group {g}");
    }
}

#[test]
fn close_is_called_when_the_client_goes_away() {
    let spec = script(
        "closing.wsgi",
        r#"
import builtins
class Body:
    def __init__(self):
        self.closed = False
    def __iter__(self):
        for i in range(100):
            yield b'chunk%d ' % i
    def close(self):
        builtins.CLOSED_BY_SERVER = getattr(builtins, 'CLOSED_BY_SERVER', 0) + 1

def application(environ, start_response):
    start_response('200 OK', [])
    return Body()
"#,
    );
    let interp = runtime().interpreter("closing").unwrap();
    let mut sink = VecSink {
        fail_on_write: Some(3),
        ..Default::default()
    };
    let out = interp.call(
        &spec,
        &head(),
        &CallOptions::default(),
        &mut io::empty(),
        &mut sink,
    );
    assert!(matches!(out, Outcome::ClientGone { .. }), "{out:?}");
    assert_eq!(sink.writes, 3);
    assert_eq!(
        interp
            .run(|py| py.eval("__import__('builtins').CLOSED_BY_SERVER").unwrap())
            .unwrap(),
        "1"
    );
}

#[test]
fn app_raising_mid_iterable_aborts_and_closes() {
    let spec = script(
        "midfail.wsgi",
        r#"
import builtins
class Body:
    def __iter__(self):
        yield b'first'
        raise RuntimeError('boom in the middle')
    def close(self):
        builtins.MID_CLOSED = True

def application(environ, start_response):
    start_response('200 OK', [])
    return Body()
"#,
    );
    let interp = runtime().interpreter("midfail").unwrap();
    let (out, sink) = get(&interp, &spec);
    match out {
        Outcome::Aborted {
            status: 200,
            sent: 5,
            error,
        } => {
            assert!(error.message.contains("boom in the middle"), "{error:?}");
            assert!(
                error.traceback.contains("midfail.wsgi"),
                "{}",
                error.traceback
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.body, b"first");
    assert_eq!(
        interp
            .run(|py| py.eval("__import__('builtins').MID_CLOSED").unwrap())
            .unwrap(),
        "True"
    );
}

#[test]
fn start_response_rules() {
    let interp = runtime().interpreter("sr-rules").unwrap();
    let twice = script(
        "twice.wsgi",
        "def application(e, sr):\n    sr('200 OK', [])\n    sr('500 Oops', [])\n    return [b'x']\n",
    );
    match get(&interp, &twice).0 {
        Outcome::Error(e) => assert!(
            e.message.contains("AssertionError") && e.message.contains("second time"),
            "{e:?}"
        ),
        other => panic!("{other:?}"),
    }
    let replaced = script(
        "excinfo.wsgi",
        r#"
import sys
def application(e, sr):
    sr('200 OK', [])
    try:
        raise ValueError('x')
    except ValueError:
        sr('500 Internal Server Error', [('Content-Type', 'text/plain')], sys.exc_info())
    return [b'error page']
"#,
    );
    let (out, sink) = get(&interp, &replaced);
    assert!(
        matches!(out, Outcome::Complete { status: 500, .. }),
        "{out:?}"
    );
    assert_eq!(sink.body, b"error page");
    let late = script(
        "late.wsgi",
        r#"
import sys
def application(e, sr):
    write = sr('200 OK', [])
    write(b'started')
    try:
        raise KeyError('late failure')
    except KeyError:
        sr('500 Internal Server Error', [], sys.exc_info())
    return [b'never']
"#,
    );
    match get(&interp, &late).0 {
        Outcome::Aborted {
            status: 200,
            sent: 7,
            error,
        } => assert!(error.message.contains("late failure"), "{error:?}"),
        other => panic!("{other:?}"),
    }
    for (name, src, needle) in [
        (
            "badstatus.wsgi",
            "def application(e, sr):\n    sr('OK', [])\n    return []\n",
            "3-digit",
        ),
        (
            "crlf.wsgi",
            "def application(e, sr):\n    sr('200 OK', [('X', 'a\\r\\nSet-Cookie: x')])\n    return []\n",
            "control character",
        ),
        (
            "nonlatin.wsgi",
            "def application(e, sr):\n    sr('200 OK', [('X', '\\u20ac')])\n    return []\n",
            "latin-1",
        ),
        (
            "bytesstatus.wsgi",
            "def application(e, sr):\n    sr(b'200 OK', [])\n    return []\n",
            "must be of type str",
        ),
        (
            "tuplehdrs.wsgi",
            "def application(e, sr):\n    sr('200 OK', (('a', 'b'),))\n    return []\n",
            "must be a list",
        ),
        (
            "nosr.wsgi",
            "def application(e, sr):\n    return [b'x']\n",
            "before calling start_response",
        ),
        (
            "strbody.wsgi",
            "def application(e, sr):\n    sr('200 OK', [])\n    return ['text']\n",
            "needs bytes",
        ),
        (
            "raises.wsgi",
            "def application(e, sr):\n    raise ZeroDivisionError('early')\n",
            "early",
        ),
    ] {
        let spec = script(name, src);
        match get(&interp, &spec) {
            (Outcome::Error(e), sink) => {
                assert!(e.message.contains(needle), "{name}: {e:?}");
                assert!(sink.status.is_none(), "{name}");
            }
            (other, _) => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn status_and_headers_reach_the_sink_as_their_latin1_bytes() {
    // ASCII text is copied straight from the str; other latin-1 text and str subclasses take
    // the encoding path: both must give the same bytes.
    let interp = runtime().interpreter("latin1").unwrap();
    let spec = script(
        "latin1.wsgi",
        r#"
class S(str):
    pass

def application(e, sr):
    sr(S('203 Non-Authoritative'), [('X-Ascii', 'plain text'), ('X-Latin', 'caf\xe9 \xff'),
        (S('X-Sub'), S('sub value')), ('X-Empty', ''), ('X-Sub-Latin', S('na\xefve'))])
    return [b'ok']
"#,
    );
    let (out, sink) = get(&interp, &spec);
    assert!(
        matches!(out, Outcome::Complete { status: 203, .. }),
        "{out:?}"
    );
    assert_eq!(sink.status, Some((203, "Non-Authoritative".to_string())));
    let expected: Vec<(String, Vec<u8>)> = [
        ("X-Ascii", b"plain text".to_vec()),
        ("X-Latin", b"caf\xe9 \xff".to_vec()),
        ("X-Sub", b"sub value".to_vec()),
        ("X-Empty", Vec::new()),
        ("X-Sub-Latin", b"na\xefve".to_vec()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect();
    assert_eq!(sink.headers, expected);
}

#[test]
fn only_a_plain_sequence_s_last_item_is_sent_as_the_last_chunk() {
    // write_last promises that no application code runs before the response ends: true after
    // the last item of a list or tuple, not for a generator (its close() and finally run
    // after), nor while someone tracks requests (the request_finished event runs after).
    let interp = runtime().interpreter("last").unwrap();
    for (name, body, expected) in [
        ("list", "[b'a', b'b', b'c']", Some(3)),
        ("tuple", "(b'only',)", Some(1)),
        ("big-then-small", "[b'x' * 70000, b'tail']", Some(2)),
        ("trailing-empty", "[b'a', b'']", None),
        ("generator", "(c for c in [b'a', b'b'])", None),
        ("empty", "[]", None),
    ] {
        let spec = script(
            &format!("last-{name}.wsgi"),
            &format!("def application(e, sr):\n    sr('200 OK', [])\n    return {body}\n"),
        );
        let (out, sink) = get(&interp, &spec);
        assert!(
            matches!(out, Outcome::Complete { status: 200, .. }),
            "{name}: {out:?}"
        );
        assert_eq!(sink.last_write, expected, "{name}");
    }
    let tracked = script(
        "last-tracked.wsgi",
        r#"
import mod_wsgi
finished = []
mod_wsgi.subscribe_events(lambda name, **kw: finished.append(name))
def application(e, sr):
    sr('200 OK', [])
    return [b'a', b'b']
"#,
    );
    let (out, sink) = get(&interp, &tracked);
    assert!(
        matches!(out, Outcome::Complete { status: 200, .. }),
        "{out:?}"
    );
    assert_eq!(sink.body, b"ab");
    assert_eq!(sink.last_write, None, "events subscribed");
}

#[test]
fn content_length_is_enforced() {
    let interp = runtime().interpreter("cl").unwrap();
    let long = script(
        "long.wsgi",
        "def application(e, sr):\n    sr('200 OK', [('Content-Length', '4')])\n    return [b'ab', b'cdef', b'never']\n",
    );
    let (out, sink) = get(&interp, &long);
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 200,
                body_bytes: 4
            }
        ),
        "{out:?}"
    );
    assert_eq!(sink.body, b"abcd");
    let short = script(
        "short.wsgi",
        "def application(e, sr):\n    sr('200 OK', [('Content-Length', '10')])\n    return [b'abc']\n",
    );
    let (out, _) = get(&interp, &short);
    assert!(
        matches!(
            out,
            Outcome::Incomplete {
                status: 200,
                declared: 10,
                sent: 3
            }
        ),
        "{out:?}"
    );
}

#[test]
fn write_callable_and_empty_body() {
    let interp = runtime().interpreter("").unwrap();
    let spec = script(
        "write.wsgi",
        "def application(e, sr):\n    w = sr('201 Created', [])\n    w(b'one ')\n    w(b'')\n    return iter([b'two'])\n",
    );
    let (out, sink) = get(&interp, &spec);
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 201,
                body_bytes: 7
            }
        ),
        "{out:?}"
    );
    assert_eq!(sink.body, b"one two");
    let empty = script(
        "empty.wsgi",
        "def application(e, sr):\n    sr('204 No Content', [])\n    return []\n",
    );
    let (out, sink) = get(&interp, &empty);
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 204,
                body_bytes: 0
            }
        ),
        "{out:?}"
    );
    assert_eq!(sink.status, Some((204, "No Content".into())));
}

#[test]
fn file_wrapper_uses_sendfile_or_iterates() {
    let data_path = util::workdir().join("data.bin");
    std::fs::write(&data_path, b"0123456789abcdef").unwrap();
    let spec = script(
        "file.wsgi",
        &format!(
            "def application(e, sr):\n    f = open({:?}, 'rb')\n    f.seek(3)\n    sr('200 OK', [])\n    return e['wsgi.file_wrapper'](f, 4)\n",
            data_path.display().to_string()
        ),
    );
    let interp = runtime().interpreter("files").unwrap();
    let mut sink = VecSink {
        sendfile: true,
        ..Default::default()
    };
    let out = interp.call(
        &spec,
        &head(),
        &CallOptions::default(),
        &mut io::empty(),
        &mut sink,
    );
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 200,
                body_bytes: 13
            }
        ),
        "{out:?}"
    );
    assert_eq!(sink.files, vec![(3, 13)]);
    assert_eq!(sink.header("Content-Length").as_deref(), Some("13"));
    assert_eq!(sink.body, b"3456789abcdef");
    let (out, sink) = get(&interp, &spec);
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 200,
                body_bytes: 13
            }
        ),
        "{out:?}"
    );
    assert!(sink.files.is_empty());
    assert_eq!(sink.writes, 4);
    assert_eq!(sink.body, b"3456789abcdef");
}

#[test]
fn script_errors_and_reloading() {
    let interp = runtime().interpreter("scripts").unwrap();
    let spec = script("reload.wsgi", "raise ImportError('broken on purpose')\n");
    match interp.load_script(&spec) {
        Err(ScriptError::Raised { path, error }) => {
            assert_eq!(path, spec.path);
            assert!(
                error.traceback.contains("broken on purpose")
                    && error.traceback.contains("reload.wsgi"),
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(
        &spec.path,
        "import os\nx = 1\nclass App: pass\ndef make_app(): pass\nhandler = App()\n_hidden = len\n",
    )
    .unwrap();
    // The error names the callables the script does define (not classes or modules).
    match interp.load_script(&spec) {
        Err(e @ ScriptError::MissingCallable { .. }) => {
            let ScriptError::MissingCallable { found, .. } = &e else {
                unreachable!()
            };
            assert_eq!(found, &["make_app".to_string()]);
            assert!(e.to_string().contains("it defines `make_app`"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let mut named = spec.clone();
    named.callable = "app".into();
    std::fs::write(
        &spec.path,
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1 ' + __name__.encode()]\n",
    )
    .unwrap();
    assert_eq!(interp.load_script(&named).unwrap(), LoadStatus::Loaded);
    assert_eq!(interp.load_script(&named).unwrap(), LoadStatus::Unchanged);
    let (_, sink) = get(&interp, &named);
    let body = String::from_utf8(sink.body).unwrap();
    assert!(
        body.starts_with("v1 _mod_wsgi_") && body.len() == 3 + 10 + 32,
        "{body}"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        &spec.path,
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'v2']\n",
    )
    .unwrap();
    let mut report = named.clone();
    report.reload = ReloadMode::Report;
    assert_eq!(interp.load_script(&report).unwrap(), LoadStatus::Changed);
    assert!(matches!(get(&interp, &report).0, Outcome::ScriptChanged));
    assert_eq!(get(&interp, &named).1.body, b"v2");
    let missing = wsgi_interp::ScriptSpec::new("/var/tmp/wsgi-rs-test/no/such.wsgi");
    assert!(matches!(
        get(&interp, &missing).0,
        Outcome::Script(ScriptError::NotFound { .. })
    ));
}

#[test]
fn panicking_sink_becomes_a_python_exception() {
    #[derive(Default)]
    struct PanicSink {
        panicked: bool,
        body: Vec<u8>,
    }
    impl wsgi_interp::ResponseSink for PanicSink {
        fn start(&mut self, _: u16, _: &str, _: Vec<(String, Vec<u8>)>) -> io::Result<()> {
            Ok(())
        }
        fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
            if !self.panicked {
                self.panicked = true;
                panic!("sink exploded");
            }
            self.body.extend_from_slice(chunk);
            Ok(())
        }
    }
    let spec = script(
        "panic.wsgi",
        "def application(e, sr):\n    w = sr('200 OK', [])\n    try:\n        w(b'x')\n    except RuntimeError as exc:\n        return [str(exc).encode()]\n    return [b'no exception']\n",
    );
    let interp = runtime().interpreter("panics").unwrap();
    let mut sink = PanicSink::default();
    let out = interp.call(
        &spec,
        &head(),
        &CallOptions::default(),
        &mut io::empty(),
        &mut sink,
    );
    assert!(
        matches!(out, Outcome::Complete { status: 200, .. }),
        "{out:?}"
    );
    assert_eq!(
        String::from_utf8(sink.body).unwrap(),
        "wsgi-rs internal error in write: sink exploded"
    );
    assert_eq!(interp.run(|py| py.eval("1 + 1").unwrap()).unwrap(), "2");
}

const AUTH_HOOKS: &str = r#"
CALLS = []

def allow_access(environ, host):
    CALLS.append('access')
    if 'wsgi.input' in environ or 'wsgi.file_wrapper' in environ:
        raise AssertionError('hooks get no wsgi.input')
    if host == 'raise':
        raise RuntimeError('access check failed on purpose')
    if host == 'odd':
        return 1
    return {'good': True, 'bad': False}.get(host)

def check_password(environ, user, password):
    if user == 'alice':
        return password == 'secret'
    if user == 'bob':
        return 'robert'
    return None

def get_realm_hash(environ, user, realm):
    return b'0123abcd' if user == 'alice' else None

def groups_for_user(environ, user):
    environ['wsgi.errors'].write('groups for %s' % user)
    return (g for g in ['admin', b'staff'])

def process_group(environ):
    return environ['mod_wsgi.application_group'] + '|' + environ['PATH_INFO'] + '|' + str('mod_wsgi.callable_object' in environ)
"#;

#[test]
fn hook_scripts_answer_with_typed_values() {
    use wsgi_interp::hook_scripts::{
        AccessDecision, HookArg, HookError, HookFunction, HookScript, HookValue, PasswordDecision,
        RealmHash, groups_from_hook, override_from_hook,
    };
    let spec = script("hooks.wsgi", AUTH_HOOKS);
    let hooks = HookScript {
        path: spec.path.clone(),
        directive: "WSGIAuthUserScript",
        reload: true,
    };
    let interp = runtime().interpreter("hooks").unwrap();
    let opts = CallOptions::default();
    let call =
        |f: HookFunction, args: &[HookArg]| interp.call_hook(&hooks, f, &head(), &opts, args);
    let host = |h: &str| call(HookFunction::ALLOW_ACCESS, &[HookArg::Str(h.into())]);
    let access = |h: &str| AccessDecision::from_hook(&hooks, host(h).unwrap());
    assert_eq!(access("good").unwrap(), AccessDecision::Allow);
    assert_eq!(access("bad").unwrap(), AccessDecision::Deny);
    assert_eq!(access("other").unwrap(), AccessDecision::Decline);
    assert_eq!(host("odd").unwrap(), HookValue::Other("int".into()));
    assert!(access("odd").is_err());
    match host("raise") {
        Err(HookError::Raised {
            error, function, ..
        }) => {
            assert_eq!(function, HookFunction::ALLOW_ACCESS);
            assert_eq!(error.type_name, "RuntimeError");
            assert!(
                error.traceback.contains("access check failed on purpose")
                    && error.traceback.contains("hooks.wsgi"),
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let password = |user: &str, pw: &str| {
        PasswordDecision::from_hook(
            &hooks,
            call(
                HookFunction::CHECK_PASSWORD,
                &[
                    HookArg::Latin1(user.as_bytes().to_vec()),
                    HookArg::Latin1(pw.as_bytes().to_vec()),
                ],
            )
            .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(password("alice", "secret"), PasswordDecision::Granted);
    assert_eq!(password("alice", "wrong"), PasswordDecision::Denied);
    assert_eq!(
        password("bob", "x"),
        PasswordDecision::GrantedAs("robert".into())
    );
    assert_eq!(password("carol", "x"), PasswordDecision::UnknownUser);
    let realm = call(
        HookFunction::GET_REALM_HASH,
        &[HookArg::Str("alice".into()), HookArg::Str("r".into())],
    )
    .unwrap();
    assert_eq!(
        RealmHash::from_hook(&hooks, realm).unwrap(),
        RealmHash::Found("0123abcd".into())
    );
    let groups = call(
        HookFunction::GROUPS_FOR_USER,
        &[HookArg::Str("alice".into())],
    )
    .unwrap();
    assert_eq!(
        groups_from_hook(&hooks, groups).unwrap(),
        vec!["admin".to_string(), "staff".to_string()]
    );
    // The environ: the interpreter's group, the request's PATH_INFO, no callable object.
    let pg = call(HookFunction::PROCESS_GROUP, &[]).unwrap();
    assert_eq!(
        override_from_hook(&hooks, HookFunction::PROCESS_GROUP, pg).unwrap(),
        Some("hooks|/x|False".into())
    );
    // Optional functions are reported as missing, with the fix.
    let missing = call(HookFunction::APPLICATION_GROUP, &[]).unwrap_err();
    assert!(missing.is_missing_function(), "{missing}");
    assert!(
        missing
            .to_string()
            .contains("has no application_group(environ) function"),
        "{missing}"
    );
    // The module was executed once: its state persists between calls (six access checks).
    let calls = interp
        .run(|py| {
            py.eval("len(__import__('sys').modules['_mod_wsgi_' + __import__('hashlib').md5(b'''PATH''').hexdigest()].CALLS)".replace("PATH", &hooks.path.display().to_string()).as_str())
                .unwrap()
        })
        .unwrap();
    assert_eq!(calls, "6");
}

#[test]
fn hook_scripts_reload_when_changed_and_report_load_errors() {
    use wsgi_interp::hook_scripts::{HookArg, HookError, HookFunction, HookScript, HookValue};
    let spec = script(
        "reloading-hooks.wsgi",
        "def allow_access(environ, host):\n    return True\n",
    );
    let mut hooks = HookScript {
        path: spec.path.clone(),
        directive: "WSGIAccessScript",
        reload: true,
    };
    let interp = runtime().interpreter("").unwrap();
    let opts = CallOptions::default();
    let ask = |h: &HookScript| {
        interp.call_hook(
            h,
            HookFunction::ALLOW_ACCESS,
            &head(),
            &opts,
            &[HookArg::Str("h".into())],
        )
    };
    assert_eq!(ask(&hooks).unwrap(), HookValue::Bool(true));
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        &spec.path,
        "def allow_access(environ, host):\n    return False\n",
    )
    .unwrap();
    hooks.reload = false;
    assert_eq!(ask(&hooks).unwrap(), HookValue::Bool(true), "reloading off");
    hooks.reload = true;
    assert_eq!(ask(&hooks).unwrap(), HookValue::Bool(false), "reloaded");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&spec.path, "raise ImportError('hook broken on purpose')\n").unwrap();
    match ask(&hooks) {
        Err(e @ HookError::Load { .. }) => {
            let text = e.to_string();
            assert!(text.contains("hook broken on purpose"), "{text}");
            assert!(text.starts_with("the WSGIAccessScript "), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let gone = HookScript {
        path: "/var/tmp/wsgi-rs-test/no/such-hook.wsgi".into(),
        ..hooks.clone()
    };
    assert!(matches!(ask(&gone), Err(HookError::NotFound { .. })));
    let relative = HookScript {
        path: "hook.wsgi".into(),
        ..hooks
    };
    assert!(matches!(ask(&relative), Err(HookError::NotAbsolute { .. })));
}

/// One script, two callables in the same interpreter (a `WSGICallableObject` per location,
/// or a dispatch script's choice): each request gets the one it names, from the module loaded
/// once; a name the module lacks is reported as missing.
#[test]
fn two_callables_of_one_script() {
    let interp = runtime().interpreter("two-callables").unwrap();
    let first = script(
        "two.wsgi",
        "LOADS = []\nLOADS.append(1)\n\ndef application(e, sr):\n    sr('200 OK', [])\n    return [b'application %d' % len(LOADS)]\n\ndef other(e, sr):\n    sr('200 OK', [])\n    return [b'other %d' % len(LOADS)]\n",
    );
    let mut second = first.clone();
    second.callable = "other".into();
    assert_eq!(get(&interp, &first).1.body, b"application 1");
    assert_eq!(get(&interp, &second).1.body, b"other 1");
    assert_eq!(get(&interp, &first).1.body, b"application 1");
    let mut missing = first.clone();
    missing.callable = "nowhere".into();
    assert!(matches!(
        interp.load_script(&missing),
        Err(ScriptError::MissingCallable { callable, found, .. })
            if callable == "nowhere" && found == ["application", "other"]
    ));
}

/// Evaluates `expr` after `setup` in the interpreter of `group`, panicking with the traceback.
fn eval_in(group: &str, setup: &str, expr: &str) -> String {
    runtime()
        .interpreter(group)
        .unwrap()
        .run(|py| {
            py.exec(setup).unwrap_or_else(|e| panic!("{}", e.traceback));
            py.eval(expr).unwrap_or_else(|e| panic!("{}", e.traceback))
        })
        .unwrap()
}

#[test]
fn import_mod_wsgi_in_main_and_sub_interpreters() {
    let (a, b, c) = wsgi_interp::MOD_WSGI_VERSION;
    for group in ["", "modwsgi-names"] {
        let ev = |expr: &str| eval_in(group, "import mod_wsgi, _wsgi_rs", expr);
        assert_eq!(
            ev("sorted(n for n in dir(mod_wsgi) if not n.startswith('_'))"),
            apps::MOD_WSGI_NAMES,
            "{group:?}"
        );
        assert_eq!(ev("repr(mod_wsgi.application_group)"), format!("'{group}'"));
        // The shared test runtime is started with the defaults: embedded, one of each.
        assert_eq!(ev("repr(mod_wsgi.process_group)"), "''");
        assert_eq!(
            ev("(mod_wsgi.maximum_processes, mod_wsgi.threads_per_process)"),
            "(1, 1)"
        );
        assert_eq!(ev("mod_wsgi.version"), format!("({a}, {b}, {c})"));
        assert_eq!(
            ev(
                "(mod_wsgi.RequestTimeout is _wsgi_rs.RequestTimeout, issubclass(mod_wsgi.RequestTimeout, BaseException), issubclass(mod_wsgi.RequestTimeout, Exception))"
            ),
            "(True, True, False)"
        );
        assert_eq!(ev("mod_wsgi.FileWrapper is _wsgi_rs.FileWrapper"), "True");
        assert_eq!(
            ev(
                "[type(getattr(mod_wsgi, n)).__name__ for n in ('event_callbacks', 'shutdown_callbacks', 'active_requests', 'version')]"
            ),
            "['list', 'list', 'dict', 'tuple']"
        );
        assert_eq!(ev("mod_wsgi.server_metrics()"), "None");
        assert_eq!(
            ev("__import__('importlib.util').util.find_spec('mod_wsgi').name"),
            "mod_wsgi"
        );
        let outside = runtime()
            .interpreter(group)
            .unwrap()
            .run(|py| py.exec("import mod_wsgi\nmod_wsgi.request_data()"))
            .unwrap()
            .unwrap_err();
        assert_eq!(outside.type_name, "RuntimeError");
        assert_eq!(outside.message, "no active request for thread");
        let metrics =
            ev("sorted((k, type(v).__name__) for k, v in mod_wsgi.process_metrics().items())");
        assert_eq!(
            metrics,
            "[('active_requests', 'int'), ('cpu_system_time', 'float'), ('cpu_user_time', 'float'), ('current_time', 'float'), ('memory_max_rss', 'int'), ('memory_rss', 'int'), ('pid', 'int'), ('request_busy_time', 'float'), ('request_count', 'int'), ('request_threads', 'int'), ('restart_time', 'float'), ('running_time', 'int'), ('threads', 'list')]"
        );
        assert_eq!(
            ev(
                "(lambda m: (m['pid'] == __import__('os').getpid(), m['memory_rss'] > 1000000, m['restart_time'] <= m['current_time']))(mod_wsgi.process_metrics())"
            ),
            "(True, True, True)"
        );
    }
    // Each interpreter has its own module.
    assert_ne!(
        eval_in("modwsgi-names", "import mod_wsgi", "id(mod_wsgi)"),
        eval_in("", "import mod_wsgi", "id(mod_wsgi)")
    );
}

#[test]
fn file_wrapper_is_mod_wsgi_file_wrapper() {
    let spec = script(
        "file-wrapper-class.wsgi",
        r#"
import mod_wsgi
def application(environ, start_response):
    start_response('200 OK', [])
    return [repr(environ['wsgi.file_wrapper'] is mod_wsgi.FileWrapper).encode()]
"#,
    );
    let (_, sink) = get(&runtime().interpreter("modwsgi-fw").unwrap(), &spec);
    assert_eq!(sink.body, b"True");
}

#[test]
fn process_metrics_count_requests() {
    let spec = script(
        "metrics.wsgi",
        r#"
import mod_wsgi
def application(environ, start_response):
    m = mod_wsgi.process_metrics()
    start_response('200 OK', [])
    return [('%d %d %d' % (m['request_count'], m['active_requests'], len(m['threads']))).encode()]
"#,
    );
    let interp = runtime().interpreter("modwsgi-metrics").unwrap();
    let read = |sink: VecSink| -> Vec<u64> {
        String::from_utf8(sink.body)
            .unwrap()
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let first = read(get(&interp, &spec).1);
    for _ in 0..3 {
        get(&interp, &spec);
    }
    let last = read(get(&interp, &spec).1);
    // Other tests of this binary call concurrently: at least these four finished meanwhile.
    assert!(last[0] >= first[0] + 4, "{first:?} {last:?}");
    assert!(
        first[1] >= 1 && last[1] >= 1,
        "the request itself is active"
    );
    assert!(last[2] >= 1);
    // request_metrics: {} first, then the interval's counts.
    let rm = eval_in(
        "modwsgi-metrics",
        "import mod_wsgi\nfirst = mod_wsgi.request_metrics()",
        "first",
    );
    assert_eq!(rm, "{}");
    for _ in 0..2 {
        get(&interp, &spec);
    }
    let rm = eval_in(
        "modwsgi-metrics",
        "m = mod_wsgi.request_metrics()",
        "(m['request_count'] >= 2, m['request_threads_maximum'], m['sample_period'] > 0, sum(m['request_threads_buckets']) == m['request_count'], sorted(m))",
    );
    assert_eq!(
        rm,
        "(True, 1, True, True, ['application_time', 'capacity_utilization', 'cpu_system_time', 'cpu_user_time', 'memory_max_rss', 'memory_rss', 'pid', 'request_count', 'request_threads_active', 'request_threads_buckets', 'request_threads_maximum', 'request_threads_started', 'request_throughput', 'sample_period', 'start_time', 'stop_time'])"
    );
}

#[test]
fn request_data_and_active_requests() {
    // An interpreter where nothing tracked requests yet: request_data() works in the request
    // that asks first, and starts tracking for the next ones.
    let spec = script(
        "request-data.wsgi",
        r#"
import mod_wsgi
def application(environ, start_response):
    d = mod_wsgi.request_data()
    d['path'] = environ['PATH_INFO']
    same = mod_wsgi.request_data() is d
    active = [v for v in mod_wsgi.active_requests.values()]
    start_response('200 OK', [])
    return [repr((same, len(active), any(v is d for v in active))).encode()]
"#,
    );
    let interp = runtime().interpreter("modwsgi-data").unwrap();
    let (out, sink) = get(&interp, &spec);
    assert!(
        matches!(out, Outcome::Complete { status: 200, .. }),
        "{out:?}"
    );
    // Begun untracked: its own dict, not listed.
    assert_eq!(sink.body, b"(True, 0, False)");
    let (_, sink) = get(&interp, &spec);
    assert_eq!(sink.body, b"(True, 1, True)");
    // Nothing left active, and no request data outside a request.
    assert_eq!(
        eval_in(
            "modwsgi-data",
            "import mod_wsgi\ntry:\n    mod_wsgi.request_data()\n    r = 'data'\nexcept RuntimeError as e:\n    r = str(e)",
            "(mod_wsgi.active_requests, r)"
        ),
        "({}, 'no active request for thread')"
    );
}

#[test]
fn request_events_reach_subscribers() {
    let spec = script(
        "events.wsgi",
        r#"
import mod_wsgi
events = []

def record(name, **event):
    events.append((name, event))
    if name == 'request_started' and event['request_environ']['PATH_INFO'] == '/wrapped':
        app = event['application_object']
        def wrapped(environ, start_response):
            return [b'wrapped:'] + list(app(environ, start_response))
        return {'application_object': wrapped}

mod_wsgi.subscribe_events(record)

def application(environ, start_response):
    mod_wsgi.request_data()['seen'] = True
    if environ['PATH_INFO'] == '/fail':
        raise ValueError('boom')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
"#,
    );
    let interp = runtime().interpreter("modwsgi-events").unwrap();
    let call = |path: &str| {
        let mut h = head();
        h.path_info = path.as_bytes().to_vec();
        let mut sink = VecSink::default();
        let out = interp.call(
            &spec,
            &h,
            &CallOptions::default(),
            &mut io::empty(),
            &mut sink,
        );
        (out, sink)
    };
    let (out, sink) = call("/x");
    assert!(
        matches!(out, Outcome::Complete { status: 200, .. }),
        "{out:?}"
    );
    assert_eq!(sink.body, b"ok");
    // The script's module, where its callback recorded the events.
    let setup = "import sys\nm = [v for k, v in sys.modules.items() if k.startswith('_mod_wsgi_') and hasattr(v, 'events')][0]";
    let ev = |expr: &str| eval_in("modwsgi-events", setup, expr);
    assert_eq!(
        ev("[n for n, e in m.events]"),
        "['request_started', 'response_started', 'request_finished']"
    );
    assert_eq!(
        ev(
            "(lambda e: (e[0][1]['request_data'], e[0][1]['thread_id'] >= 1, e[0][1]['callable_object'], e[1][1]['response_status'], e[1][1]['response_headers'], e[2][1]['output_length'], e[2][1]['application_time'] >= 0, e[0][1]['request_id'] == e[2][1]['request_id']))(m.events)"
        ),
        "({'seen': True}, True, 'application', '200 OK', [('Content-Type', 'text/plain')], 2, True, True)"
    );
    ev("m.events.clear()");
    let (out, _) = call("/fail");
    assert!(matches!(out, Outcome::Error(_)), "{out:?}");
    assert_eq!(
        ev(
            "[(n, e['exception_info'][0].__name__ if n == 'request_exception' else None) for n, e in m.events]"
        ),
        "[('request_started', None), ('request_exception', 'ValueError'), ('request_finished', None)]"
    );
    let (_, sink) = call("/wrapped");
    assert_eq!(sink.body, b"wrapped:ok");
    assert_eq!(ev("len(__import__('mod_wsgi').active_requests)"), "0");
}

/// The interpreter keeps the `str` of a repeated value (the Host header, the server's name,
/// the client's address, the extras a front adds): the value an application sees is still each
/// request's own when it changes, back and forth, and an extra still overrides it.
#[test]
fn repeated_environ_values_are_each_requests_own() {
    let spec = script(
        "repeat.wsgi",
        r#"
def application(environ, start_response):
    start_response('200 OK', [])
    keys = ['HTTP_HOST', 'SERVER_NAME', 'REMOTE_ADDR', 'DOCUMENT_ROOT', 'HTTP_USER_AGENT']
    return [' '.join('%s=%s' % (k, environ.get(k)) for k in keys).encode('utf-8')]
"#,
    );
    let interp = runtime().interpreter("repeat").unwrap();
    let call = |host: &[u8], server: &str, addr: &str, root: &[u8], agent: Option<&[u8]>| {
        let mut h = head();
        h.headers = vec![("Host".into(), host.to_vec())];
        if let Some(agent) = agent {
            h.headers.push(("User-Agent".into(), agent.to_vec()));
        }
        h.server_name = server.into();
        h.remote_addr = addr.into();
        h.set_extra("DOCUMENT_ROOT", root.to_vec());
        let (out, sink) = call(&interp, &spec, &h);
        assert!(
            matches!(out, Outcome::Complete { status: 200, .. }),
            "{out:?}"
        );
        String::from_utf8(sink.body).unwrap()
    };
    let a = "HTTP_HOST=a.test SERVER_NAME=a.test REMOTE_ADDR=127.0.0.1 DOCUMENT_ROOT=/srv/a HTTP_USER_AGENT=curl";
    let b = "HTTP_HOST=b.tést SERVER_NAME=b.test REMOTE_ADDR=127.0.0.2 DOCUMENT_ROOT=/srv/b HTTP_USER_AGENT=None";
    for _ in 0..3 {
        assert_eq!(
            call(b"a.test", "a.test", "127.0.0.1", b"/srv/a", Some(b"curl")),
            a
        );
        assert_eq!(
            call(b"a.test", "a.test", "127.0.0.1", b"/srv/a", Some(b"curl")),
            a
        );
        assert_eq!(
            call(b"b.t\xe9st", "b.test", "127.0.0.2", b"/srv/b", None),
            b
        );
    }
    // An extra named as a header's variable overrides the cached header value.
    let mut h = head();
    h.headers = vec![("Host".into(), b"a.test".to_vec())];
    h.set_extra("HTTP_HOST", b"override.test".to_vec());
    let mut sink = VecSink::default();
    interp.call(
        &spec,
        &h,
        &CallOptions::default(),
        &mut io::empty(),
        &mut sink,
    );
    assert!(
        String::from_utf8(sink.body)
            .unwrap()
            .starts_with("HTTP_HOST=override.test ")
    );
}

/// A template also holds the request variables of the first request it served (the CGI
/// variables every request has, and its other headers and extras), so that later requests
/// with the same values set fewer keys: every request still sees its own values and only its
/// own keys, in the order it would have without them, an app that changes its environ
/// changes no later request's, and an extra naming one of them wins.
#[test]
fn environ_with_request_variables_held_by_the_template_is_each_requests_own() {
    let source = r#"
VOLATILE = {'mod_wsgi.request_start', 'mod_wsgi.application_start', 'mod_wsgi.request_id',
            'mod_wsgi.application_group'}
def application(environ, start_response):
    body = '\n'.join('%s=%r' % (k, v) for k, v in environ.items()
                     if isinstance(v, str) and k not in VOLATILE)
    environ['PATH_INFO'] = 'changed'
    environ['REMOTE_PORT'] = 'changed'
    del environ['SERVER_NAME']
    start_response('200 OK', [])
    return [body.encode()]
"#;
    let spec = script("held.wsgi", source);
    let run = |interp: &wsgi_interp::InterpreterHandle, h: &RequestHead| {
        let (out, sink) = call(interp, &spec, h);
        assert!(
            matches!(out, Outcome::Complete { status: 200, .. }),
            "{out:?}"
        );
        String::from_utf8(sink.body).unwrap()
    };
    let first = head();
    let mut other = head();
    other.method = "POST".into();
    other.path_info = b"/y".to_vec();
    other.query_string = b"".to_vec();
    other.request_uri = b"/app/y".to_vec();
    other.server_name = "other.test".into();
    other.remote_port = 41000;
    other
        .extra
        .push(("SCRIPT_FILENAME".into(), b"/srv/held.wsgi".to_vec()));
    let mut shadowing = head();
    shadowing
        .extra
        .push(("SERVER_NAME".into(), b"from-extra".to_vec()));
    // Each request's environ as an interpreter that never served another shows it.
    let fresh = |name: &str, h: &RequestHead| run(&runtime().interpreter(name).unwrap(), h);
    let (first_alone, other_alone) = (fresh("held-a", &first), fresh("held-b", &other));
    let shadowing_alone = fresh("held-c", &shadowing);
    assert!(other_alone.contains("PATH_INFO='/y'"), "{other_alone}");
    assert!(
        shadowing_alone.contains("SERVER_NAME='from-extra'"),
        "{shadowing_alone}"
    );

    // A template whose first request had an extra naming one of the keys holds them all the
    // same: the next request's environ keeps its order.
    let shadowed_first = runtime().interpreter("held-shadowed-first").unwrap();
    assert_eq!(run(&shadowed_first, &shadowing), shadowing_alone);
    assert_eq!(run(&shadowed_first, &first), first_alone);
    assert_eq!(run(&shadowed_first, &other), other_alone);
    // A template whose first request had an extra the next has not (`SCRIPT_FILENAME`) holds
    // it: the next request's environ goes without it.
    let extra_first = runtime().interpreter("held-extra-first").unwrap();
    assert_eq!(run(&extra_first, &other), other_alone);
    let without = run(&extra_first, &first);
    assert!(!without.contains("SCRIPT_FILENAME"), "{without}");
    assert_eq!(without, first_alone);
    assert_eq!(run(&extra_first, &other), other_alone);
    // A run of requests without it, longer than a template keeps losing a held key before it
    // is made anew from the request after: each environ is still the request's own, across
    // the new template and after it, with the key and without.
    let readopting = runtime().interpreter("held-readopting").unwrap();
    assert_eq!(run(&readopting, &other), other_alone);
    for _ in 0..40 {
        assert_eq!(run(&readopting, &first), first_alone);
    }
    assert_eq!(run(&readopting, &other), other_alone);
    assert_eq!(run(&readopting, &first), first_alone);
    // Scripts taking turns in one interpreter, each with a template of its own: more of them
    // than it keeps, so that templates are let go and made again.
    let twins: Vec<_> = (0..5)
        .map(|i| script(&format!("held-twin-{i}.wsgi"), source))
        .collect();
    let turns = runtime().interpreter("held-turns").unwrap();
    for _ in 0..2 {
        for twin in &twins {
            assert_eq!(run(&turns, &other), other_alone);
            let (out, sink) = call(&turns, twin, &first);
            assert!(
                matches!(out, Outcome::Complete { status: 200, .. }),
                "{out:?}"
            );
            assert_eq!(String::from_utf8(sink.body).unwrap(), first_alone);
        }
    }
    let interp = runtime().interpreter("held").unwrap();
    for _ in 0..2 {
        assert_eq!(run(&interp, &first), first_alone);
        assert_eq!(run(&interp, &other), other_alone);
        assert_eq!(run(&interp, &first), first_alone);
        // The extra's value, whatever the key's place.
        let mut got: Vec<_> = run(&interp, &shadowing).lines().map(String::from).collect();
        let mut want: Vec<_> = shadowing_alone.lines().map(String::from).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}

/// The constant part of an application call's environ is copied from one dict per
/// interpreter: each call still sees its own options, stamps and callable, an application
/// that changes its environ changes no later request's, and extras never override those keys.
#[test]
fn environ_constants_follow_each_call() {
    let source = r#"
import os
def show(environ):
    keys = ['mod_wsgi.process_group', 'mod_wsgi.callable_object', 'wsgi.multithread',
            'wsgi.run_once', 'mod_wsgi.queue_start', 'mod_wsgi.daemon_start', 'mod_wsgi.version']
    out = ['%s=%r' % (k, environ.get(k)) for k in keys]
    out.append('own_pid=%s' % (environ['mod_wsgi.server_pid'] == str(os.getpid())))
    out.append('server_pid=%s' % environ['mod_wsgi.server_pid'])
    return '\n'.join(out)

def application(environ, start_response):
    body = show(environ)
    # Nothing of this may reach a later request.
    environ['wsgi.multithread'] = 'changed'
    environ['mod_wsgi.version'] = None
    del environ['mod_wsgi.queue_start']
    start_response('200 OK', [])
    return [body.encode()]

other = application
"#;
    let plain = script("constants.wsgi", source);
    let mut renamed = script("constants.wsgi", source);
    renamed.callable = "other".into();
    let interp = runtime().interpreter("environ-constants").unwrap();
    let run = |spec: &ScriptSpec, h: &RequestHead, opts: &CallOptions| {
        let mut sink = VecSink::default();
        let out = interp.call(spec, h, opts, &mut io::empty(), &mut sink);
        assert!(
            matches!(out, Outcome::Complete { status: 200, .. }),
            "{out:?}"
        );
        String::from_utf8(sink.body).unwrap()
    };
    let threaded = CallOptions {
        process_group: "pg".into(),
        multithread: true,
        ..Default::default()
    };
    let first = run(&plain, &head(), &threaded);
    for expected in [
        "mod_wsgi.process_group='pg'",
        "mod_wsgi.callable_object='application'",
        "wsgi.multithread=True",
        "wsgi.run_once=False",
        "mod_wsgi.queue_start=0.0",
        "mod_wsgi.version=(6, 0, 0)",
        "own_pid=True",
    ] {
        assert!(first.contains(expected), "{expected} not in\n{first}");
    }
    // The same call again: the first one's changes to its environ are not seen.
    assert_eq!(run(&plain, &head(), &threaded), first);
    // Other options, another callable.
    let once = CallOptions {
        run_once: true,
        ..Default::default()
    };
    let second = run(&renamed, &head(), &once);
    for expected in [
        "mod_wsgi.process_group=''",
        "mod_wsgi.callable_object='other'",
        "wsgi.multithread=False",
        "wsgi.run_once=True",
    ] {
        assert!(second.contains(expected), "{expected} not in\n{second}");
    }
    // A request handed over by another process: its own stamps, not embedded mode's.
    let mut handed = head();
    handed.stamps.queue_start_us = 5_000_000;
    handed.stamps.daemon_start_us = 7_500_000;
    handed.stamps.server_pid = 1;
    let third = run(&plain, &handed, &threaded);
    for expected in [
        "mod_wsgi.queue_start=5.0",
        "mod_wsgi.daemon_start=7.5",
        "server_pid=1",
    ] {
        assert!(third.contains(expected), "{expected} not in\n{third}");
    }
    assert_eq!(run(&plain, &head(), &threaded), first);
    // Extras naming these keys do not override them.
    let mut shadowing = head();
    shadowing.extra.extend([
        ("mod_wsgi.process_group".into(), b"from-extra".to_vec()),
        ("wsgi.run_once".into(), b"from-extra".to_vec()),
    ]);
    let fourth = run(&plain, &shadowing, &threaded);
    assert!(!fourth.contains("from-extra"), "{fourth}");
    assert_eq!(fourth, first);
}
