//! Scenarios that each need their own CPython start-up (a process can start it only once).
//!
//! Run without `WSGI_INTERP_SCENARIO`, this binary is the driver: it prepares real venvs
//! (`python -m venv`, `virtualenv`, `uv venv`) under /var/tmp and runs itself once per
//! scenario as a child process, checking the child's output, log and timing. With the
//! variable set, it is that child.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wsgi_interp::{Runtime, StartConfig};

const PY: &str = "/usr/bin/python3.11";
const TOOLS: &str = "/var/tmp/wsgi-rs-test/tools/bin";
const ROOT: &str = "/var/tmp/wsgi-rs-test/interp-scenarios-v1";

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

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes package `vpkg` saying `who` into a venv's site-packages.
fn add_pkg(venv: &Path, who: &str) {
    let dir = venv.join("lib/python3.11/site-packages/vpkg");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), format!("WHO = {who:?}\n")).unwrap();
}

fn prepare_venvs() -> Venvs {
    let root = PathBuf::from(ROOT);
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
            sh(Command::new(PY)
                .args(["-m", "venv", "--without-pip"])
                .arg(p));
        }
        sh(Command::new(format!("{TOOLS}/virtualenv"))
            .args(["-q", "--no-seed", "-p", PY])
            .arg(&v.virtualenv));
        sh(Command::new(format!("{TOOLS}/uv"))
            .args(["venv", "-q", "-p", PY])
            .arg(&v.uv));
        add_pkg(&v.base, "base");
        add_pkg(&v.virtualenv, "virtualenv");
        add_pkg(&v.uv, "uv");
        add_pkg(&v.venv, "venv");
        for (d, m) in [(&v.pp1, "ppmod1"), (&v.pp2, "ppmod2")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(format!("{m}.py")), "X = 1\n").unwrap();
        }
        sh(Command::new("chmod").args(["-R", "a+rX"]).arg(&root));
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
    values: HashMap<String, String>,
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
    let values = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
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
                "import sys, os, site\nsite.addsitedir({:?} + '/lib/python3.11/site-packages')",
                venv
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
        other => panic!("unknown scenario {other}"),
    }
}

fn check_python_home(r: &Run, v: &Venvs) {
    let empty = v.empty.display().to_string();
    assert_eq!(r.get("prefix"), empty);
    assert_eq!(r.get("sub_prefix"), empty);
    assert_eq!(r.get("base_prefix"), "/usr");
    assert_eq!(r.get("argv"), "['mod_wsgi']");
    assert_eq!(r.get("json"), "[1]");
    assert_eq!(r.get("flags"), "(1, 1)");
    let path = r.get("path");
    assert!(
        path.contains(&format!("{empty}/lib/python3.11/site-packages")),
        "{path}"
    );
    assert!(path.contains("/usr/lib/python3.11"), "{path}");
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
