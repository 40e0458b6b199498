//! `wsgi serve` in daemon mode, as the real binary: `--processes N --threads M` and
//! `--config` files with `WSGIDaemonProcess`, the daemon processes exec'd by its supervisor,
//! spoken to over real TCP sockets on 127.0.0.1. Apps live in world-readable folders under
//! /var/tmp so daemons running as `nobody` (when the tests run as root) can read them.
//! Every wait is bounded; only the server this test started is signalled or killed (its
//! daemon processes are checked by the pids the server reported, never signalled, except the
//! one SIGKILL test that kills a daemon pid the server reported).

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{DAEMON, Server, daemon_user_option as user_option, wsgi_status};
use wsgi_testkit::apps::DAEMON_APP as APP;
use wsgi_testkit::http::get_text;
use wsgi_testkit::process::{self, alive};
use wsgi_testkit::wait::eventually;
use wsgi_testkit::{fs, venvs};

/// The uid the daemons run as: `nobody` when the tests run as root, else ours.
fn daemon_uid() -> u32 {
    if process::is_root() {
        65534
    } else {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
    }
}

/// A world-readable scratch folder under /var/tmp.
fn scratch() -> tempfile::TempDir {
    fs::scratch_world_readable("wsgi-daemon-serve-test-")
}

fn write(path: &Path, text: &str) -> PathBuf {
    fs::write_world_readable(path, text)
}

