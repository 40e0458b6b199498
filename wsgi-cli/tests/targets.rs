//! What `wsgi serve TARGET` serves, as a gunicorn or mod_wsgi-express user types it: module
//! targets (`pkg.app:create_app()`) imported from the working directory (`--chdir`), scripts
//! with another callable (`app.wsgi:make`) and their folder on sys.path, and applications that
//! load at start, so a broken one stops the start with the file, the error and the fix
//! (`--lazy-apps` keeps loading at the first request). Embedded and daemon mode.

mod util;

use std::path::Path;

use util::Server;
use wsgi_testkit::{fs, process};

/// A project folder: a package `pkg` whose `app` module imports a sibling relatively and
/// defines an application factory, and a script `make.wsgi` importing a module beside it.
fn project(dir: &Path) {
    std::fs::create_dir(dir.join("pkg")).unwrap();
    fs::write_world_readable(&dir.join("pkg/__init__.py"), "");
    fs::write_world_readable(&dir.join("pkg/helpers.py"), "GREETING = 'hello from pkg'\n");
    fs::write_world_readable(
        &dir.join("pkg/app.py"),
        "from .helpers import GREETING\n\ndef create_app():\n    def app(environ, start_response):\n        start_response('200 OK', [('Content-Type', 'text/plain')])\n        return [('%s %s' % (GREETING, environ['SCRIPT_NAME'])).encode()]\n    return app\n\ndef helper():\n    pass\n\nwsgi = create_app()\n",
    );
    fs::write_world_readable(&dir.join("sibling.py"), "WORD = 'sibling'\n");
    fs::write_world_readable(
        &dir.join("make.wsgi"),
        "import sibling\n\ndef make(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [('made with %s' % sibling.WORD).encode()]\n",
    );
}

/// Runs `wsgi serve ARGS` expecting it to exit 1 without listening: what it said.
fn refused(args: &[&str]) -> String {
    match Server::try_start_with(&util::PLAIN, args) {
        Ok(_) => panic!("{args:?} started"),
        Err(e) => {
            assert!(e.contains("(exit status: 1)"), "{e}");
            e
        }
    }
}

#[test]
fn module_targets_import_from_the_working_directory() {
    let dir = fs::scratch_world_readable("wsgi-targets-");
    project(dir.path());
    let folder = dir.path().to_str().unwrap();
    let server = Server::start(&[
        "pkg.app:create_app()",
        "--chdir",
        folder,
        "--port",
        "0",
        "--mount",
        "/plain=pkg.app:wsgi",
        "--mount",
        "/made=make.wsgi:make",
    ]);
    let r = server.get_strict("/");
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert_eq!(r.text(), "hello from pkg ");
    assert_eq!(
        server.get_strict("/plain/x").text(),
        "hello from pkg /plain"
    );
    // A script's own folder is on sys.path: it imports the module beside it.
    assert_eq!(server.get_strict("/made").text(), "made with sibling");
}

#[test]
fn module_targets_run_in_daemon_processes_too() {
    let dir = fs::scratch_world_readable("wsgi-targets-");
    project(dir.path());
    let mut args = vec![
        "pkg.app:create_app()",
        "--chdir",
        dir.path().to_str().unwrap(),
        "--processes",
        "1",
        "--threads",
        "2",
        "--port",
        "0",
    ];
    // Daemons never run as root: as root, the tests run them (and the front) as nobody.
    if process::is_root() {
        args.extend(["--user", "nobody"]);
    }
    let server = Server::start_with(&util::DAEMON, &args);
    let r = server.get_strict("/");
    assert_eq!(r.status, 200, "{}", server.stderr());
    assert_eq!(r.text(), "hello from pkg ");
}

#[test]
fn a_broken_application_stops_the_start_with_the_fix() {
    let dir = fs::scratch_world_readable("wsgi-targets-");
    project(dir.path());
    let folder = dir.path().to_str().unwrap();
    let broken = fs::write_world_readable(
        &dir.path().join("broken.wsgi"),
        "def application(environ, start_response):\n    pass\ndef broken(:\n",
    );
    let broken = broken.to_str().unwrap();

    let err = refused(&[broken, "--port", "0"]);
    for part in [
        &format!("{broken} failed to load: SyntaxError: invalid syntax"),
        "line 3",
        "--lazy-apps",
    ] {
        assert!(err.contains(part), "{part:?} in:\n{err}");
    }

    // A callable that is not there: the ones that are, and how to name one.
    let make = dir.path().join("make.wsgi");
    let make = make.to_str().unwrap();
    let err = refused(&[make, "--chdir", folder, "--port", "0"]);
    let expected = format!(
        "{make} has no callable `application`: it defines `make`; name the callable as {make}:NAME (or with --callable-object NAME)"
    );
    assert!(err.contains(&expected), "{expected:?} in:\n{err}");

    let err = refused(&["pkg.app:nothing", "--chdir", folder, "--port", "0"]);
    let expected = format!(
        "`pkg.app:nothing` cannot be served: importing it failed: LookupError: module pkg.app ({folder}/pkg/app.py) has no 'nothing': it defines create_app, helper, wsgi; serve one of them as pkg.app:NAME"
    );
    assert!(err.contains(&expected), "{expected:?} in:\n{err}");

    let err = refused(&["nosuch.module:app", "--chdir", folder, "--port", "0"]);
    for part in [
        "`nosuch.module:app` cannot be served: importing it failed: ModuleNotFoundError: No module named 'nosuch'",
        &format!("The working directory ({folder}) comes first on sys.path"),
        "--chdir DIR",
    ] {
        assert!(err.contains(part), "{part:?} in:\n{err}");
    }

    // What is not a target at all is refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsgi"))
        .args(["serve", "my-site:app", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`my-site:app` is not something wsgi serve can serve"),
        "{err}"
    );

    // In daemon mode too: the group's processes report it, and the start stops.
    let mut daemon = vec![
        "pkg.app:nothing",
        "--chdir",
        folder,
        "--processes",
        "1",
        "--port",
        "0",
    ];
    if process::is_root() {
        daemon.extend(["--user", "nobody"]);
    }
    let err = refused(&daemon);
    let expected =
        "failed to load at start in daemon process group `wsgi-serve`: LookupError: module pkg.app";
    assert!(
        err.contains("`pkg.app:nothing` (through ") && err.contains(expected),
        "{err}"
    );
    daemon.push("--lazy-apps");
    let server = Server::start_with(&util::DAEMON, &daemon);
    assert_eq!(server.get_strict("/").status, 500);
    drop(server);

    // --lazy-apps: it starts, and the broken application answers 500.
    let server = Server::start(&[broken, "--port", "0", "--lazy-apps"]);
    assert_eq!(server.get_strict("/").status, 500);
}
