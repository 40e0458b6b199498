//! Scenarios that each need their own CPython start-up (a process can start it only once).
//!
//! Run without `WSGI_INTERP_SCENARIO`, this binary is the driver: it prepares real venvs
//! (`python -m venv`, `virtualenv`, `uv venv`) under /var/tmp and runs itself once per
//! scenario as a child process, checking the child's output, log and timing. With the
//! variable set, it is that child.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use wsgi_interp::embedded::{BUILD_PYTHON_EXECUTABLE, BUILD_PYTHON_VERSION};
use wsgi_interp::{
    CallOptions, InterpreterOptions, Outcome, RequestHead, Runtime, ScriptError, ScriptSpec,
    StartConfig,
};
use wsgi_testkit::{apps, process, venvs};

/// The venvs are made by the Python this build embeds (a venv of another X.Y is refused).
const PY: &str = BUILD_PYTHON_EXECUTABLE;

fn root() -> PathBuf {
    venvs::test_root().join(format!("interp-scenarios-v2-py{BUILD_PYTHON_VERSION}"))
}

/// `lib/pythonX.Y/site-packages` of a venv of the embedded Python.
fn site_packages(venv: &Path) -> PathBuf {
    venv.join(format!("lib/python{BUILD_PYTHON_VERSION}/site-packages"))
}

/// The embedded Python's installation prefix (`sys.base_prefix`).
fn base_prefix() -> PathBuf {
    Path::new(PY)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn main() {
    if let Ok(name) = std::env::var("WSGI_INTERP_SCENARIO") {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("info")
            .try_init();
        child(&name);
        return;
    }
    let venvs = prepare_venvs();
    let mut failed = 0;
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, check) in [
        ("python_home", check_python_home as fn(&Run, &Venvs)),
        ("python_path", check_python_path),
        ("venv_groups_base_home", check_groups_base),
        ("venv_groups_empty_home", check_groups_empty),
        ("prompt_exit_with_stuck_thread", check_prompt_exit),
        ("clean_exit_runs_atexit", check_clean_exit),
        ("own_gil_parallel_and_refusals", check_own_gil),
        ("own_gil_datetime_shutdown", check_own_gil_shutdown),
        ("own_gil_for_one_group_by_section", check_own_gil_by_section),
        ("mod_wsgi_process_stopping", check_process_stopping),
        ("mod_wsgi_shutdown_callbacks", check_shutdown_callbacks),
    ] {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let run = spawn(name, &venvs);
        let result = std::panic::catch_unwind(|| {
            assert!(run.ok, "the child process failed");
            check(&run, &venvs)
        });
        match result {
            Ok(()) => println!("scenario {name} ... ok ({:?})", run.elapsed),
            Err(_) => {
                failed += 1;
                println!(
                    "scenario {name} ... FAILED\n--- stdout\n{}\n--- stderr\n{}",
                    run.stdout, run.stderr
                );
            }
        }
    }
    if failed > 0 {
        println!("{failed} scenario(s) failed");
        std::process::exit(1);
    }
}

struct Venvs {
    empty: PathBuf,
    base: PathBuf,
    virtualenv: PathBuf,
    uv: PathBuf,
    venv: PathBuf,
    pp1: PathBuf,
    pp2: PathBuf,
    markers: PathBuf,
}