/// `wsgi serve --config CONF EXTRA...` (daemon launch settings, info log).
fn serve_config(conf: &Path, extra: &[&str]) -> Server {
    util::try_serve_config(conf, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// `wsgi serve --config` of one daemon group `name` with `options`, serving the app at `/` in
/// its main interpreter.
fn serve_one_group(dir: &Path, name: &str, options: &str) -> Server {
    let app = write(&dir.join("app.wsgi"), APP);
    let conf = write(
        &dir.join("site.conf"),
        &format!(
            "WSGIDaemonProcess {name} {}{options}\n\
             WSGIScriptAlias / {} process-group={name} application-group=%{{GLOBAL}}\n",
            user_option(),
            app.display()
        ),
    );
    serve_config(&conf, &[])
}

fn serve_processes(dir: &Path, extra: &[&str]) -> Server {
    serve_script(dir, APP, extra)
}

/// `wsgi serve` of the script `text` (written to DIR/app.wsgi) with `extra` options.
fn serve_script(dir: &Path, text: &str, extra: &[&str]) -> Server {
    let app = write(&dir.join("app.wsgi"), text);
    let mut args = vec![
        app.to_str().unwrap().to_string(),
        "--port".into(),
        "0".into(),
        "--log-level".into(),
        "info".into(),
    ];
    if process::is_root() {
        args.extend(["--user".into(), "nobody".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&DAEMON, &args)
}

#[test]
fn processes_2_threads_4_two_pids_answer_status_and_sigterm_leaves_nothing() {
    let dir = scratch();
    let mut server = serve_processes(
        dir.path(),
        &[
            "--processes",
            "2",
            "--threads",
            "4",
            "--status-addr",
            "127.0.0.1:0",
        ],
    );
    assert!(
        server.banner[0].contains("serving in daemon mode"),
        "{:?}",
        server.banner
    );
    let pids = server.banner_pids("wsgi-serve");
    assert_eq!(pids.len(), 2, "{:?}", server.banner);
    let server_pid = server.child.id();
    for pid in &pids {
        assert_ne!(*pid, server_pid);
        assert!(alive(*pid));
    }
    // 8 requests of 0.6 s at once: both processes answer, concurrently (2 × 4 threads).
    let addr = server.addr;
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get_text(addr, "/sleep?0.6")))
        .collect();
    let mut answered = BTreeSet::new();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        answered.insert(r.body.parse::<u32>().unwrap());
    }
    let elapsed = start.elapsed();
    assert_eq!(
        answered,
        pids.iter().copied().collect::<BTreeSet<_>>(),
        "the banner's two pids answered"
    );
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    let who = server.get_text("/whoami").body;
    // `uid cwd process_group`.
    let fields: Vec<&str> = who.split(' ').collect();
    assert_eq!(fields[0], daemon_uid().to_string(), "{who}");
    assert_eq!(fields[2], "wsgi-serve", "{who}");

    // `wsgi status`: the table, JSON and Prometheus text.
    let status_addr = server.status_addr();
    assert!(
        eventually(Duration::from_secs(3), || wsgi_status(&status_addr, "text")
            .contains("9 request(s) served")),
        "{}",
        wsgi_status(&status_addr, "text")
    );
    let table = wsgi_status(&status_addr, "text");
    assert!(
        table.starts_with(
            "group wsgi-serve: 2 process(es), 9 request(s) served, 0 in flight, 0 restart(s)"
        ),
        "{table}"
    );
    for pid in &pids {
        assert!(table.contains(&format!("  {pid:<8} ")), "{table}");
    }
    let metrics = wsgi_status(&status_addr, "prometheus");
    assert!(
        metrics.contains("wsgi_daemon_requests_total{group=\"wsgi-serve\"} 9\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wsgi_daemon_processes{group=\"wsgi-serve\"} 2\n"),
        "{metrics}"
    );
    let json: serde_json::Value = serde_json::from_str(&wsgi_status(&status_addr, "json")).unwrap();
    let socket = PathBuf::from(json[0]["socket"].as_str().unwrap());
    let socket_dir = socket.parent().unwrap().to_path_buf();
    assert!(socket.exists());

    // SIGTERM: exit 0, no daemon left, no socket or socket folder left.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", server.stderr());
    for pid in &pids {
        assert!(!alive(*pid), "daemon {pid} survived the server");
    }
    assert!(!socket.exists(), "socket {} left behind", socket.display());
    assert!(!socket_dir.exists(), "{} left behind", socket_dir.display());
    // And `wsgi status` says the endpoint is gone, with what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["status", "--status-addr", &status_addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--status-addr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_crash_answers_502_and_the_next_requests_succeed() {
    let dir = scratch();
    let server = serve_processes(dir.path(), &["--processes", "1", "--threads", "2"]);
    let first = server.banner_pids("wsgi-serve")[0];
    assert_eq!(server.get_text("/").body, first.to_string());

    // os._exit mid-request.
    let r = server.get_text("/exit");
    assert_eq!(r.status, 502, "{r:?}");
    let crashed = Instant::now();
    let r = server.get_text("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        crashed.elapsed() < Duration::from_secs(2),
        "{:?}",
        crashed.elapsed()
    );
    let second: u32 = r.body.parse().unwrap();
    assert_ne!(second, first);
    assert!(!alive(first));

    // SIGKILL of the daemon (a pid the server reported) in the middle of a request.
    let addr = server.addr;
    let hanging = std::thread::spawn(move || get_text(addr, "/hang"));
    std::thread::sleep(Duration::from_millis(400));
    process::signal(second, "-KILL");
    let r = hanging.join().unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    let killed = Instant::now();
    let r = server.get_text("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    assert_ne!(r.body, second.to_string());
    let log = server.stderr();
    assert!(
        log.contains("502: daemon process group `wsgi-serve`"),
        "{log}"
    );
    assert!(log.contains("was killed by signal 9 (SIGKILL)"), "{log}");
}

#[test]
fn a_full_group_answers_504_at_its_queue_timeout_and_a_stuck_request_504_naming_the_group() {
    let dir = scratch();
    let server = serve_one_group(
        dir.path(),
        "slow",
        "processes=1 threads=1 request-timeout=3 queue-timeout=1",
    );
    assert_eq!(server.banner_pids("slow").len(), 1);
    // The only worker is busy for 2 s: the next request waits the group's queue-timeout
    // (1 s), then gets 504, as mod_wsgi answers its queue-timeout.
    let addr = server.addr;
    let busy = std::thread::spawn(move || get_text(addr, "/sleep?2"));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let r = server.get_text("/");
    assert_eq!(r.status, 504, "{r:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(1800),
        "{waited:?}"
    );
    assert_eq!(busy.join().unwrap().status, 200);
    // A stuck request: 504 at about request-timeout, then a fresh process answers.
    let before = server.get_text("/").body;
    let start = Instant::now();
    let r = server.get_text("/hang");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "{took:?}"
    );
    assert!(eventually(Duration::from_secs(5), || {
        let r = server.get_text("/");
        r.status == 200 && r.body != before
    }));
    let log = server.stderr();
    assert!(
        log.contains("504: the request waited longer than the queue timeout (1s) for a worker thread (daemon process group `slow`)"),
        "{log}"
    );
    assert!(
        log.contains("504: daemon process group `slow` sent no response headers"),
        "{log}"
    );
}

/// `header-buffer-size=` caps the response headers a daemon may send: above it the front
/// answers 500 naming the option, as mod_wsgi does; below it the headers pass.
#[test]
fn response_headers_above_header_buffer_size_are_a_500() {
    let dir = scratch();
    let server = serve_one_group(dir.path(), "site", "threads=2 header-buffer-size=8192");
    // 40 headers of ~115 bytes: under 8 KiB.
    let r = server.get_text("/big-headers?40");
    assert_eq!(r.status, 200, "{r:?}");
    // 100 of them: over.
    let r = server.get_text("/big-headers?100");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        eventually(Duration::from_secs(5), || server
            .stderr()
            .contains("more than its header-buffer-size of 8192")),
        "{}",
        server.stderr()
    );
    // The group keeps serving.
    assert_eq!(server.get_text("/").status, 200);
}

