//! Debian's real Apache httpd loads the built module and checks configurations with it
//! (`apache2 -t`): wsgi-rs's messages, from the same builder as `wsgi check`.

use std::path::PathBuf;

use wsgi_testkit::apache::{Apache, config_test, module};
use wsgi_testkit::apps;
use wsgi_testkit::fs::scratch_world_readable;
use wsgi_testkit::process;

/// A server root with `httpd.conf` = the preamble that loads the module, then `site`. The
/// `Listen` port is never bound: these tests only run `apache2 -t`.
fn server_root(site: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("wsgi-apache-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = dir.path();
    let conf = root.join("httpd.conf");
    let text = format!(
        "ServerRoot {root}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule wsgi_rs_module {module}
PidFile {root}/httpd.pid
ErrorLog {root}/error.log
Listen 127.0.0.1:18080
ServerName localhost
{site}",
        root = root.display(),
        module = module().display(),
    );
    std::fs::write(&conf, text).unwrap();
    (dir, conf)
}

/// `apache2 -t` on a site: (exit code, stdout + stderr).
fn syntax_check(site: &str) -> (i32, String, PathBuf) {
    let (dir, conf) = server_root(site);
    let out = config_test(&conf);
    let text = process::output_text(&out);
    // Keep the folder alive only as long as the check.
    drop(dir);
    (out.status.code().unwrap_or(-1), text, conf)
}

#[test]
fn a_good_configuration_is_accepted() {
    let (code, text, _) = syntax_check(
        "WSGIDaemonProcess myapps processes=2 threads=4 python-path=/srv/a:/srv/b
<VirtualHost *:80>
  ServerName example.com
  WSGIProcessGroup myapps
  WSGIScriptAlias /myapp2 \"/srv/project/my app2.wsgi\"
  WSGIScriptAlias / /srv/project/myapp1.wsgi application-group=%{GLOBAL}
  <Directory /srv/project>
    WSGIApplicationGroup %{RESOURCE}
    WSGIPassAuthorization On
    Require all granted
  </Directory>
</VirtualHost>
",
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Syntax OK"), "{text}");
}

#[test]
fn python_home_inside_a_virtual_host_is_refused_with_our_message() {
    let (code, text, conf) = syntax_check(
        "<VirtualHost *:80>
  ServerName example.com
  WSGIPythonHome /usr/local/venvs/myapp
</VirtualHost>
",
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("Syntax error on line 11 of {}:", conf.display())),
        "{text}"
    );
    assert!(
        text.contains("WSGIPythonHome: cannot occur within <VirtualHost> section: WSGIPythonHome applies to the whole server: move it to the server-config level, outside any <VirtualHost> block; to give this site its own virtual environment, use `WSGIDaemonProcess NAME python-home=/path/to/venv` with `WSGIProcessGroup NAME`"),
        "{text}"
    );
}

#[test]
fn an_undefined_process_group_is_refused() {
    let (code, text, conf) = syntax_check("WSGIDaemonProcess site\nWSGIProcessGroup stie\n");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "{c}:10: WSGIProcessGroup: no daemon process group named `stie` is defined (defined: site at {c}:9): add `WSGIDaemonProcess stie` at the server level or in this virtual host, or fix the name",
            c = conf.display()
        )),
        "{text}"
    );
    assert!(!text.contains("Syntax OK"), "{text}");
}

#[test]
fn bad_options_and_homes_are_refused() {
    let (code, text, _) = syntax_check("WSGIDaemonProcess site proceses=2 threads=x\n");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("WSGIDaemonProcess site: unknown option `proceses` (did you mean `processes`?): valid options are processes, threads,"), "{text}");
    // Every bad option of the line, not only the first.
    assert!(
        text.contains("newrelic-environment; WSGIDaemonProcess site: threads=`x` is not valid: use a whole number from 0 to 65533"),
        "{text}"
    );

    let (code, text, _) =
        syntax_check("WSGIDaemonProcess site python-home=/usr/local/venvs/site/bin/python\n");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("WSGIDaemonProcess site: python-home=`/usr/local/venvs/site/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /usr/local/venvs/site"),
        "{text}"
    );
}

#[test]
fn groups_are_visible_only_to_the_same_server_name() {
    let site = "<VirtualHost *:80>
  ServerName a.example.com
  WSGIDaemonProcess a
</VirtualHost>
<VirtualHost *:443>
  ServerName a.example.com
  WSGIProcessGroup a
</VirtualHost>
<VirtualHost *:80>
  ServerName b.example.com
  WSGIProcessGroup a
</VirtualHost>
";
    let (code, text, _) = syntax_check(site);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            ":19: WSGIProcessGroup: daemon process group `a` is defined inside the <VirtualHost>"
        ),
        "{text}"
    );
    assert!(text.contains("and this one is for b.example.com"), "{text}");
    assert!(
        !text.contains(":15: WSGIProcessGroup"),
        "the 443 host shares the ServerName: {text}"
    );
}