/// Writes package `vpkg` saying `who` into a venv's site-packages.
fn add_pkg(venv: &Path, who: &str) {
    let dir = site_packages(venv).join("vpkg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), format!("WHO = {who:?}\n")).unwrap();
}

fn prepare_venvs() -> Venvs {
    let root = root();
    let v = Venvs {
        empty: root.join("empty"),
        base: root.join("base"),
        virtualenv: root.join("ve-virtualenv"),
        uv: root.join("ve-uv"),
        venv: root.join("ve-venv"),
        pp1: root.join("pp1"),
        pp2: root.join("pp2"),
        markers: root.join(format!("markers-{}", std::process::id())),
    };
    if !root.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        for p in [&v.empty, &v.base, &v.venv] {
            venvs::make_venv(PY, p);
        }
        let tools = venvs::tools_dir();
        process::run(
            Command::new(tools.join("virtualenv"))
                .args(["-q", "--no-seed", "-p", PY])
                .arg(&v.virtualenv),
        );
        process::run(
            Command::new(tools.join("uv"))
                .args(["venv", "-q", "-p", PY])
                .arg(&v.uv),
        );
        add_pkg(&v.base, "base");
        add_pkg(&v.virtualenv, "virtualenv");
        add_pkg(&v.uv, "uv");
        add_pkg(&v.venv, "venv");
        for (d, m) in [(&v.pp1, "ppmod1"), (&v.pp2, "ppmod2")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(format!("{m}.py")), "X = 1\n").unwrap();
        }
        process::run(Command::new("chmod").args(["-R", "a+rX"]).arg(&root));
        std::fs::write(root.join("ready"), "").unwrap();
    }
    std::fs::create_dir_all(&v.markers).unwrap();
    v
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    values: BTreeMap<String, String>,
}

impl Run {
    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("child printed no {key}"))
    }
}

fn spawn(name: &str, v: &Venvs) -> Run {
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("WSGI_INTERP_SCENARIO", name)
        .env("SC_EMPTY", &v.empty)
        .env("SC_BASE", &v.base)
        .env("SC_VIRTUALENV", &v.virtualenv)
        .env("SC_UV", &v.uv)
        .env("SC_VENV", &v.venv)
        .env("SC_PP", format!("{}:{}", v.pp1.display(), v.pp2.display()))
        .env("SC_MARKERS", &v.markers)
        .env("PYTHONPATH", "/nonexistent-pythonpath")
        .env("PYTHONHOME", "/nonexistent-pythonhome")
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let values = apps::fields(stdout.as_bytes());
    Run {
        ok: out.status.success(),
        stdout,
        stderr,
        elapsed,
        values,
    }
}

fn env_path(key: &str) -> PathBuf {
    PathBuf::from(std::env::var(key).unwrap())
}

fn start(home: Option<PathBuf>, python_path: Vec<PathBuf>) -> Runtime {
    Runtime::start(&StartConfig {
        python_home: home,
        python_path,
        ..Default::default()
    })
    .expect("CPython starts")
}

fn eval(rt: &Runtime, group: &str, setup: &str, expr: &str) -> String {
    rt.interpreter(group)
        .unwrap()
        .run(|py| {
            py.exec(setup).unwrap_or_else(|e| panic!("{}", e.traceback));
            py.eval(expr).unwrap_or_else(|e| panic!("{}", e.traceback))
        })
        .unwrap()
}

const ACTIVATE: &str =
    "p = {p!r} + '/bin/activate_this.py'\nexec(open(p).read(), dict(__file__=p))\n";

