//! Every configuration block of the user's spec (the mod_wsgi "Virtual Environments" page)
//! parses, validates and routes as the spec says.

use std::path::{Path, PathBuf};

use wsgi_config::reader::ReadOptions;
use wsgi_config::route::{ProcessGroup, Route, RouteError, RouteRequest};
use wsgi_config::{Config, load_str};

/// A project folder with the spec's scripts in it.
struct Project {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn project() -> Project {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("project");
    std::fs::create_dir(&path).unwrap();
    for name in [
        "myapp.wsgi",
        "myapp1.wsgi",
        "myapp2.wsgi",
        "myapp3.wsgi",
        "app1.wsgi",
        "helper.py",
        "notes.txt",
    ] {
        std::fs::write(path.join(name), "def application(e, s): pass\n").unwrap();
    }
    std::fs::create_dir(path.join("sub")).unwrap();
    std::fs::write(path.join("sub/deep.wsgi"), "").unwrap();
    Project { _dir: dir, path }
}

fn load(text: &str, project: &Project) -> Config {
    let text = text.replace("/some/path/project", project.path.to_str().unwrap());
    match load_str(&text, Path::new("site.conf"), &ReadOptions::default()) {
        Ok(c) => c,
        Err(errors) => panic!(
            "{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn route(config: &Config, port: u16, path: &str) -> Route {
    config
        .route(&RouteRequest {
            local_ip: Some("127.0.0.1".parse().unwrap()),
            local_port: port,
            host: Some("example.com"),
            path,
            facts: None,
        })
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .unwrap_or_else(|| panic!("{path}: no route"))
}

fn route_err(config: &Config, path: &str) -> RouteError {
    config
        .route(&RouteRequest {
            local_ip: None,
            local_port: 80,
            host: None,
            path,
            facts: None,
        })
        .expect_err(path)
}

fn daemon(name: &str) -> ProcessGroup {
    ProcessGroup::Daemon(name.to_string())
}

#[test]
fn daemon_mode_single_application() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIDaemonProcess myapp python-home=/usr/local/venvs/myapp
WSGIProcessGroup myapp
WSGIApplicationGroup %{GLOBAL}
WSGIScriptAlias / /some/path/project/myapp.wsgi
<Directory /some/path/project>
Require all granted
</Directory>
",
        &p,
    );
    let group = c.daemon("myapp").unwrap();
    assert_eq!(
        group.options.python_home.as_deref(),
        Some(Path::new("/usr/local/venvs/myapp"))
    );
    assert_eq!((group.options.processes, group.options.threads), (1, 15));
    assert!(!group.options.multiprocess());
    let r = route(&c, 80, "/hello/world");
    assert_eq!(r.script, p.path.join("myapp.wsgi"));
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("", "/hello/world")
    );
    assert_eq!(r.process_group, daemon("myapp"));
    assert_eq!(
        r.application_group, "",
        "%{{GLOBAL}} is the main interpreter"
    );
    assert_eq!(r.callable_object, "application");
}

#[test]
fn daemon_mode_many_applications_each_in_its_own_sub_interpreter() {
    let p = project();
    let c = load(
        "Listen 8080
<VirtualHost *:8080>
ServerName example.com
WSGIDaemonProcess myapps python-home=/usr/local/venvs/myapps
WSGIProcessGroup myapps
WSGIScriptAlias /myapp3 /some/path/project/myapp3.wsgi
WSGIScriptAlias /myapp2 /some/path/project/myapp2.wsgi
WSGIScriptAlias / /some/path/project/myapp1.wsgi
<Directory /some/path/project>
Require all granted
</Directory>
</VirtualHost>
",
        &p,
    );
    let r = route(&c, 8080, "/myapp3/page");
    assert_eq!(r.script, p.path.join("myapp3.wsgi"));
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("/myapp3", "/page")
    );
    assert_eq!(r.process_group, daemon("myapps"));
    assert_eq!(r.application_group, "example.com:8080|/myapp3");
    let r = route(&c, 8080, "/myapp2");
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("/myapp2", "")
    );
    assert_eq!(r.application_group, "example.com:8080|/myapp2");
    let r = route(&c, 8080, "/myapp22/x");
    assert_eq!(
        r.script,
        p.path.join("myapp1.wsgi"),
        "/myapp2 matches whole segments only"
    );
    assert_eq!(r.application_group, "example.com:8080|");
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("", "/myapp22/x")
    );
}

