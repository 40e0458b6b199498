//! Scale-out as the README's deployment section shows it: Debian's nginx, and Debian's
//! HAProxy, in front of two `wsgi serve` hosts, each in a network namespace of its own made by
//! the test (a veth pair with private /30 addresses), and a rolling restart of both hosts
//! under steady load that loses no request; and both in front of a `wsgi serve` unix socket,
//! their `X-Forwarded-For` trusted. Everything runs on this machine (loopback and the test's own veth links); every
//! loop is bounded; every process is one the test started, stopped by its pid when dropped,
//! and the namespaces and links are removed when dropped, even on a panic.
//!
//! Needs root (network namespaces), nginx, HAProxy and iproute2
//! (`scripts/setup-test-env.sh`).

mod util;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wsgi_testkit::process::{self, Captured};
use wsgi_testkit::{fs, http, wait};

/// Answers with the host's name and the client address it sees; `/slow?MS` first sleeps.
const APP: &str = r#"
import time

def application(environ, start_response):
    if environ['PATH_INFO'] == '/slow':
        time.sleep(int(environ.get('QUERY_STRING') or '0') / 1000.0)
    body = ('%s %s\n' % (environ['HOST_ID'], environ['REMOTE_ADDR'])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

/// The port every host serves on (each in its own namespace).
const HOST_PORT: u16 = 8000;

/// Runs an `ip` command, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs: scripts/setup-test-env.sh installs it");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces and veth links made by a test: removed when dropped.
struct Net {
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A host's namespace and the address it serves on.
struct Place {
    ns: String,
    addr: Ipv4Addr,
}

/// Makes `count` namespaces, each joined to this one by a veth pair: 10.213.X.(4i+1)/30 here,
/// 10.213.X.(4i+2)/30 there, with X a subnet no interface of this machine uses yet. Names
/// carry this process's pid, so parallel runs do not collide.
fn make_net(tag: &str, count: u8) -> (Net, Vec<Place>) {
    assert!(
        process::is_root(),
        "the scale-out tests make network namespaces: run them as root (scripts/test.sh does)"
    );
    // One test at a time picks a subnet and makes its links, so two do not pick the same.
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let used = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .unwrap();
    let used = String::from_utf8_lossy(&used.stdout).into_owned();
    let subnet = (0..250u32)
        .map(|i| (pid + i) % 250)
        .find(|x| !used.contains(&format!(" 10.213.{x}.")))
        .expect("a free 10.213.X.0/24 subnet");
    let mut net = Net {
        namespaces: Vec::new(),
        links: Vec::new(),
    };
    let mut places = Vec::new();
    for i in 0..count {
        let ns = format!("wsgi-rs-{tag}-{pid}-{i}");
        // Interface names hold at most 15 bytes.
        let here = format!("wr{}{tag}{i}", pid % 10_000_000);
        let there = format!("{here}h");
        ip(&["netns", "add", &ns]);
        net.namespaces.push(ns.clone());
        ip(&[
            "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns,
        ]);
        net.links.push(here.clone());
        let base = 4 * u32::from(i);
        let local = format!("10.213.{subnet}.{}/30", base + 1);
        let remote = Ipv4Addr::new(10, 213, subnet as u8, (base + 2) as u8);
        ip(&["addr", "add", &local, "dev", &here]);
        ip(&["link", "set", &here, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{remote}/30"),
            "dev",
            &there,
        ]);
        ip(&["-n", &ns, "link", "set", &there, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        places.push(Place { ns, addr: remote });
    }
    (net, places)
}

/// A `wsgi serve` host started by the test (in a namespace, through `ip netns exec`, which
/// execs it: the child's pid is the master's). Stopped with SIGTERM, then killed, when dropped.
struct Host {
    child: Child,
    stderr: Captured,
}

impl Host {
    /// Starts `wsgi serve` with `args` (in namespace `ns` when given) and waits, at most 60 s,
    /// for its banner line `listening on WHAT`.
    fn start(ns: Option<&str>, args: &[&str], listening: &str) -> Host {
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_wsgi")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_wsgi")),
        };
        command
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let rx = process::lines(child.stdout.take().unwrap());
        let stderr = Captured::spawn(child.stderr.take().unwrap());
        let host = Host { child, stderr };
        let expected = format!("listening on {listening}");
        if wait::next_line(&rx, Duration::from_secs(60), |l| l == expected).is_err() {
            panic!(
                "no `{expected}` from wsgi serve {args:?}; stderr:\n{}",
                host.stderr.text()
            );
        }
        host
    }

    fn signal(&self, name: &str) {
        process::signal(self.child.id(), name);
    }

    /// Waits at most `limit` for the host to exit.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        process::wait_exit(&mut self.child, limit).unwrap_or_else(|| {
            panic!(
                "the host did not stop within {limit:?}; stderr:\n{}",
                self.stderr.text()
            )
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        process::stop(&mut self.child, Duration::from_secs(20));
    }
}