/// The seed's "Daemon Mode (Multiple Applications)" with one venv per application: one
/// group whose python-home is an empty venv, three mounts in their own sub-interpreters,
/// each activating its own venv from its WSGI script (`activate_this.py` for uv and
/// virtualenv venvs, `site.addsitedir` for a `python -m venv` one).
#[test]
fn multi_app_daemon_group_with_a_venv_per_app() {
    let python = util::venv_python();
    let dir = scratch();
    let d = dir.path();
    let (empty, uv, ve, venv) = (
        d.join("empty"),
        d.join("ve-uv"),
        d.join("ve-virtualenv"),
        d.join("ve-venv"),
    );
    venvs::make_venv(&python, &empty);
    venvs::make_venv(&python, &venv);
    let tools = venvs::tools_dir();
    process::run(
        Command::new(tools.join("uv"))
            .args(["venv", "-q", "-p", &python])
            .arg(&uv),
    );
    process::run(
        Command::new(tools.join("virtualenv"))
            .args(["-q", "--no-seed", "-p", &python])
            .arg(&ve),
    );
    let xy = python.rsplit("python").next().unwrap().to_string();
    // A package `vpkg` with a different VERSION in each app's venv (none in the empty one).
    for (v, tag) in [
        (&uv, "1.0-uv"),
        (&ve, "2.0-virtualenv"),
        (&venv, "3.0-venv"),
    ] {
        let pkg = v.join(format!("lib/python{xy}/site-packages/vpkg"));
        std::fs::create_dir_all(&pkg).unwrap();
        write(&pkg.join("__init__.py"), &format!("VERSION = {tag:?}\n"));
    }
    let report = "\ndef application(environ, start_response):\n    import vpkg\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('%s\\n%s\\n%s\\n%d' % (vpkg.VERSION, sys.prefix, environ['mod_wsgi.application_group'], os.getpid())).encode()]\n";
    let activate = |v: &Path| {
        format!(
            "import os, sys\npython_home = {:?}\nactivate_this = python_home + '/bin/activate_this.py'\nexec(open(activate_this).read(), dict(__file__=activate_this))\n{report}",
            v.display().to_string()
        )
    };
    let app1 = write(&d.join("myapp1.wsgi"), &activate(&uv));
    let app2 = write(&d.join("myapp2.wsgi"), &activate(&ve));
    let app3 = write(
        &d.join("myapp3.wsgi"),
        &format!(
            "import os, sys, site\npython_home = {:?}\npython_version = '.'.join(map(str, sys.version_info[:2]))\nsite_packages = python_home + '/lib/python%s/site-packages' % python_version\nsite.addsitedir(site_packages)\n{report}",
            venv.display().to_string()
        ),
    );
    process::run(Command::new("chmod").args(["-R", "a+rX"]).arg(d));
    let conf = write(
        &d.join("site.conf"),
        &format!(
            "WSGIDaemonProcess myapps {}python-home={} processes=1 threads=2\n\
             WSGIProcessGroup myapps\n\
             WSGIScriptAlias /myapp3 {}\n\
             WSGIScriptAlias /myapp2 {}\n\
             WSGIScriptAlias / {}\n\
             <Directory {}>\n    Require all granted\n</Directory>\n",
            user_option(),
            empty.display(),
            app3.display(),
            app2.display(),
            app1.display(),
            d.display()
        ),
    );
    let server = serve_config(&conf, &[]);
    let pid = server.banner_pids("myapps")[0];
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains(&format!("python-home {}", empty.display()))),
        "{:?}",
        server.banner
    );
    let parse = |path: &str| {
        let r = server.get_text(path);
        assert_eq!(r.status, 200, "{path}: {r:?}\n{}", server.stderr());
        r.body
            .split('\n')
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    let one = parse("/");
    let two = parse("/myapp2/");
    let three = parse("/myapp3");
    // Each app imports its own package version...
    assert_eq!(one[0], "1.0-uv");
    assert_eq!(two[0], "2.0-virtualenv");
    assert_eq!(three[0], "3.0-venv");
    // ...sees its own sys.prefix (activate_this sets it; site.addsitedir leaves the group's
    // python-home, the empty venv, as the seed describes)...
    assert_eq!(one[1], uv.display().to_string());
    assert_eq!(two[1], ve.display().to_string());
    assert_eq!(three[1], empty.display().to_string());
    // ...in a sub-interpreter of its own, all in the one daemon process.
    let groups: BTreeSet<&String> = [&one[2], &two[2], &three[2]].into_iter().collect();
    assert_eq!(groups.len(), 3, "{one:?} {two:?} {three:?}");
    for r in [&one, &two, &three] {
        assert_eq!(r[3], pid.to_string());
    }
    // Repeated requests stay isolated (the activations do not leak between interpreters).
    assert_eq!(parse("/")[0], "1.0-uv");
    assert_eq!(parse("/myapp3")[1], empty.display().to_string());
}