#[test]
fn daemon_mode_many_applications_sharing_the_main_interpreter() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIDaemonProcess myapps python-home=/usr/local/venvs/myapps
WSGIProcessGroup myapps
WSGIApplicationGroup %{GLOBAL}
WSGIScriptAlias /myapp2 /some/path/project/myapp2.wsgi
WSGIScriptAlias / /some/path/project/myapp1.wsgi
",
        &p,
    );
    assert_eq!(route(&c, 80, "/myapp2/x").application_group, "");
    assert_eq!(route(&c, 80, "/x").application_group, "");
}

#[test]
fn daemon_mode_directory_mount() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIDaemonProcess myapps
WSGIProcessGroup myapps
WSGIScriptAlias / /some/path/project/
<Directory /some/path/project>
Require all granted
</Directory>
",
        &p,
    );
    let r = route(&c, 80, "/app1.wsgi/rest/of/path");
    assert_eq!(r.script, p.path.join("app1.wsgi"));
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("/app1.wsgi", "/rest/of/path")
    );
    assert_eq!(r.application_group, "example.com|/app1.wsgi");
    let r = route(&c, 80, "/sub/deep.wsgi");
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("/sub/deep.wsgi", "")
    );
    let r = route(&c, 80, "/helper.py/x");
    assert_eq!(r.script, p.path.join("helper.py"));
    // Unlike mod_wsgi, a .txt file is not executed as Python.
    assert_eq!(route_err(&c, "/notes.txt").status(), 404);
    assert_eq!(route_err(&c, "/missing.wsgi").status(), 404);
    assert_eq!(route_err(&c, "/sub").status(), 403);
    assert_eq!(route_err(&c, "/../etc/passwd").status(), 400);
    assert_eq!(route_err(&c, "/%2e%2e/%2e%2e/etc/passwd").status(), 400);
}

#[test]
fn directory_mount_never_follows_a_symlink_out() {
    let p = project();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.wsgi"), "").unwrap();
    std::os::unix::fs::symlink(outside.path().join("evil.wsgi"), p.path.join("link.wsgi")).unwrap();
    std::os::unix::fs::symlink(outside.path(), p.path.join("linkdir")).unwrap();
    let c = load("WSGIScriptAlias / /some/path/project/\n", &p);
    assert_eq!(route_err(&c, "/link.wsgi").status(), 404);
    assert_eq!(route_err(&c, "/linkdir/evil.wsgi").status(), 404);
}

#[test]
fn embedded_mode_single_application() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIPythonHome /usr/local/venvs/myapp
WSGIScriptAlias / /some/path/project/myapp.wsgi
WSGIApplicationGroup %{GLOBAL}
<Directory /some/path/project>
Require all granted
</Directory>
",
        &p,
    );
    assert_eq!(
        c.python.home.as_ref().unwrap().value,
        Path::new("/usr/local/venvs/myapp")
    );
    let r = route(&c, 80, "/");
    assert_eq!(r.process_group, ProcessGroup::Embedded);
    assert_eq!(r.application_group, "");
}

#[test]
fn embedded_mode_inside_a_virtual_host_with_python_home_outside() {
    let p = project();
    let c = load(
        "WSGIPythonHome /usr/local/venvs/myapps
Listen 8080
<VirtualHost *:8080>
ServerName example.com
WSGIScriptAlias /myapp3 /some/path/project/myapp3.wsgi
WSGIScriptAlias /myapp2 /some/path/project/myapp2.wsgi
WSGIScriptAlias / /some/path/project/myapp1.wsgi
</VirtualHost>
",
        &p,
    );
    let r = route(&c, 8080, "/myapp3");
    assert_eq!(r.process_group, ProcessGroup::Embedded);
    assert_eq!(r.application_group, "example.com:8080|/myapp3");
    assert_eq!(route(&c, 8080, "/").application_group, "example.com:8080|");
    // The port comes from the connection, never from the Host header.
    let r = c
        .route(&RouteRequest {
            local_ip: None,
            local_port: 8080,
            host: Some("example.com:9999"),
            path: "/myapp3",
            facts: None,
        })
        .unwrap()
        .unwrap();
    assert_eq!(r.application_group, "example.com:8080|/myapp3");
}