/// A load balancer started by the test (nginx or HAProxy) with its own configuration and
/// logs in `dir`, in the foreground; stopped (SIGTERM, which stops nginx's workers too), then
/// killed, when dropped.
struct Balancer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Balancer {
    /// A free port on 127.0.0.1.
    fn free_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], http::free_port()))
    }

    /// Starts nginx on 127.0.0.1 (a free port), its workers as `user` (nginx's default,
    /// nobody, when None), with `http` as the inside of its `http {}` block (`{listen}` stands
    /// for the `listen` address), and waits until it accepts.
    fn nginx(dir: &Path, user: Option<&str>, http: &str) -> Balancer {
        let addr = Self::free_addr();
        let d = dir.display();
        let conf = format!(
            "{}worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 512; }}\nhttp {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n{}\n}}\n",
            user.map(|u| format!("user {u};\n")).unwrap_or_default(),
            http.replace("{listen}", &addr.to_string())
        );
        let conf_path = fs::write_world_readable(&dir.join("nginx.conf"), &conf);
        let mut command = Command::new("/usr/sbin/nginx");
        command
            .args(["-p", &format!("{d}/"), "-e", &format!("{d}/error.log")])
            .args(["-c", conf_path.to_str().unwrap(), "-g", "daemon off;"])
            .stderr(Stdio::null());
        Self::start(command, addr, dir.join("error.log"))
    }

    /// Starts HAProxy on 127.0.0.1 (a free port) with `backend` as the inside of its
    /// `backend mysite` section, logging to `dir/haproxy.log`, and waits until it accepts.
    fn haproxy(dir: &Path, backend: &str) -> Balancer {
        let addr = Self::free_addr();
        let d = dir.display();
        let conf = format!(
            "global\n    log stderr format raw local0 info\n    pidfile {d}/haproxy.pid\ndefaults\n    mode http\n    log global\n    option httplog\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\nfrontend web\n    bind {addr}\n    default_backend mysite\nbackend mysite\n{backend}\n"
        );
        let conf_path = fs::write_world_readable(&dir.join("haproxy.cfg"), &conf);
        let log = dir.join("haproxy.log");
        let mut command = Command::new("/usr/sbin/haproxy");
        command
            .args(["-db", "-f", conf_path.to_str().unwrap()])
            .stderr(std::fs::File::create(&log).unwrap());
        Self::start(command, addr, log)
    }

    fn start(mut command: Command, addr: SocketAddr, log: PathBuf) -> Balancer {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the balancer runs: scripts/setup-test-env.sh installs nginx and haproxy");
        let balancer = Balancer { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the balancer does not accept on {addr}: {}",
                balancer.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        balancer
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        process::stop(&mut self.child, Duration::from_secs(10));
    }
}