#[test]
fn apache_checks_contexts_for_directory_sections() {
    let (code, text, _) =
        syntax_check("<Directory /srv>\n  WSGIScriptAlias / /srv/app.wsgi\n</Directory>\n");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("WSGIScriptAlias not allowed in <Directory> context"),
        "{text}"
    );
}

/// `<WSGIInterpreterOptions>` (mod_wsgi 6) as mod_wsgi 6.1.1 applies it, side by side in the
/// same Apache: each section's `WSGIPythonPath`, `WSGISwitchInterval` and
/// `WSGIRestrictStdin`/`WSGIRestrictStdout` reach the interpreters it selects (a daemon
/// group's, one application group in it, embedded mode's main interpreter) and no other, the
/// most specific section winning.
#[test]
fn interpreter_options_apply_to_the_interpreters_they_select() {
    let dir = scratch_world_readable("wsgi-apache-interp-options-");
    let site = apps::interpreter_options_site(dir.path());
    let (ours, theirs) = Apache::ours_and_mod_wsgi_61(dir.path(), &site);
    for (path, expected) in apps::INTERPRETER_OPTIONS_EXPECTED {
        let (status, _, body) = theirs.get(path);
        assert_eq!(status, 200, "mod_wsgi 6.1: {}", theirs.error_log());
        let theirs_body = apps::interpreter_probe_answer(dir.path(), &body);
        let (status, _, body) = ours.get(path);
        assert_eq!(status, 200, "ours: {}", ours.error_log());
        let ours_body = apps::interpreter_probe_answer(dir.path(), &body);
        assert_eq!(ours_body, theirs_body, "GET {path}");
        assert_eq!(ours_body, expected, "GET {path}");
    }
}

/// Inside `<WSGIInterpreterOptions>`, what cannot apply to just the interpreters it selects is
/// refused with the reason, where mod_wsgi 6 would apply it to the whole server; so are bad
/// selectors and a section inside `<VirtualHost>`.
#[test]
fn interpreter_options_refuse_what_they_cannot_scope() {
    let cases = [
        (
            "<WSGIInterpreterOptions process-group=%{GLOBAL}>\n    WSGIPythonHome /usr\n</WSGIInterpreterOptions>\n",
            "WSGIPythonHome: cannot be set per interpreter inside <WSGIInterpreterOptions>: mod_wsgi 6 applies only WSGIPythonPath, WSGISwitchInterval",
        ),
        (
            "<WSGIInterpreterOptions process-group=%{GLOBAL}>\n    ServerAdmin a@example.org\n</WSGIInterpreterOptions>\n",
            "ServerAdmin: cannot be set per interpreter inside <WSGIInterpreterOptions>",
        ),
        (
            "<WSGIInterpreterOptions application-group=a>\n    WSGISwitchInterval 0.01\n</WSGIInterpreterOptions>\n",
            "WSGISwitchInterval is process-wide, and this section selects one application group",
        ),
        (
            "<WSGIInterpreterOptions process-group=%{GLOBAL}>\n    WSGIRestrictSignal On\n</WSGIInterpreterOptions>\n",
            "restricting signal.signal() is not implemented by wsgi-rs",
        ),
        (
            "<WSGIInterpreterOptions process-groups=x>\n</WSGIInterpreterOptions>\n",
            "unknown option `process-groups` (did you mean `process-group`?)",
        ),
        (
            "<WSGIInterpreterOptions process-group=nowhere>\n</WSGIInterpreterOptions>\n",
            "no daemon process group named `nowhere` is defined",
        ),
        (
            "<VirtualHost *:80>\n<WSGIInterpreterOptions process-group=%{GLOBAL}>\n</WSGIInterpreterOptions>\n</VirtualHost>\n",
            "<WSGIInterpreterOptions>: cannot occur within <VirtualHost> section",
        ),
    ];
    for (site, message) in cases {
        let (code, text, _) = syntax_check(site);
        assert_eq!(code, 1, "{site}\n{text}");
        assert!(
            text.contains(message),
            "{site}\nexpected {message:?} in:\n{text}"
        );
    }
    let (code, text, _) = syntax_check(
        "<WSGIInterpreterOptions application-group=a>\n    WSGIPythonPath /srv/a\n    WSGIRestrictStdout On\n</WSGIInterpreterOptions>\n",
    );
    assert_eq!(code, 0, "{text}");
}
