//! Daemon process groups left idle, and daemon processes under memory limits, as the real
//! `wsgi serve --config` runs them (and `wsgi check` judges them):
//!
//! * `startup-timeout=` and `inactivity-timeout=` start where mod_wsgi starts them: an idle
//!   group keeps its processes (their pids) however long it waits; a process that served
//!   and then stayed idle for inactivity-timeout is replaced.
//! * `memory-limit=`/`virtual-memory-limit=` of 300 MB: the group starts and serves; a limit
//!   no daemon process can start under is refused before anything starts, with the least
//!   value and what to set, and that value works.
//!
//! Apps live in world-readable folders under /var/tmp so daemons running as `nobody` (when
//! the tests run as root) can read them. Every wait is bounded; only the servers these tests
//! start are signalled (their daemon processes are only looked at, by the pids the servers
//! report).

mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Server, daemon_user_option, wsgi_status};
use wsgi_testkit::apps::DAEMON_APP as APP;
use wsgi_testkit::fs;
use wsgi_testkit::process::{self, alive};
use wsgi_testkit::wait::eventually;

/// A world-readable folder with the app and `site.conf`: `daemon` is the WSGIDaemonProcess
/// line's options after the group name `site` (and `user=` when root), `alias_options` the
/// WSGIScriptAlias's after `process-group=site`.
fn site(daemon: &str, alias_options: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = fs::scratch_world_readable("wsgi-daemon-limits-test-");
    let app = fs::write_world_readable(&dir.path().join("app.wsgi"), APP);
    let conf = fs::write_world_readable(
        &dir.path().join("site.conf"),
        &format!(
            "WSGIDaemonProcess site {}{daemon}\n\
             WSGIScriptAlias / {} process-group=site {alias_options}\n",
            daemon_user_option(),
            app.display()
        ),
    );
    (dir, conf)
}

fn serve(conf: &Path) -> Result<Server, String> {
    util::try_serve_config(conf, &["--status-addr", "127.0.0.1:0"])
}

/// The pids `wsgi status` lists for the first group, and its recycle count.
fn status(server: &Server) -> (BTreeSet<u64>, u64) {
    let json: serde_json::Value =
        serde_json::from_str(&wsgi_status(&server.status_addr(), "json")).unwrap();
    let pids = json[0]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    (pids, json[0]["recycles"].as_u64().unwrap())
}

#[test]
fn an_idle_group_keeps_its_processes_and_inactivity_timeout_replaces_one_that_served() {
    // Not preloaded (no application-group=): no script is loaded until a request comes.
    let (_dir, conf) = site(
        "processes=2 threads=2 startup-timeout=2 inactivity-timeout=2",
        "",
    );
    let server = serve(&conf).unwrap_or_else(|e| panic!("{e}"));
    let pids: BTreeSet<u64> = server
        .banner_pids("site")
        .into_iter()
        .map(u64::from)
        .collect();
    assert_eq!(pids.len(), 2, "{:?}", server.banner);
    // Three times the timeouts, with no request: the same processes, none replaced.
    std::thread::sleep(Duration::from_secs(6));
    for pid in &pids {
        assert!(alive(*pid as u32), "idle daemon {pid} is gone");
    }
    assert_eq!(status(&server), (pids.clone(), 0), "{}", server.stderr());

    // One request: its process has had activity, so 2 s of idleness replace it (and only
    // it: the other one never served).
    let asked = Instant::now();
    let r = server.get_strict("/");
    assert_eq!(r.status, 200);
    let served: u64 = r.text().parse().unwrap();
    assert!(pids.contains(&served), "{served} not in {pids:?}");
    assert!(
        eventually(Duration::from_secs(8), || !alive(served as u32)),
        "{}",
        server.stderr()
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(1800),
        "replaced {:?} after its request",
        asked.elapsed()
    );
    let other = *pids.iter().find(|p| **p != served).unwrap();
    assert!(alive(other as u32));
    assert!(eventually(Duration::from_secs(5), || {
        let (now, recycles) = status(&server);
        now.len() == 2 && now.contains(&other) && !now.contains(&served) && recycles == 1
    }));
    let log = server.stderr();
    assert!(log.contains("inactivity-timeout expired"), "{log}");
    // The request started startup-timeout, and the script it loaded stopped it.
    assert!(log.contains("application startup timer cancelled"), "{log}");
    assert!(
        !log.contains("no WSGI script loaded within startup-timeout"),
        "{log}"
    );
}