fn child(name: &str) {
    let pp: Vec<PathBuf> = std::env::var("SC_PP")
        .unwrap()
        .split(':')
        .map(PathBuf::from)
        .collect();
    match name {
        "python_home" => {
            let rt = start(Some(env_path("SC_EMPTY")), vec![]);
            let probe = "import sys, json, site\n";
            for (k, e) in [
                ("prefix", "sys.prefix"),
                ("base_prefix", "sys.base_prefix"),
                ("argv", "sys.argv"),
                ("path", "'|'.join(sys.path)"),
                ("json", "json.dumps([1])"),
                (
                    "flags",
                    "(sys.flags.ignore_environment, sys.flags.no_user_site)",
                ),
            ] {
                println!("{k}={}", eval(&rt, "", probe, e));
            }
            println!("sub_prefix={}", eval(&rt, "sub", probe, "sys.prefix"));
            rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
        }
        "python_path" => {
            let rt = start(None, pp);
            let e = "'|'.join(sys.path[:2]) + '|' + str(__import__('ppmod1').X + __import__('ppmod2').X)";
            println!("main={}", eval(&rt, "", "import sys", e));
            println!("sub={}", eval(&rt, "sub", "import sys", e));
            rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
        }
        "venv_groups_base_home" | "venv_groups_empty_home" => {
            let home = if name.ends_with("base_home") {
                "SC_BASE"
            } else {
                "SC_EMPTY"
            };
            let rt = start(Some(env_path(home)), vec![]);
            let report =
                "'%s|%s|%s' % (__import__('vpkg').WHO, sys.prefix, os.environ.get('VIRTUAL_ENV'))";
            let guarded = "(lambda: (__import__('vpkg').WHO) if __import__('importlib').util.find_spec('vpkg') else 'none')()";
            println!(
                "main_before={}",
                eval(&rt, "", "import sys, os, importlib.util", guarded)
            );
            let ve = env_path("SC_VIRTUALENV").display().to_string();
            let uv = env_path("SC_UV").display().to_string();
            let venv = env_path("SC_VENV").display().to_string();
            let act = |p: &str| {
                format!(
                    "import sys, os\n{}",
                    ACTIVATE.replace("{p!r}", &format!("{p:?}"))
                )
            };
            println!(
                "virtualenv={}",
                eval(&rt, "app-virtualenv", &act(&ve), report)
            );
            println!("uv={}", eval(&rt, "app-uv", &act(&uv), report));
            let addsite = format!(
                "import sys, os, site\nsite.addsitedir({:?})",
                site_packages(Path::new(&venv)).display().to_string()
            );
            println!("venv={}", eval(&rt, "app-venv", &addsite, report));
            println!(
                "later={}",
                eval(
                    &rt,
                    "app-later",
                    "import os",
                    "os.environ.get('VIRTUAL_ENV')"
                )
            );
            println!(
                "main_after={}",
                eval(&rt, "", "import sys, os, importlib.util", guarded)
            );
            rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
        }
        "prompt_exit_with_stuck_thread" => {
            let markers = env_path("SC_MARKERS");
            let rt = start(None, vec![]);
            eval(
                &rt,
                "one",
                &format!(
                    "import atexit\natexit.register(lambda: open({:?}, 'w').write('x'))",
                    markers.join("one-atexit").display().to_string()
                ),
                "1",
            );
            eval(
                &rt,
                "two",
                "import threading, time\nt = threading.Thread(target=time.sleep, args=(3600,), name='stuck-worker')\nt.start()",
                "t.is_alive()",
            );
            eval(&rt, "three", "import json", "1");
            let started = Instant::now();
            let r = rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
            println!("shutdown_ms={}", started.elapsed().as_millis());
            println!("finalized={}", r.finalized);
            println!("ended={}", r.ended.join(","));
            println!("left={:?}", r.left_running);
        }
        "clean_exit_runs_atexit" => {
            let markers = env_path("SC_MARKERS");
            let rt = start(None, vec![]);
            for g in ["", "a", "b"] {
                eval(
                    &rt,
                    g,
                    &format!(
                        "import atexit, threading, time\natexit.register(lambda: open({:?}, 'w').write('x'))\nthreading.Thread(target=lambda: time.sleep(0.05), name='short-{g}').start()",
                        markers.join(format!("clean-{g}")).display().to_string()
                    ),
                    "1",
                );
            }
            // A daemon thread in main does not hold up finalisation.
            eval(
                &rt,
                "",
                "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()",
                "1",
            );
            let r = rt.shutdown(Duration::from_secs(1), Duration::from_millis(500));
            println!("finalized={}", r.finalized);
            println!("ended={}", r.ended.join(","));
        }
        "own_gil_parallel_and_refusals" => {
            let Some(rt) = start_own_gil() else { return };
            if std::env::var_os("SC_SKIP_PAR").is_none() {
                own_gil_parallel(&rt);
            }
            if std::env::var_os("SC_SKIP_REF").is_none() {
                own_gil_refusal(&rt);
            }
            let r = rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
            println!("finalized={}", r.finalized);
        }
        "own_gil_for_one_group_by_section" => {
            // `<WSGIInterpreterOptions application-group=ext> WSGIPerInterpreterGIL On`: the
            // group `ext` gets its own GIL (and refuses the extension), `other` shares main's.
            let config = StartConfig {
                interpreter_rules: wsgi_config::InterpreterRules {
                    rules: vec![wsgi_config::InterpreterRule {
                        application_group: Some("ext".into()),
                        per_interpreter_gil: Some(true),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ..StartConfig::default()
            };
            let rt = match Runtime::start_with(&config, &InterpreterOptions::default()) {
                Ok(rt) => rt,
                Err(e) => {
                    println!("start_error={e}");
                    return;
                }
            };
            own_gil_refusal_in(&rt, &[("ext_sub", "ext"), ("ext_other", "other")]);
            let r = rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
            println!("finalized={}", r.finalized);
        }
        "own_gil_datetime_shutdown" => {
            let markers = env_path("SC_MARKERS");
            let Some(rt) = start_own_gil() else { return };
            // Several own-GIL interpreters importing datetime (also through email) corrupted
            // the heap on 3.12.1 (ARCHITECTURE.md, "Own-GIL interpreters"): `_datetime`'s init
            // ran in the first one, then was refused, and the next import crashed. The main
            // interpreter imports it last.
            for g in ["dt-1", "dt-2", "dt-3", ""] {
                let v = eval(
                    &rt,
                    g,
                    &format!(
                        "import atexit, datetime, email.message, json, decimal\natexit.register(lambda: open({:?}, 'w').write('x'))\nm = email.message.EmailMessage()\nm['Date'] = 'Mon, 01 Jan 2024 00:00:00 +0000'\nd = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc).isoformat() + '|' + str(m['Date'].datetime.year)",
                        markers.join(format!("dt-atexit-{g}")).display().to_string()
                    ),
                    "d",
                );
                println!("dt{g}={v}");
            }
            let started = Instant::now();
            let r = rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
            println!("shutdown_ms={}", started.elapsed().as_millis());
            println!("finalized={}", r.finalized);
            println!("ended={}", r.ended.join(","));
        }
        "mod_wsgi_process_stopping" | "mod_wsgi_shutdown_callbacks" => {
            let markers = env_path("SC_MARKERS");
            let rt = Runtime::start(&StartConfig {
                process_group: "grp".into(),
                maximum_processes: 3,
                threads_per_process: 7,
                ..Default::default()
            })
            .expect("CPython starts");
            for g in ["", "sub"] {
                let log = markers.join(format!("{name}-{g}")).display().to_string();
                let values = eval(
                    &rt,
                    g,
                    &format!(
                        "import mod_wsgi\n\
                         def record(tag):\n\
                         \x20   def cb(name, **kw):\n\
                         \x20       open({log:?}, 'a').write('%s %s %r\\n' % (tag, name, sorted(kw.items())))\n\
                         \x20   return cb\n\
                         def broken(name, **kw):\n\
                         \x20   raise ValueError('callback fails')\n\
                         mod_wsgi.subscribe_shutdown(broken)\n\
                         assert mod_wsgi.subscribe_shutdown(record('shutdown')) is not None\n\
                         mod_wsgi.subscribe_events(record('event'))\n"
                    ),
                    "(mod_wsgi.process_group, mod_wsgi.application_group, mod_wsgi.maximum_processes, mod_wsgi.threads_per_process)",
                );
                println!("values{g}={values}");
            }
            if name == "mod_wsgi_process_stopping" {
                // A daemon process draining: the callbacks run now, while Python serves.
                rt.process_stopping("maximum_requests");
                println!("alive={}", eval(&rt, "sub", "", "1 + 1"));
                rt.process_stopping("again");
            }
            let r = rt.shutdown(Duration::from_secs(1), Duration::from_millis(300));
            println!("finalized={}", r.finalized);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Starts with `WSGIPerInterpreterGIL On` (`SC_GIL_SHARED` set: without it, to show that the
/// parallelism check fails on a shared GIL); prints the refusal and returns `None` when the
/// embedded Python is too old.
fn start_own_gil() -> Option<Runtime> {
    let options = InterpreterOptions {
        per_interpreter_gil: std::env::var_os("SC_GIL_SHARED").is_none(),
    };
    match Runtime::start_with(&StartConfig::default(), &options) {
        Ok(rt) => Some(rt),
        Err(e) => {
            println!("start_error={e}");
            None
        }
    }
}

/// Two groups spin the CPU at once, each from its own thread: with their own GILs the
/// two attached spans overlap; on a shared GIL (3.11/3.12) the second waits for the first.
fn own_gil_parallel(rt: &Runtime) {
    let spin = "def spin(n):\n    x = 0\n    for i in range(n):\n        x += i\n    return x\n";
    let handles: Vec<_> = ["cpu-a", "cpu-b"]
        .iter()
        .map(|g| {
            let h = rt.interpreter(g).unwrap();
            h.run(|py| py.exec(spin).unwrap()).unwrap();
            h
        })
        .collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let barrier = Arc::new(Barrier::new(handles.len()));
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let threads: Vec<_> = handles
                .iter()
                .map(|h| {
                    let barrier = barrier.clone();
                    s.spawn(move || {
                        barrier.wait();
                        let span = h
                            .run(|py| {
                                let t0 = Instant::now();
                                py.eval("spin(2000000)").unwrap();
                                (t0, Instant::now())
                            })
                            .unwrap();
                        Runtime::release_thread();
                        span
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let start = spans.iter().map(|s| s.0).max().unwrap();
        let end = spans.iter().map(|s| s.1).min().unwrap();
        let shortest = spans.iter().map(|s| s.1 - s.0).min().unwrap();
        let overlap = end.saturating_duration_since(start);
        println!(
            "spans_ms={:?}",
            spans
                .iter()
                .map(|s| (s.1 - s.0).as_millis())
                .collect::<Vec<_>>()
        );
        best = best.max(overlap.as_secs_f64() / shortest.as_secs_f64());
    }
    println!("overlap={best:.2}");
}

/// An extension that refuses own-GIL interpreters fails the script with an error naming it
/// and the remedy; the same script works in the main interpreter.
fn own_gil_refusal(rt: &Runtime) {
    own_gil_refusal_in(rt, &[("ext_sub", "ext"), ("ext_main", "")]);
}

/// [`own_gil_refusal`] in the application groups of `groups` (printed under their keys).
fn own_gil_refusal_in(rt: &Runtime, groups: &[(&str, &str)]) {
    // `_ctypes` (and `_decimal`) refuse on 3.12 only; `_curses` refuses on 3.12 and 3.13.
    let (stmt, module) = if BUILD_PYTHON_VERSION == "3.12" {
        ("ctypes", "_ctypes")
    } else {
        ("_curses", "_curses")
    };
    println!("module={module}");
    let path = env_path("SC_MARKERS").join("ext.wsgi");
    std::fs::write(
        &path,
        format!("import {stmt}\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"),
    )
    .unwrap();
    let spec = ScriptSpec::new(path);
    let only = std::env::var("SC_ONLY").unwrap_or_default();
    for &(key, group) in groups {
        if !only.is_empty() && only != key {
            continue;
        }
        let interp = rt.interpreter(group).unwrap();
        let mut sink = Collect(None);
        let out = interp.call(
            &spec,
            &RequestHead::default(),
            &CallOptions::default(),
            &mut io::empty(),
            &mut sink,
        );
        let shown = match out {
            Outcome::Script(ScriptError::Raised { error, .. }) => error.message,
            Outcome::Complete { status, .. } => status.to_string(),
            other => format!("{other:?}"),
        };
        println!("{key}={}", shown.replace('\n', " "));
    }
}

struct Collect(Option<u16>);

impl wsgi_interp::ResponseSink for Collect {
    fn start(&mut self, status: u16, _: &str, _: Vec<(String, Vec<u8>)>) -> io::Result<()> {
        self.0 = Some(status);
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

fn check_too_old(r: &Run) -> bool {
    if BUILD_PYTHON_VERSION != "3.11" {
        return false;
    }
    let e = r.get("start_error");
    assert!(e.contains("needs Python 3.12 or newer"), "{e}");
    assert!(e.contains("PYO3_PYTHON="), "{e}");
    true
}

fn check_own_gil(r: &Run, _: &Venvs) {
    if check_too_old(r) {
        return;
    }
    let overlap: f64 = r.get("overlap").parse().unwrap();
    assert!(
        overlap > 0.5,
        "own-GIL groups did not run in parallel: {overlap}"
    );
    let module = r.get("module");
    let e = r.get("ext_sub");
    assert!(
        e.contains(&format!(
            "module {module} does not support loading in subinterpreters"
        )),
        "{e}"
    );
    assert!(e.contains(&format!("`{module}`")), "{e}");
    assert!(e.contains("WSGIApplicationGroup %{GLOBAL}"), "{e}");
    assert!(e.contains("WSGIPerInterpreterGIL Off"), "{e}");
    // The log line names the module and the remedy too.
    assert!(
        r.stderr
            .contains(&format!("the extension module `{module}` cannot be loaded")),
        "{}",
        r.stderr
    );
    assert_eq!(r.get("ext_main"), "200");
    assert_eq!(r.get("finalized"), "true");
}

fn check_own_gil_by_section(r: &Run, _: &Venvs) {
    if check_too_old(r) {
        return;
    }
    let module = r.get("module");
    let e = r.get("ext_sub");
    assert!(
        e.contains(&format!(
            "module {module} does not support loading in subinterpreters"
        )),
        "the selected group has its own GIL: {e}"
    );
    assert_eq!(
        r.get("ext_other"),
        "200",
        "another group shares the main GIL"
    );
    assert_eq!(r.get("finalized"), "true");
}

fn check_own_gil_shutdown(r: &Run, v: &Venvs) {
    if check_too_old(r) {
        return;
    }
    for g in ["", "dt-1", "dt-2", "dt-3"] {
        assert_eq!(r.get(&format!("dt{g}")), "2024-01-01T00:00:00+00:00|2024");
        assert!(
            v.markers.join(format!("dt-atexit-{g}")).exists(),
            "atexit of group {g:?} did not run"
        );
    }
    assert!(r.get("shutdown_ms").parse::<u64>().unwrap() < 700);
    assert!(
        r.elapsed < Duration::from_secs(2),
        "child took {:?}",
        r.elapsed
    );
    assert_eq!(r.get("finalized"), "true");
    assert_eq!(r.get("ended"), "dt-3,dt-2,dt-1");
}

fn check_python_home(r: &Run, v: &Venvs) {
    let empty = v.empty.display().to_string();
    assert_eq!(r.get("prefix"), empty);
    assert_eq!(r.get("sub_prefix"), empty);
    assert_eq!(r.get("base_prefix"), base_prefix().display().to_string());
    assert_eq!(r.get("argv"), "['mod_wsgi']");
    assert_eq!(r.get("json"), "[1]");
    assert_eq!(r.get("flags"), "(1, 1)");
    let path = r.get("path");
    assert!(
        path.contains(&site_packages(&v.empty).display().to_string()),
        "{path}"
    );
    let stdlib = base_prefix().join(format!("lib/python{BUILD_PYTHON_VERSION}"));
    assert!(path.contains(&stdlib.display().to_string()), "{path}");
    assert!(!path.contains("nonexistent-pythonpath"), "{path}");
    assert!(
        !path.contains("dist-packages"),
        "base site-packages leaked: {path}"
    );
}

fn check_python_path(r: &Run, v: &Venvs) {
    let want = format!("{}|{}|2", v.pp1.display(), v.pp2.display());
    assert_eq!(r.get("main"), want);
    assert_eq!(r.get("sub"), want);
}

fn check_groups(r: &Run, v: &Venvs, home_pkg: &str) {
    let ve = v.virtualenv.display().to_string();
    let uv = v.uv.display().to_string();
    assert_eq!(r.get("virtualenv"), format!("virtualenv|{ve}|{ve}"));
    assert_eq!(r.get("uv"), format!("uv|{uv}|{uv}"));
    assert_eq!(r.get("main_before"), home_pkg);
    assert_eq!(r.get("main_after"), home_pkg);
    // VIRTUAL_ENV set by activate_this (putenv) does not reach a group created later.
    assert_eq!(r.get("later"), "None");
}

fn check_groups_base(r: &Run, v: &Venvs) {
    check_groups(r, v, "base");
    // The seed's surprise: site.addsitedir appends, so the home's package wins.
    let base = v.base.display().to_string();
    assert_eq!(r.get("venv"), format!("base|{base}|None"));
}

fn check_groups_empty(r: &Run, v: &Venvs) {
    check_groups(r, v, "none");
    // ...prevented by an empty python-home venv.
    let empty = v.empty.display().to_string();
    assert_eq!(r.get("venv"), format!("venv|{empty}|None"));
}

fn check_prompt_exit(r: &Run, v: &Venvs) {
    assert!(
        r.elapsed < Duration::from_secs(1),
        "child took {:?}",
        r.elapsed
    );
    assert!(r.get("shutdown_ms").parse::<u64>().unwrap() < 700);
    assert_eq!(r.get("finalized"), "false");
    assert_eq!(r.get("ended"), "three,one");
    assert_eq!(r.get("left"), "[(\"two\", [\"stuck-worker\"])]");
    assert!(r.stderr.contains("stuck-worker"), "{}", r.stderr);
    assert!(
        v.markers.join("one-atexit").exists(),
        "atexit of an ended group did not run"
    );
}

/// What a `mod_wsgi_*` scenario shows: the module's values, and its callbacks run once in
/// each interpreter with `reason`, the event callback first (the broken shutdown callback
/// logged, the others run all the same).
fn check_mod_wsgi(r: &Run, v: &Venvs, scenario: &str, reason: &str) {
    assert_eq!(r.get("values"), "('grp', '', 3, 7)");
    assert_eq!(r.get("valuessub"), "('grp', 'sub', 3, 7)");
    assert_eq!(r.get("finalized"), "true");
    assert!(
        r.stderr.contains("ValueError: callback fails"),
        "{}",
        r.stderr
    );
    for g in ["", "sub"] {
        let log = std::fs::read_to_string(v.markers.join(format!("{scenario}-{g}")))
            .unwrap_or_else(|e| panic!("no callback ran in {g:?}: {e}"));
        assert_eq!(
            log,
            format!(
                "event process_stopping [('shutdown_reason', '{reason}')]\n\
                 shutdown process_stopping [('shutdown_reason', '{reason}')]\n"
            )
        );
    }
}

fn check_process_stopping(r: &Run, v: &Venvs) {
    // A daemon's reason; neither the second call nor the shutdown ran them again.
    check_mod_wsgi(r, v, "mod_wsgi_process_stopping", "maximum_requests");
    assert_eq!(r.get("alive"), "2");
}

fn check_shutdown_callbacks(r: &Run, v: &Venvs) {
    // An embedded process stopping: mod_wsgi's reason is empty there.
    check_mod_wsgi(r, v, "mod_wsgi_shutdown_callbacks", "");
}

fn check_clean_exit(r: &Run, v: &Venvs) {
    assert!(
        r.elapsed < Duration::from_secs(1),
        "child took {:?}",
        r.elapsed
    );
    assert_eq!(r.get("finalized"), "true");
    assert_eq!(r.get("ended"), "b,a");
    for g in ["", "a", "b"] {
        assert!(
            v.markers.join(format!("clean-{g}")).exists(),
            "atexit of group {g:?} did not run"
        );
    }
}
