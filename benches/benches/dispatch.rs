//! The whole request dispatch of `wsgi serve` in one process, without sockets: HTTP/1.1
//! request bytes in, response bytes out, through everything a request costs the server
//! (hyper's parser, routing by the configuration, the hand-off to a Python worker thread over
//! the bounded queue, the PEP 3333 call, the response back to hyper and its serialisation),
//! over an in-memory pipe (tokio's `duplex`) on a keep-alive connection. Compare with
//! `interp_hello_call` (the Python call alone) to see what the server adds per request.
//!
//! The body path too: a 64 KiB upload read whole through `wsgi.input` (`echo_64k`), and a
//! 1 MiB response yielded as 16 chunks of 64 KiB (`big_1m`), as `bench/apps/echo.py` and
//! `big.py` do under `bench/compare`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wsgi_cli::serve::front::{Front, Limits, serve_stream};
use wsgi_cli::serve::pool::{PythonHost, WorkerPool};
use wsgi_cli::serve::site::{AppFlags, Site, SiteSource};
use wsgi_interp::{Runtime, StartConfig};

/// The allocator the `wsgi` program runs with.
#[global_allocator]
static ALLOCATOR: wsgi_cli::allocator::Mimalloc = wsgi_cli::allocator::Mimalloc;

/// `/hello`: 12 bytes; `/echo`: the request body read whole, its length answered; `/big`:
/// 1 MiB in 16 chunks of 64 KiB.
const APP: &str = r#"
CHUNK = bytes(range(256)) * 256

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/echo':
        data = environ['wsgi.input'].read()
        body = b'%d' % len(data)
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    if path == '/big':
        start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(16 * len(CHUNK)))])
        return (CHUNK for _ in range(16))
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '12')])
    return [b'Hello world!']
"#;

/// A browser-like request (the same headers as the interp benchmarks' environ).
const REQUEST: &[u8] = b"GET /hello?x=1 HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: session=0123456789abcdef\r\nUpgrade-Insecure-Requests: 1\r\n\r\n";

/// The server side: `wsgi serve hello.wsgi --threads 16` with no listener.
fn front(threads: usize) -> Arc<Front> {
    let dir = PathBuf::from(format!(
        "/var/tmp/wsgi-rs-bench-dispatch-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let app = dir.join("hello.wsgi");
    std::fs::write(&app, APP).unwrap();
    let site = Site::load(
        SiteSource::CommandLine(Box::new(AppFlags {
            app: Some(app),
            ..AppFlags::default()
        })),
        Vec::new(),
    )
    .expect("the generated configuration is valid");
    let runtime = Arc::new(Runtime::start(&StartConfig::default()).expect("CPython starts"));
    let pool = WorkerPool::start(
        Arc::new(PythonHost::new(runtime, None, threads > 1)),
        threads,
        100,
        Duration::from_secs(10),
        503,
    )
    .expect("worker threads start");
    Arc::new(Front {
        site: Arc::new(site),
        pool: Some(pool),
        python: None,
        daemons: None,
        logs: None,
        multithread: threads > 1,
        limits: Limits {
            header_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        control: None,
        draining: std::sync::atomic::AtomicBool::new(false),
        metrics: None,
        proxy: None,
    })
}

/// Reads one whole response (head, then `Content-Length` bytes of body) into `buf`.
async fn read_response(client: &mut DuplexStream, buf: &mut Vec<u8>) {
    buf.clear();
    loop {
        // Straight into the buffer's spare room (kept from one response to the next).
        buf.reserve(16 * 1024);
        let n = client.read_buf(buf).await.expect("the server answers");
        assert!(n > 0, "the server closed the connection");
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("an ASCII head");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

/// One request and its whole response on `client`.
async fn round_trip(client: &mut DuplexStream, buf: &mut Vec<u8>) {
    exchange(client, REQUEST, buf).await;
}

/// `request` and its whole response on `client`.
async fn exchange(client: &mut DuplexStream, request: &[u8], buf: &mut Vec<u8>) {
    client.write_all(black_box(request)).await.unwrap();
    read_response(client, buf).await;
}

fn dispatch(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let front = front(16);
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
    let connect = || {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio.spawn(serve_stream(front.clone(), server, peer, local, 8000));
        client
    };
    let mut client = connect();
    let mut buf = Vec::with_capacity(4096);
    tokio.block_on(round_trip(&mut client, &mut buf));
    assert!(
        buf.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    assert!(buf.ends_with(b"Hello world!"));

    let mut g = c.benchmark_group("dispatch");
    // One client waiting for each answer: the latency of a request, hand-offs included.
    g.bench_function("hello_one_connection", |b| {
        b.iter(|| tokio.block_on(round_trip(&mut client, &mut buf)))
    });
    // 16 clients at once (as `wrk -c16`), on the same two runtime threads as the server: the
    // time per request is the server's throughput cost.
    let clients: Vec<_> = (0..16).map(|_| connect()).collect();
    let clients = Arc::new(parking_lot::Mutex::new(clients));
    g.bench_function("hello_16_connections", |b| {
        b.iter_custom(|iters| {
            let taken: Vec<DuplexStream> = std::mem::take(&mut *clients.lock());
            let n = taken.len() as u64;
            let start = std::time::Instant::now();
            let tasks: Vec<_> = taken
                .into_iter()
                .enumerate()
                .map(|(i, mut client)| {
                    let count = iters / n + u64::from((i as u64) < iters % n);
                    tokio.spawn(async move {
                        let mut buf = Vec::with_capacity(4096);
                        for _ in 0..count {
                            round_trip(&mut client, &mut buf).await;
                        }
                        client
                    })
                })
                .collect();
            let back: Vec<DuplexStream> = tokio.block_on(async {
                let mut back = Vec::new();
                for t in tasks {
                    back.push(t.await.unwrap());
                }
                back
            });
            let elapsed = start.elapsed();
            *clients.lock() = back;
            elapsed
        })
    });
    g.finish();

    // The body path, one client at a time: a 64 KiB upload, a 1 MiB streamed response.
    let mut echo = b"POST /echo HTTP/1.1\r\nHost: bench.example.com\r\nContent-Type: application/octet-stream\r\nContent-Length: 65536\r\n\r\n".to_vec();
    echo.resize(echo.len() + 65536, b'x');
    let big = b"GET /big HTTP/1.1\r\nHost: bench.example.com\r\n\r\n";
    tokio.block_on(exchange(&mut client, &echo, &mut buf));
    assert!(
        buf.ends_with(b"\r\n\r\n65536"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    tokio.block_on(exchange(&mut client, big, &mut buf));
    assert!(buf.len() > 1 << 20 && buf.ends_with(&[254, 255]));
    let mut g = c.benchmark_group("body");
    g.throughput(criterion::Throughput::Bytes(65536));
    g.bench_function("echo_64k", |b| {
        b.iter(|| tokio.block_on(exchange(&mut client, &echo, &mut buf)))
    });
    g.throughput(criterion::Throughput::Bytes(1 << 20));
    g.bench_function("big_1m", |b| {
        b.iter(|| tokio.block_on(exchange(&mut client, big, &mut buf)))
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
