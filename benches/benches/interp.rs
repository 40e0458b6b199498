//! The embedded CPython's per-request cost (wsgi-interp): building the environ, one hello-world
//! WSGI call end to end (attach, script freshness check, environ, `start_response`, call,
//! iteration, `close()`, detach) through the main interpreter and through a sub-interpreter,
//! from a thread other than CPython's main thread, as a worker thread calls it, and the same
//! call spread over 1, 10 and 100 application groups. Compare with
//! `../shared/bench/anchors/limit.py` (the in-process floor).

use std::hint::black_box;
use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use wsgi_interp::{
    CallOptions, InterpreterHandle, Outcome, RequestHead, ResponseSink, Runtime, ScriptSpec,
    StartConfig,
};

const HELLO: &str = "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '12')])\n    return [b'Hello world!']\n";

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::start(&StartConfig::default()).expect("CPython starts"))
}

fn script() -> &'static ScriptSpec {
    static SPEC: OnceLock<ScriptSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = PathBuf::from(format!(
            "/var/tmp/wsgi-rs-bench-interp-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hello.wsgi");
        std::fs::write(&path, HELLO).unwrap();
        ScriptSpec::new(path)
    })
}

/// A request as a browser sends it (13 headers), so the environ has the usual ~35 keys.
fn head() -> RequestHead {
    let headers: Vec<(String, Vec<u8>)> = [
        ("Host", "bench.example.com"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Cookie", "session=0123456789abcdef"),
        ("Cookie", "theme=dark"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Sec-Fetch-Dest", "document"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Site", "none"),
        ("Cache-Control", "max-age=0"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    RequestHead {
        method: "GET".into(),
        script_name: b"/app".to_vec(),
        path_info: b"/users/42".to_vec(),
        query_string: b"page=2&sort=name".to_vec(),
        request_uri: b"/app/users/42?page=2&sort=name".to_vec(),
        protocol: "HTTP/1.1".into(),
        server_name: "bench.example.com".into(),
        server_port: 443,
        remote_addr: "203.0.113.9".into(),
        remote_port: 51000,
        headers,
        ..Default::default()
    }
}

/// Counts the body and drops it, as a front would after writing it out.
struct Discard(u64);

impl ResponseSink for Discard {
    fn start(&mut self, status: u16, _: &str, _: Vec<(String, Vec<u8>)>) -> io::Result<()> {
        assert_eq!(status, 200);
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0 += chunk.len() as u64;
        Ok(())
    }
}

fn call(interp: &InterpreterHandle, head: &RequestHead, opts: &CallOptions) -> u64 {
    let mut sink = Discard(0);
    let out = interp.call(script(), head, opts, &mut io::empty(), &mut sink);
    assert!(
        matches!(
            out,
            Outcome::Complete {
                status: 200,
                body_bytes: 12
            }
        ),
        "{out:?}"
    );
    sink.0
}

fn environ(c: &mut Criterion) {
    let head = head();
    let opts = CallOptions::default();
    let mut g = c.benchmark_group("interp_environ");
    for (name, group) in [("main", ""), ("sub", "bench-environ")] {
        let interp = runtime().interpreter(group).unwrap();
        interp
            .run(|py| {
                assert!(py.bench_environ(&head, &opts) > 30);
                g.bench_function(name, |b| {
                    b.iter(|| black_box(py.bench_environ(black_box(&head), &opts)))
                });
            })
            .unwrap();
    }
    g.finish();
}

fn hello(c: &mut Criterion) {
    let head = head();
    let opts = CallOptions::default();
    let mut g = c.benchmark_group("interp_hello_call");
    for (name, group) in [("main", ""), ("sub", "bench-hello")] {
        let interp = runtime().interpreter(group).unwrap();
        call(&interp, &head, &opts);
        g.bench_function(name, |b| b.iter(|| call(&interp, black_box(&head), &opts)));
    }
    g.finish();
}

fn groups(c: &mut Criterion) {
    let head = head();
    let opts = CallOptions::default();
    let mut g = c.benchmark_group("interp_hello_over_groups");
    let mut interps = Vec::new();
    for n in [1usize, 10, 100] {
        while interps.len() < n {
            let interp = runtime()
                .interpreter(&format!("bench-g{}", interps.len()))
                .unwrap();
            call(&interp, &head, &opts);
            interps.push(interp);
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) % n;
                call(&interps[i], black_box(&head), &opts)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, environ, hello, groups);
criterion_main!(benches);