#[test]
fn sighup_restarts_every_daemon_group_with_fresh_processes() {
    let dir = scratch();
    let app = write(&dir.path().join("app.wsgi"), APP);
    let conf_text = |processes: u32| {
        format!(
            "WSGIDaemonProcess site {}processes={processes} threads=2\n\
             WSGIScriptAlias / {} process-group=site application-group=%{{GLOBAL}}\n",
            user_option(),
            app.display()
        )
    };
    let conf = write(&dir.path().join("site.conf"), &conf_text(1));
    let mut server = serve_config(&conf, &["--status-addr", "127.0.0.1:0"]);
    let first = server.banner_pids("site");
    let status_addr = server.status_addr();
    let replaced = |times: usize| {
        eventually(Duration::from_secs(30), || {
            server
                .stderr()
                .matches("the replaced daemon process groups have stopped")
                .count()
                == times
        })
    };
    // Unchanged daemon sections (a comment added): still fresh processes, so the apps are
    // loaded anew, as Apache's graceful restart does.
    write(&conf, &format!("# reloaded\n{}", conf_text(1)));
    server.sighup();
    assert!(replaced(1), "{}", server.stderr());
    assert!(!alive(first[0]));
    let second = server.get_text("/").body;
    assert_ne!(second, first[0].to_string());
    // processes=2: a new set starts, requests move to it, the old process stops.
    write(&conf, &conf_text(2));
    server.sighup();
    assert!(replaced(2), "{}", server.stderr());
    assert!(!alive(second.parse().unwrap()));
    let table = wsgi_status(&status_addr, "text");
    assert!(table.starts_with("group site: 2 process(es)"), "{table}");
    let mut answered = BTreeSet::new();
    for _ in 0..20 {
        let r = server.get_text("/sleep?0.05");
        assert_eq!(r.status, 200, "{r:?}");
        answered.insert(r.body);
    }
    assert!(!answered.contains(&first[0].to_string()));
    let json: serde_json::Value = serde_json::from_str(&wsgi_status(&status_addr, "json")).unwrap();
    let now: Vec<u64> = json[0]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(now.len(), 2);
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    for pid in now {
        assert!(!alive(pid as u32), "daemon {pid} survived the server");
    }
}