#[test]
fn embedded_mode_directory_mount() {
    let p = project();
    let c = load(
        "ServerName example.com\nWSGIScriptAlias / /some/path/project/\n",
        &p,
    );
    let r = route(&c, 80, "/app1.wsgi");
    assert_eq!(r.process_group, ProcessGroup::Embedded);
    assert_eq!(r.application_group, "example.com|/app1.wsgi");
}

#[test]
fn python_path_with_two_folders() {
    let p = project();
    let c = load(
        "WSGIDaemonProcess myapp python-path=/some/path/project:/srv/lib
WSGIPythonPath /some/path/project:/srv/shared
WSGIScriptAlias / /some/path/project/myapp.wsgi process-group=myapp
",
        &p,
    );
    let group = c.daemon("myapp").unwrap();
    assert_eq!(
        group.options.python_path,
        vec![p.path.clone(), PathBuf::from("/srv/lib")]
    );
    assert_eq!(
        c.python.path,
        vec![p.path.clone(), PathBuf::from("/srv/shared")]
    );
    assert_eq!(route(&c, 80, "/").process_group, daemon("myapp"));
}

#[test]
fn empty_venv_as_the_process_home() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIDaemonProcess myapps python-home=/usr/local/venvs/empty
WSGIProcessGroup myapps
WSGIScriptAlias /myapp2 /some/path/project/myapp2.wsgi
WSGIScriptAlias / /some/path/project/myapp1.wsgi
",
        &p,
    );
    assert_eq!(
        c.daemon("myapps")
            .unwrap()
            .python_home(&c.python)
            .map(PathBuf::as_path),
        Some(Path::new("/usr/local/venvs/empty"))
    );
    assert_ne!(
        route(&c, 80, "/myapp2").application_group,
        route(&c, 80, "/").application_group
    );
}

#[test]
fn script_alias_options_override_the_directives() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIDaemonProcess a
WSGIDaemonProcess b processes=2 threads=4
WSGIProcessGroup a
WSGIScriptAlias /b /some/path/project/myapp.wsgi process-group=b application-group=%{GLOBAL} callable-object=app
WSGIScriptAlias / /some/path/project/myapp1.wsgi
",
        &p,
    );
    let r = route(&c, 80, "/b/x");
    assert_eq!(r.process_group, daemon("b"));
    assert_eq!(r.application_group, "");
    assert_eq!(r.callable_object, "app");
    assert!(c.daemon("b").unwrap().options.multiprocess());
    assert_eq!(route(&c, 80, "/").process_group, daemon("a"));
}

#[test]
fn script_alias_match_maps_extension_less_urls() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIScriptAliasMatch ^/wsgi-scripts/([^/]+) /some/path/project/$1.wsgi
",
        &p,
    );
    let r = route(&c, 80, "/wsgi-scripts/app1/extra");
    assert_eq!(r.script, p.path.join("app1.wsgi"));
    assert_eq!(
        (r.script_name.as_str(), r.path_info.as_str()),
        ("/wsgi-scripts/app1", "/extra")
    );
    assert_eq!(route_err(&c, "/wsgi-scripts/nothere").status(), 404);
}