#[test]
fn a_group_under_300_mb_limits_starts_and_serves() {
    let (_dir, conf) = site(
        "processes=1 threads=15 memory-limit=300000000 virtual-memory-limit=300000000",
        "application-group=%{GLOBAL}",
    );
    let server = serve(&conf).unwrap_or_else(|e| panic!("{e}"));
    let pid = server.banner_pids("site")[0];
    let r = server.get_strict("/");
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert_eq!(r.text(), pid.to_string());
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    for name in ["Max data size", "Max address space"] {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
        assert_eq!(
            line[name.len()..]
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>(),
            ["300000000", "300000000"],
            "{line}"
        );
    }
    // The application has room of its own: 100 MB more, in the same process.
    let r = server.get_strict("/alloc?100000000");
    assert_eq!((r.status, r.text()), (200, "100000000".into()));
    // The allocator settings the supervisor passed stay out of the application's sight.
    assert_eq!(server.get_strict("/environ").text(), "");
    assert_eq!(server.get_strict("/").text(), pid.to_string());
}

/// `wsgi check [EXTRA] CONF`: its exit status and everything it printed.
fn wsgi_check(conf: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .arg("check")
        .args(extra)
        .arg(conf)
        .output()
        .unwrap();
    (out.status.code(), process::output_text(&out))
}

/// Checks that `wsgi serve` refuses `conf` (whose `option=` is `refused`) saying so, then
/// sets the value `message` says to set (`set OPTION=N or more`) and checks that the group
/// starts and serves with it.
fn refused_then_served_with_the_value_given(
    conf: &Path,
    option: &str,
    refused: u64,
    message: &str,
) {
    let said = serve(conf).err().expect("wsgi serve refused the limit");
    assert!(
        said.contains(&format!("{option}=`{refused}` is not valid")),
        "{said}"
    );
    let at = message
        .find(&format!("set {option}="))
        .unwrap_or_else(|| panic!("no `set {option}=` in {message}"));
    let set: u64 = message[at + option.len() + 5..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let text = std::fs::read_to_string(conf)
        .unwrap()
        .replace(&format!(" {option}={refused}"), &format!(" {option}={set}"));
    fs::write_world_readable(conf, &text);
    let server = serve(conf).unwrap_or_else(|e| panic!("{option}={set}: {e}"));
    assert_eq!(server.get_strict("/").status, 200);
}

#[test]
fn a_memory_limit_too_small_to_start_is_refused_by_wsgi_check_and_wsgi_serve() {
    let (_dir, conf) = site(
        "processes=1 threads=15 memory-limit=20000000",
        "application-group=%{GLOBAL}",
    );
    let (code, said) = wsgi_check(&conf, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(
            "memory-limit=`20000000` is not valid: a daemon process with threads=15 needs"
        ),
        "{said}"
    );
    assert!(
        said.contains("before its application loads anything"),
        "{said}"
    );
    refused_then_served_with_the_value_given(&conf, "memory-limit", 20_000_000, &said);
}

#[test]
fn an_address_space_limit_only_the_apache_module_can_start_under_is_refused_by_wsgi_serve() {
    // 100 MB: enough for the Apache module's wsgi-daemon program, not for wsgi serve's.
    let (_dir, conf) = site(
        "processes=1 threads=15 virtual-memory-limit=100000000",
        "application-group=%{GLOBAL}",
    );
    let (code, said) = wsgi_check(&conf, &["--apache"]);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = wsgi_check(&conf, &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("wsgi serve --config refuses"), "{said}");
    assert!(
        said.contains("virtual-memory-limit=`100000000` is not valid: a daemon process of wsgi serve (the wsgi program) with threads=15 needs"),
        "{said}"
    );
    refused_then_served_with_the_value_given(&conf, "virtual-memory-limit", 100_000_000, &said);
}