#[test]
fn import_mod_wsgi_in_daemon_mode_and_shutdown_callbacks_at_recycle_and_stop() {
    let dir = scratch();
    // The daemon process (nobody when the tests run as root) writes stopping.log here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let app = write(&dir.path().join("app.wsgi"), util::MOD_WSGI_APP);
    let mut args = vec![
        app.to_str().unwrap(),
        "--port",
        "0",
        "--processes",
        "1",
        "--threads",
        "3",
        "--maximum-requests",
        "3",
        "--log-level",
        "info",
    ];
    if process::is_root() {
        args.extend(["--user", "nobody"]);
    }
    let mut server = Server::start_with(&DAEMON, &args);
    let first = server.banner_pids(&group_of(&server))[0];
    let group = group_of(&server);
    util::check_mod_wsgi_module(&server, &group, 3);
    // The third request reaches maximum-requests: the process recycles, its shutdown
    // callbacks told why.
    assert_eq!(server.get_text("/c").status, 200);
    let log = dir.path().join("stopping.log");
    let recycled = format!("{first} process_stopping 'maximum_requests'");
    assert!(
        eventually(Duration::from_secs(20), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.lines().any(|l| l == recycled))),
        "{:?}\n{}",
        std::fs::read_to_string(&log),
        server.stderr()
    );
    // The replacement serves (its callback registered again) and is told of the stop.
    assert_eq!(util::mod_wsgi_values(&server, "/d")["request_count"], "0");
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], recycled);
    assert!(
        lines[1].ends_with(" process_stopping 'shutdown_signal'")
            && !lines[1].starts_with(&format!("{first} ")),
        "{text}"
    );
}

/// The name of the one daemon process group the banner lists.
fn group_of(server: &Server) -> String {
    server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("daemon process group "))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no daemon group in {:?}", server.banner))
        .to_string()
}

/// The responses that stream from a daemon process: a body read after `start_response`, a
/// `wsgi.file_wrapper` file, an endless body, chunks of many sizes, a process that dies
/// mid-body.
const STREAM_APP: &str = r#"
import os

def application(environ, start_response):
    path = environ['PATH_INFO']
    if path == '/echo-after-start':
        # The response starts first; each piece of the body goes out as it is read.
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        def echo():
            while True:
                piece = environ['wsgi.input'].read(50000)
                if not piece:
                    return
                yield piece
        return echo()
    if path == '/file':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](open(environ['QUERY_STRING'], 'rb'))
    if path == '/endless':
        marker = environ['QUERY_STRING']
        class Endless:
            def __iter__(self):
                while True:
                    yield b'x' * 65536
            def close(self):
                with open(marker, 'w') as f:
                    f.write('closed')
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return Endless()
    if path == '/chunks':
        # Chunks of 16 KiB to 200 KiB, each of its own bytes: whatever crosses in the
        # response buffer's slots and whatever through the socket must come out in order.
        sizes = [16384 + (i * 37_001) % 190_000 for i in range(int(environ['QUERY_STRING']))]
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(sum(sizes)))])
        return (bytes([i % 251]) * size for i, size in enumerate(sizes))
    if path == '/die-mid':
        start_response('200 OK', [('Content-Length', '100000')])
        def die():
            yield b'partial'
            os._exit(1)
        return die()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [str(os.getpid()).encode()]
"#;

#[test]
fn a_body_read_after_start_response_streams_both_ways_in_daemon_mode() {
    let dir = scratch();
    // A body larger than the request buffer streams to the app as it reads it.
    let server = serve_script(
        dir.path(),
        STREAM_APP,
        &[
            "--processes",
            "1",
            "--threads",
            "2",
            "--request-buffer-size",
            "1000",
        ],
    );
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = server.connect();
    let head = format!(
        "POST /echo-after-start HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The client writes while it reads: the app answers as it reads.
    let mut writer = s.try_clone().unwrap();
    let sent = body.clone();
    let writing = std::thread::spawn(move || writer.write_all(&sent));
    let raw = wsgi_testkit::http::read_to_close(&mut s);
    writing.join().unwrap().unwrap();
    let r = wsgi_testkit::http::Response::parse(&raw);
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert!(r.complete, "{}", server.stderr());
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the echo differs from the body sent");
    // A small body, whole before the request goes, too; and the connection is reused.
    let r = server.request("POST", "/echo-after-start", &[], b"hello daemon");
    assert_eq!((r.status, &r.body[..]), (200, &b"hello daemon"[..]));
}

#[test]
fn a_file_wrapper_response_crosses_as_a_descriptor_in_daemon_mode() {
    let dir = scratch();
    let server = serve_script(
        dir.path(),
        STREAM_APP,
        &["--processes", "1", "--threads", "2"],
    );
    let content: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &content).unwrap();
    fs::chmod(&file, 0o644);
    let target = format!("/file?{}", file.display());
    let r = server.get_strict(&target);
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert!(r.body == content, "{} bytes, not the file's", r.body.len());
    // HEAD runs the app and sends no body.
    assert_head_sends_no_body(&server, &target);
    // Both exchanges ended cleanly: the same process answers on.
    assert_eq!(server.get_text("/").status, 200);
}