/// One GET over a new connection (`Connection: close`), from `from` when given, with `extra`
/// header lines: the status and body, or what went wrong. Bounded by 30 s timeouts.
fn get(
    addr: SocketAddr,
    path: &str,
    from: Option<Ipv4Addr>,
    extra: &str,
) -> Result<(u16, String), String> {
    let stream = match from {
        Some(ip) => util::connect_from(ip, addr)?,
        None => TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect: {e}"))?,
    };
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: mysite.example\r\n{extra}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Each host's `--status-addr`, on the loopback of its own namespace.
const STATUS_ADDR: &str = "127.0.0.1:9000";

/// `/healthz` of the host in namespace `ns`, as a checker on that host reads it: `STATUS
/// BODY`, or what went wrong (within 10 s).
fn healthz(ns: &str) -> String {
    const READ: &str = "import sys, urllib.request, urllib.error\ntry:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n    print(r.status, r.read().decode().strip())\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode().strip())\nexcept OSError as e:\n    print('unreachable', e)\n";
    let out = Command::new("timeout")
        .args([
            "10",
            "ip",
            "netns",
            "exec",
            ns,
            "/usr/bin/python3.11",
            "-c",
            READ,
        ])
        .arg(format!("http://{STATUS_ADDR}/healthz"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How long nginx leaves a server that failed out of its rotation (`fail_timeout=`).
const FAIL_TIMEOUT: Duration = Duration::from_secs(2);

/// The README's nginx `server {}` block, in front of the upstream `mysite`.
const NGINX_SERVER: &str = "    server {
        listen {listen};
        location / {
            proxy_pass http://mysite;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
    }";

/// The README's nginx configuration for two hosts (inside `http {}`).
fn nginx_two_hosts(a: Ipv4Addr, b: Ipv4Addr) -> String {
    let fail = FAIL_TIMEOUT.as_secs();
    format!(
        "    upstream mysite {{
        zone mysite 64k;
        server {a}:{HOST_PORT} max_fails=1 fail_timeout={fail}s;
        server {b}:{HOST_PORT} max_fails=1 fail_timeout={fail}s;
    }}
{NGINX_SERVER}"
    )
}

/// The README's HAProxy backend for two hosts.
fn haproxy_two_hosts(a: Ipv4Addr, b: Ipv4Addr) -> String {
    format!(
        "    option forwardfor
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch 1
    server a {a}:{HOST_PORT} check inter 1s fall 1 rise 2
    server b {b}:{HOST_PORT} check inter 1s fall 1 rise 2"
    )
}

/// Requests answered by each host, and the requests that failed.
#[derive(Default)]
struct Tally {
    a: AtomicU64,
    b: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn served(&self, host: char) -> u64 {
        match host {
            'a' => self.a.load(Ordering::SeqCst),
            _ => self.b.load(Ordering::SeqCst),
        }
    }
}

/// Waits, at most 30 s, until `host` has served more than `than` requests through the
/// balancer.
fn until_served(tally: &Tally, host: char, than: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.served(host) <= than {
        assert!(
            Instant::now() < deadline,
            "host {host} served no request through the balancer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rolling_restart_behind_nginx_loses_no_request() {
    rolling_restart("n", |dir, a, b| {
        Balancer::nginx(dir, None, &nginx_two_hosts(a, b))
    });
}

#[test]
fn rolling_restart_behind_haproxy_loses_no_request() {
    rolling_restart("h", |dir, a, b| {
        Balancer::haproxy(dir, &haproxy_two_hosts(a, b))
    });
}

/// Two hosts behind the balancer `start` starts (in `dir`, for the hosts' addresses), each
/// stopped with SIGTERM and started again in turn under steady load: no request fails, the
/// request running on a stopping host finishes there, and its `/healthz` says `draining`
/// meanwhile. `tag` makes the namespaces' names this test's own.
fn rolling_restart(tag: &str, start: impl FnOnce(&Path, Ipv4Addr, Ipv4Addr) -> Balancer) {
    let dir = fs::scratch_world_readable("wsgi-scale-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let (_net, places) = make_net(tag, 2);
    let start_host = |place: &Place, id: &str| {
        let bind = format!("{}:{HOST_PORT}", place.addr);
        // The balancer reaches the host from the address before it on the /30.
        let [a, b, c, d] = place.addr.octets();
        let balancer = Ipv4Addr::new(a, b, c, d - 1).to_string();
        Host::start(
            Some(&place.ns),
            &[
                app.to_str().unwrap(),
                "--bind",
                &bind,
                "--setenv",
                "HOST_ID",
                id,
                "--threads",
                "8",
                "--graceful-timeout",
                "20",
                "--status-addr",
                STATUS_ADDR,
                "--trust-proxy-header",
                "X-Forwarded-For",
                "--trust-proxy",
                &balancer,
            ],
            &format!("http://{bind}/"),
        )
    };
    let mut a = start_host(&places[0], "a");
    let mut b = start_host(&places[1], "b");
    let balancer = start(dir.path(), places[0].addr, places[1].addr);

    // Steady load: four clients, each a bounded number of requests, some slow.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (tally, stop, addr) = (tally.clone(), stop.clone(), balancer.addr);
            std::thread::spawn(move || {
                for n in 0..20_000u32 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let path = if n % 4 == c { "/slow?50" } else { "/" };
                    // The hosts trust the balancer's X-Forwarded-For: the client is 127.0.0.1.
                    match get(addr, path, None, "") {
                        Ok((200, body)) if body == "a 127.0.0.1\n" => {
                            tally.a.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((200, body)) if body == "b 127.0.0.1\n" => {
                            tally.b.fetch_add(1, Ordering::SeqCst);
                        }
                        other => tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {other:?}")),
                    }
                }
            })
        })
        .collect();
    until_served(&tally, 'a', 20);
    until_served(&tally, 'b', 20);

    // One host after the other: SIGTERM while a request is running on it (it finishes there),
    // then started again; the balancer meanwhile sends everything to the other.
    for (host, id, place) in [(&mut a, 'a', &places[0]), (&mut b, 'b', &places[1])] {
        let direct = SocketAddr::from((place.addr, HOST_PORT));
        let in_flight = std::thread::spawn(move || get(direct, "/slow?1500", None, ""));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(healthz(&place.ns), "200 ready");
        host.signal("-TERM");
        // Draining while the request runs (for a checker on the host: the status endpoint
        // listens on its loopback only).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let health = healthz(&place.ns);
            if health == "503 draining" {
                break;
            }
            assert!(
                health == "200 ready" && Instant::now() < deadline,
                "host {id}: {health}"
            );
        }
        let status = host.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "host {id}: {status}");
        let answer = in_flight.join().unwrap();
        assert!(
            matches!(&answer, Ok((200, body)) if body.starts_with(&format!("{id} "))),
            "the request running on host {id} when it was told to stop: {answer:?}"
        );
        let before = tally.served(id);
        *host = start_host(place, &id.to_string());
        // nginx tries a failed server again only after fail_timeout (HAProxy after `rise`
        // good checks): until then the other one is all it has, so the next host must not
        // stop before.
        std::thread::sleep(FAIL_TIMEOUT + Duration::from_secs(1));
        until_served(&tally, id, before);
    }

    // A little more load on both, then the clients stop.
    let (a_now, b_now) = (tally.served('a'), tally.served('b'));
    until_served(&tally, 'a', a_now + 20);
    until_served(&tally, 'b', b_now + 20);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = tally.failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} request(s) failed through the balancer: {:?}\nits log:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        balancer.log()
    );
    let total = tally.served('a') + tally.served('b');
    assert!(total > 200, "only {total} requests were made");
    eprintln!(
        "rolling restart: {total} requests through the balancer, host a {}, host b {}, none failed",
        tally.served('a'),
        tally.served('b')
    );
}