#[test]
fn env_application_groups_and_set_env() {
    let p = project();
    let c = load(
        "ServerName example.com
WSGIScriptAlias /other /some/path/project/myapp1.wsgi application-group=%{ENV:WSGI_RS_TEST_UNSET_VARIABLE}
WSGIScriptAlias / /some/path/project/myapp.wsgi
<Directory /some/path/project>
SetEnv APP_GROUP blue
WSGIApplicationGroup %{ENV:APP_GROUP}
</Directory>
",
        &p,
    );
    assert_eq!(route(&c, 80, "/").application_group, "blue");
    // mod_wsgi uses the literal text when the variable is unset.
    assert_eq!(
        route(&c, 80, "/other").application_group,
        "%{ENV:WSGI_RS_TEST_UNSET_VARIABLE}"
    );
}

#[test]
fn virtual_hosts_are_chosen_by_name_and_port() {
    let p = project();
    let c = load(
        "Listen 80
Listen 8080
ServerName main.example.com
WSGIScriptAlias /main /some/path/project/myapp.wsgi
<VirtualHost *:80>
ServerName a.example.com
WSGIScriptAlias / /some/path/project/myapp1.wsgi
</VirtualHost>
<VirtualHost *:80>
ServerName b.example.com
ServerAlias *.b.example.com Plain.B.Example.org
WSGIScriptAlias / /some/path/project/myapp2.wsgi
</VirtualHost>
<VirtualHost 127.0.0.1:8080>
ServerName c.example.com
WSGIScriptAlias / /some/path/project/myapp3.wsgi
</VirtualHost>
",
        &p,
    );
    let req = |port, host, path| RouteRequest {
        local_ip: Some("127.0.0.1".parse().unwrap()),
        local_port: port,
        host,
        path,
        facts: None,
    };
    let script = |r: RouteRequest| c.route(&r).unwrap().unwrap().script;
    assert_eq!(
        script(req(80, Some("b.example.com"), "/")),
        p.path.join("myapp2.wsgi")
    );
    assert_eq!(
        script(req(80, Some("x.B.example.com:80"), "/")),
        p.path.join("myapp2.wsgi")
    );
    assert_eq!(
        script(req(80, Some("plain.b.example.org."), "/")),
        p.path.join("myapp2.wsgi"),
        "a plain alias compares without case"
    );
    assert_eq!(
        script(req(80, Some("unknown"), "/")),
        p.path.join("myapp1.wsgi"),
        "first vhost is the default"
    );
    assert_eq!(script(req(80, None, "/")), p.path.join("myapp1.wsgi"));
    assert_eq!(
        script(req(8080, Some("whatever"), "/")),
        p.path.join("myapp3.wsgi")
    );
    // The main server's aliases apply inside virtual hosts too.
    let main_alias = c
        .route(&req(80, Some("a.example.com"), "/main/x"))
        .unwrap()
        .unwrap();
    assert_eq!(
        main_alias.script,
        p.path.join("myapp1.wsgi"),
        "the vhost's own / alias comes first"
    );
    let r = c.route(&req(8080, None, "/")).unwrap().unwrap();
    assert_eq!(r.application_group, "c.example.com:8080|");
}

#[test]
fn require_all_denied_forbids() {
    let p = project();
    let c = load(
        "WSGIScriptAlias / /some/path/project/myapp.wsgi
<Directory /some/path/project>
Require all denied
</Directory>
",
        &p,
    );
    // The route carries its section's rules; the front evaluates them.
    let authz = route(&c, 80, "/")
        .settings
        .authz
        .clone()
        .expect("the section's Require");
    let request = wsgi_config::authz::AuthzRequest {
        client: "127.0.0.1".parse().unwrap(),
        server: "127.0.0.1".parse().unwrap(),
        method: "GET",
        env_set: &|_| false,
        user: None,
        groups: &|_| Vec::new(),
        host_name: &|| None,
        wsgi_groups: &|_| Vec::new(),
    };
    assert_eq!(
        authz.evaluate(&request),
        wsgi_config::authz::Outcome::Denied
    );
}

#[test]
fn no_alias_no_route() {
    let p = project();
    let c = load("WSGIScriptAlias /app /some/path/project/myapp.wsgi\n", &p);
    let r = c
        .route(&RouteRequest {
            local_ip: None,
            local_port: 80,
            host: None,
            path: "/static/x.css",
            facts: None,
        })
        .unwrap();
    assert!(r.is_none());
}