/// A HEAD of `target` answers 200 with no body.
fn assert_head_sends_no_body(server: &Server, target: &str) {
    let raw = server.raw(&wsgi_testkit::http::request_bytes(
        "HEAD",
        target,
        "x",
        &[],
        b"",
        false,
    ));
    let r = wsgi_testkit::http::Response::parse_for(&raw, true);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

/// The body `/chunks?n` sends.
fn chunks_body(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| vec![(i % 251) as u8; 16384 + (i * 37_001) % 190_000])
        .collect()
}

#[test]
fn large_chunks_arrive_whole_and_in_order_however_fast_the_client_reads() {
    let dir = scratch();
    let server = serve_script(
        dir.path(),
        STREAM_APP,
        &["--processes", "1", "--threads", "2"],
    );
    // Read at once: most chunks cross in the daemon connection's response buffer. Again on
    // the same connections, which keep their buffers.
    for _ in 0..3 {
        let r = server.get_strict("/chunks?40");
        assert_eq!(r.status, 200, "{}", server.stderr());
        assert!(r.body == chunks_body(40), "{} bytes differ", r.body.len());
    }
    // A client that reads nothing for a while holds every slot it was sent: the daemon sends
    // the rest through the socket meanwhile; all of it comes out in order.
    let mut s = server.connect();
    s.write_all(b"GET /chunks?60 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let raw = wsgi_testkit::http::read_to_close(&mut s);
    let r = wsgi_testkit::http::Response::parse(&raw);
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert!(r.complete);
    assert!(r.body == chunks_body(60), "{} bytes differ", r.body.len());
    // HEAD runs the app and sends none of it.
    assert_head_sends_no_body(&server, "/chunks?10");
    let r = server.get_strict("/chunks?5");
    assert!(r.body == chunks_body(5));
}

#[test]
fn a_client_that_leaves_mid_response_frees_the_daemon_thread() {
    let dir = scratch();
    // The one daemon thread is the endless response's until the client leaves.
    let server = serve_script(
        dir.path(),
        STREAM_APP,
        &["--processes", "1", "--threads", "1"],
    );
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    fs::chmod(&shared, 0o777);
    let marker = shared.join("closed");
    let mut s = server.connect();
    s.write_all(
        format!(
            "GET /endless?{} HTTP/1.1\r\nHost: x\r\n\r\n",
            marker.display()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut got = vec![0u8; 300_000];
    s.read_exact(&mut got).unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    drop(s);
    // The app's iterable is closed (its write to the front failed), and the thread serves.
    assert!(
        eventually(Duration::from_secs(30), || marker.exists()),
        "{}",
        server.stderr()
    );
    let r = server.get_text("/");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_daemon_that_dies_mid_response_cuts_it_short_and_the_next_request_succeeds() {
    let dir = scratch();
    let server = serve_script(
        dir.path(),
        STREAM_APP,
        &["--processes", "1", "--threads", "2"],
    );
    let first = server.banner_pids("wsgi-serve")[0];
    let raw = server.raw(&wsgi_testkit::http::get_request("/die-mid", "x"));
    let r = wsgi_testkit::http::Response::parse(&raw);
    // The head went out; the body stops where the process died, and the connection closes.
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert_eq!(r.body, b"partial");
    assert!(!r.complete);
    let r = server.get_text("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.body, first.to_string(), "a new process answers");
}

/// Echoes the body read in three ways (a sized read, a line, the rest), or ignores it.
const BODY_APP: &str = r#"
import os

def application(environ, start_response):
    stream = environ['wsgi.input']
    if environ['PATH_INFO'] == '/ignore':
        body = b'ignored'
    else:
        body = stream.read(1000)
        body += stream.readline()
        body += stream.read()
    start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                              ('X-Pid', str(os.getpid()))])
    return [body]
"#;

#[test]
fn request_bodies_of_every_size_reach_the_daemon_app_whole() {
    let dir = scratch();
    // One thread: every request takes the same daemon connection after the one before, so a
    // body left unread would show in the next request.
    let server = serve_script(
        dir.path(),
        BODY_APP,
        &["--processes", "1", "--threads", "1"],
    );
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect() };
    let mut pids = BTreeSet::new();
    // Around the size sent inside the request (64 KiB) and well past it (asked for in pieces).
    for n in [0, 1, 999, 1000, 65_535, 65_536, 65_537, 200_000] {
        let body = pattern(n);
        let r = server.request("POST", "/echo", &[], &body);
        assert_eq!(r.status, 200, "{n} bytes: {}", server.stderr());
        assert!(
            r.body == body,
            "{n} bytes: the echo differs ({} bytes back)",
            r.body.len()
        );
        pids.insert(r.header("x-pid").unwrap_or_default().to_string());
        let r = server.request("POST", "/ignore", &[], &body);
        assert_eq!((r.status, &r.body[..]), (200, &b"ignored"[..]), "{n} bytes");
    }
    // A chunked body, whole before the request goes (small) and not (large).
    for n in [10, 150_000] {
        let body = pattern(n);
        let mut raw = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        let r = wsgi_testkit::http::Response::parse(&server.raw(&raw));
        assert_eq!(r.status, 200, "chunked {n}: {}", server.stderr());
        assert!(r.body == body, "chunked {n}: the echo differs");
    }
    assert_eq!(
        pids.len(),
        1,
        "one daemon process served them all: {pids:?}"
    );
}

/// Reads from `conn` into `buf` until `done(buf)`.
fn read_until(conn: &mut std::net::TcpStream, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    while !done(buf) {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "the connection closed in a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One request after another on a keep-alive connection to `addr`: each response's status
/// and body.
fn keep_alive_gets(addr: std::net::SocketAddr, path: &str, count: usize) -> Vec<(u16, String)> {
    let mut conn = wsgi_testkit::http::connect(addr, Duration::from_secs(10));
    let mut answers = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..count {
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let head_of = |b: &[u8]| wsgi_testkit::http::find(b, b"\r\n\r\n");
        read_until(&mut conn, &mut buf, |b| head_of(b).is_some());
        let head_end = head_of(&buf).unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head[9..12].parse().unwrap();
        // A Content-Length body, or a chunked one (up to its last chunk).
        let (body, end) = match wsgi_testkit::http::header_value(&head, "content-length") {
            Some(length) => {
                let end = head_end + length.parse::<usize>().unwrap();
                read_until(&mut conn, &mut buf, |b| b.len() >= end);
                (buf[head_end..end].to_vec(), end)
            }
            None => {
                let found = |b: &[u8]| wsgi_testkit::http::find(&b[head_end..], b"0\r\n\r\n");
                read_until(&mut conn, &mut buf, |b| found(b).is_some());
                let end = head_end + found(&buf).unwrap() + 5;
                let body = wsgi_testkit::http::dechunk(&buf[head_end..end]).expect("chunked");
                (body, end)
            }
        };
        buf.drain(..end);
        let body = String::from_utf8_lossy(&body).to_string();
        answers.push((status, body));
    }
    answers
}

#[test]
fn on_one_cpu_workers_hand_connections_back_and_still_serve_concurrently() {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    // The server, and the daemon processes it forks, inherit this thread's CPU: one, where a
    // worker gives its connection back to the reactor at once instead of waiting on it.
    let before = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let mut one = CpuSet::new();
    one.set(
        (0..CpuSet::count())
            .find(|&c| before.is_set(c).unwrap_or(false))
            .unwrap(),
    )
    .unwrap();
    sched_setaffinity(Pid::from_raw(0), &one).unwrap();
    let dir = scratch();
    let server = serve_one_group(dir.path(), "one-cpu", "processes=1 threads=4");
    sched_setaffinity(Pid::from_raw(0), &before).unwrap();
    let addr = server.addr;
    // Six keep-alive connections at once, 40 requests each: every one answered, by the one
    // daemon process, on its connection.
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || keep_alive_gets(addr, "/", 40)))
        .collect();
    let mut pids = BTreeSet::new();
    for c in clients {
        for (status, body) in c.join().unwrap() {
            assert_eq!(status, 200, "{body}");
            pids.insert(body);
        }
    }
    assert_eq!(pids.len(), 1, "{pids:?}");
    // Four slow requests at once still run at once: a request that waits in the application
    // does not keep the next one from a sleeping worker.
    let start = Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get_text(addr, "/sleep?0.8")))
        .collect();
    for h in slow {
        assert_eq!(h.join().unwrap().status, 200);
    }
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(2400), "{elapsed:?}");
}
