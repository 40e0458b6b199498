//! The daemon hop: frame encoding and decoding, and a whole request/response exchange over a
//! unix socket through `DaemonClient::dispatch` against a daemon stand-in (no Python), so
//! the number is the protocol's own cost.

use std::hint::black_box;
use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsgi_config::daemon_options::DaemonOptions;
use wsgi_daemon::protocol::{self, End, FrameReader, kind};
use wsgi_daemon::{DaemonClient, DaemonRequest, Endpoint};
use wsgi_interp::{AppCall, Outcome, RequestHead, ResponseSink, ScriptSpec};

fn request() -> DaemonRequest {
    let head = RequestHead {
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
        headers: vec![
            ("Host".into(), b"bench.example.com".to_vec()),
            (
                "User-Agent".into(),
                b"Mozilla/5.0 (X11; Linux x86_64) bench".to_vec(),
            ),
            ("Accept".into(), b"text/html,application/xhtml+xml".to_vec()),
            ("Accept-Encoding".into(), b"gzip, deflate, br".to_vec()),
            (
                "Cookie".into(),
                b"session=0123456789abcdef; theme=dark".to_vec(),
            ),
        ],
        ..Default::default()
    };
    let app = AppCall {
        script: ScriptSpec::new("/srv/app/app.wsgi"),
        application_group: String::new(),
        pass_authorization: false,
    };
    DaemonRequest::new(app, head)
}

fn frames(c: &mut Criterion) {
    let req = request();
    let mut g = c.benchmark_group("daemon_frame");
    g.bench_function("encode_request", |b| {
        let mut buf = Vec::with_capacity(1024);
        b.iter(|| {
            buf =
                protocol::encode_request(black_box(&req), None, std::mem::take(&mut buf)).unwrap();
            black_box(buf.len())
        })
    });
    let frame = protocol::encode_request(&req, None, Vec::new()).unwrap();
    g.bench_function("decode_request", |b| {
        b.iter(|| protocol::decode_request(black_box(&frame[protocol::HEADER_LEN..])).unwrap())
    });
    let headers = vec![
        (
            "Content-Type".to_string(),
            b"text/html; charset=utf-8".to_vec(),
        ),
        ("Set-Cookie".to_string(), b"a=1; Path=/".to_vec()),
        ("Set-Cookie".to_string(), b"b=2; Path=/".to_vec()),
        ("Cache-Control".to_string(), b"no-store".to_vec()),
    ];
    g.bench_function("encode_start", |b| {
        b.iter(|| protocol::encode_start(200, "OK", black_box(&headers)))
    });
    let start = protocol::encode_start(200, "OK", &headers);
    g.bench_function("decode_start", |b| {
        b.iter(|| protocol::decode_start(black_box(&start[protocol::HEADER_LEN..])).unwrap())
    });
    g.finish();
}

/// Answers every request on a connection with `body` in one DATA frame.
fn stand_in(conn: UnixStream, body: Vec<u8>) {
    let mut reader = FrameReader::new(&conn);
    let mut out = io::BufWriter::new(&conn);
    while let Ok(Some((k, payload))) = reader.next_frame() {
        assert_eq!(k, kind::REQUEST);
        protocol::decode_request(payload).unwrap();
        out.write_all(&protocol::encode_start(
            200,
            "OK",
            &[("Content-Type".into(), b"text/plain".to_vec())],
        ))
        .unwrap();
        protocol::write_raw(&mut out, kind::DATA, &body).unwrap();
        let end = End::Ran(Outcome::Complete {
            status: 200,
            body_bytes: body.len() as u64,
        });
        out.write_all(&protocol::encode_end(&end)).unwrap();
        out.flush().unwrap();
    }
}

struct Discard;
impl ResponseSink for Discard {
    fn start(&mut self, _: u16, _: &str, headers: Vec<(String, Vec<u8>)>) -> io::Result<()> {
        black_box(headers);
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        black_box(chunk);
        Ok(())
    }
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("daemon_round_trip");
    for size in [13usize, 64 * 1024] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = UnixListener::bind(&path).unwrap();
        let body = vec![b'x'; size];
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let body = body.clone();
                std::thread::spawn(move || stand_in(conn.unwrap(), body));
            }
        });
        let client = DaemonClient::new(vec![Endpoint {
            group: "bench".into(),
            socket: path.clone(),
            options: DaemonOptions {
                processes: 1,
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::ZERO,
                socket_timeout: Duration::from_secs(5),
                ..DaemonOptions::default()
            },
            default_socket_timeout: Duration::from_secs(5),
        }]);
        let req = request();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("pooled_get", size), &size, |b, _| {
            b.iter(|| {
                let mut body: &[u8] = b"";
                client
                    .dispatch("bench", &req, &mut body, &mut Discard)
                    .unwrap()
            })
        });
        std::mem::forget(dir);
    }
    g.finish();
}

criterion_group!(benches, frames, round_trip);
criterion_main!(benches);