/// The README's unix-socket variant: nginx proxies to `wsgi serve --bind unix:...`, whose
/// socket is made for the serving user's group (nginx's workers run as www-data here, as
/// Debian's nginx runs them), and the application sees the client's address nginx forwards;
/// then HAProxy does the same.
#[test]
fn nginx_and_haproxy_in_front_of_a_unix_socket() {
    assert!(
        process::is_root(),
        "the test starts nginx and wsgi serve as root, as a system would: run it as root"
    );
    let dir = fs::scratch_world_readable("wsgi-scale-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let sock = dir.path().join("mysite.sock");
    let bind = format!("unix:{}", sock.display());
    // As root: the front process serves as www-data and the socket is root:www-data 0660.
    let host = Host::start(
        None,
        &[
            app.to_str().unwrap(),
            "--bind",
            &bind,
            "--setenv",
            "HOST_ID",
            "u",
            "--trust-proxy-header",
            "X-Forwarded-For",
            "--trust-proxy",
            "127.0.0.1",
        ],
        &bind,
    );
    let http = format!(
        "    upstream mysite {{\n        server unix:{};\n    }}\n{NGINX_SERVER}",
        sock.display()
    );
    let haproxy = format!(
        "    option forwardfor\n    server local {} check inter 1s",
        sock.display()
    );
    let balancers: [&dyn Fn() -> Balancer; 2] = [
        // nginx's workers run as www-data, as Debian's nginx runs them.
        &|| Balancer::nginx(dir.path(), Some("www-data"), &http),
        // HAProxy runs as root here.
        &|| Balancer::haproxy(dir.path(), &haproxy),
    ];
    for start in balancers {
        let balancer = start();
        // A client from 127.0.0.5, pretending to be another: the application sees 127.0.0.5
        // (the forwarded list is read from the right, past the trusted proxy only).
        let answer = get(
            balancer.addr,
            "/",
            Some(Ipv4Addr::new(127, 0, 0, 5)),
            "X-Forwarded-For: 198.51.100.66\r\n",
        );
        assert_eq!(
            answer,
            Ok((200, "u 127.0.0.5\n".to_string())),
            "{}",
            balancer.log()
        );
    }
    drop(host);
}
