//! One configuration per error class, with the whole message: `file:line`, the directive, what
//! is wrong and how to fix it.

use std::path::Path;

use wsgi_config::load_str;
use wsgi_config::reader::ReadOptions;

fn errors(text: &str) -> Vec<String> {
    match load_str(text, Path::new("site.conf"), &ReadOptions::default()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn error(text: &str) -> String {
    let all = errors(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn python_home_inside_a_virtual_host() {
    assert_eq!(
        error(
            "<VirtualHost *:80>\n  ServerName example.com\n  WSGIPythonHome /usr/local/venvs/myapp\n</VirtualHost>\n"
        ),
        "site.conf:3: WSGIPythonHome: cannot occur within <VirtualHost> section: WSGIPythonHome applies to the whole server: move it to the server-config level, outside any <VirtualHost> block; to give this site its own virtual environment, use `WSGIDaemonProcess NAME python-home=/path/to/venv` with `WSGIProcessGroup NAME`"
    );
}

#[test]
fn python_home_is_the_python_executable() {
    assert_eq!(
        error(
            "\n\n\n\n\n\n\n\n\n\n\nWSGIDaemonProcess myapp python-home=/usr/local/venvs/myapp/bin/python\n"
        ),
        "site.conf:12: WSGIDaemonProcess myapp: python-home=`/usr/local/venvs/myapp/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /usr/local/venvs/myapp"
    );
    assert_eq!(
        error("WSGIPythonHome /usr/local/venvs/myapp/lib/python3.11/site-packages\n"),
        "site.conf:1: WSGIPythonHome: python-home=`/usr/local/venvs/myapp/lib/python3.11/site-packages` is the virtual environment's site-packages folder, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /usr/local/venvs/myapp"
    );
}

#[test]
fn python_home_that_is_relative() {
    assert_eq!(
        error("WSGIDaemonProcess myapp python-home=venvs/myapp\n"),
        "site.conf:1: WSGIDaemonProcess myapp: python-home=`venvs/myapp` must be an absolute path (starting with /): use the virtual environment's root, what `python -c 'import sys; print(sys.prefix)'` prints"
    );
}

/// A `WSGIDaemonProcess` line with bad options still defines its group: the lines naming it
/// are not refused too, and every bad option is reported, not only the first.
#[test]
fn a_daemon_group_with_bad_options_is_still_defined_and_every_option_reported() {
    assert_eq!(
        errors(
            "WSGIDaemonProcess app processes=abc threads=x python-home=/srv/venv/bin/python\n\
             WSGIProcessGroup app\n\
             WSGIScriptAlias / /srv/app.wsgi process-group=app\n\
             WSGIImportScript /srv/app.wsgi process-group=app application-group=%{GLOBAL}\n"
        ),
        [
            "site.conf:1: WSGIDaemonProcess app: processes=`abc` is not valid: use a whole number from 1 to 1024",
            "site.conf:1: WSGIDaemonProcess app: threads=`x` is not valid: use a whole number from 0 to 65533",
            "site.conf:1: WSGIDaemonProcess app: python-home=`/srv/venv/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /srv/venv",
        ]
    );
    // Only a group whose line is refused before its name is read (here, a name that is not a
    // name) stays undefined.
    assert_eq!(
        errors("WSGIDaemonProcess %{GLOBAL} threads=2\nWSGIProcessGroup app\n"),
        [
            "site.conf:1: WSGIDaemonProcess %{GLOBAL}: name=`%{GLOBAL}` is not valid: name the daemon process group with a plain word such as myapp",
            "site.conf:2: WSGIProcessGroup: no daemon process group named `app` is defined (this configuration defines no daemon process groups): add `WSGIDaemonProcess app` at the server level or in this virtual host, or fix the name",
        ]
    );
}

/// Every bad option of a `WSGIScriptAlias` line, and an undefined group it names, in one pass.
#[test]
fn every_bad_option_of_a_script_alias_is_reported() {
    assert_eq!(
        errors(
            "WSGIScriptAlias / /srv/app.wsgi application-group= proces-group=x pass-authorization=yes process-group=nothere\n"
        ),
        [
            "site.conf:1: WSGIScriptAlias: application-group=`` is not valid: give an application group name, or %{GLOBAL} for the main interpreter",
            "site.conf:1: WSGIScriptAlias: unknown option `proces-group` (did you mean `process-group`?): valid options are process-group, application-group, callable-object, pass-authorization",
            "site.conf:1: WSGIScriptAlias: pass-authorization=`yes` is not valid: use On or Off",
            "site.conf:1: WSGIScriptAlias: no daemon process group named `nothere` is defined (this configuration defines no daemon process groups): add `WSGIDaemonProcess nothere` at the server level or in this virtual host, or fix the name",
        ]
    );
}

/// `WSGIImportScript`: every bad option and every missing one; a bad value is not also reported
/// as missing.
#[test]
fn every_problem_of_an_import_script_is_reported() {
    assert_eq!(
        errors("WSGIImportScript /srv/app.wsgi\n"),
        [
            "site.conf:1: WSGIImportScript: the `process-group=` option is required: write `process-group=NAME`, or `process-group=%{GLOBAL}` for embedded mode",
            "site.conf:1: WSGIImportScript: the `application-group=` option is required: write `application-group=NAME`, or `application-group=%{GLOBAL}` for the main interpreter",
        ]
    );
    assert_eq!(
        errors("WSGIImportScript /srv/app.wsgi application-group= callable-object=app\n"),
        [
            "site.conf:1: WSGIImportScript: application-group=`` is not valid: give an application group name, or %{GLOBAL} for the main interpreter",
            "site.conf:1: WSGIImportScript: unknown option `callable-object`: valid options are process-group, application-group",
            "site.conf:1: WSGIImportScript: the `process-group=` option is required: write `process-group=NAME`, or `process-group=%{GLOBAL}` for embedded mode",
        ]
    );
    // A misspelt option is not also missing.
    assert_eq!(
        errors(
            "WSGIImportScript /srv/app.wsgi proces-group=%{GLOBAL} application-group=%{GLOBAL}\n"
        ),
        [
            "site.conf:1: WSGIImportScript: unknown option `proces-group` (did you mean `process-group`?): valid options are process-group, application-group",
        ]
    );
}

#[test]
fn unknown_daemon_option() {
    let e = error("WSGIDaemonProcess myapp proceses=2\n");
    assert!(
        e.starts_with("site.conf:1: WSGIDaemonProcess myapp: unknown option `proceses` (did you mean `processes`?): valid options are processes, threads, user, group, supplementary-groups, umask, chroot, home, lang, locale, python-home, python-path,"),
        "{e}"
    );
}

#[test]
fn bad_daemon_option_value() {
    assert_eq!(
        error("WSGIDaemonProcess myapp threads=lots\n"),
        "site.conf:1: WSGIDaemonProcess myapp: threads=`lots` is not valid: use a whole number from 0 to 65533"
    );
    assert_eq!(
        error("WSGIDaemonProcess myapp request-timeout=soon\n"),
        "site.conf:1: WSGIDaemonProcess myapp: request-timeout=`soon` is not valid: use a number of seconds, 0 or more (for example 60)"
    );
}

#[test]
fn duplicate_daemon_group() {
    assert_eq!(
        error(
            "WSGIDaemonProcess myapp\n<VirtualHost *:80>\nWSGIDaemonProcess myapp\n</VirtualHost>\n"
        ),
        "site.conf:3: WSGIDaemonProcess myapp: a daemon process group named `myapp` is already defined at site.conf:1: daemon group names are unique across the whole server; rename one of them"
    );
}

#[test]
fn two_python_homes_for_one_group() {
    assert_eq!(
        error("WSGIDaemonProcess myapps python-home=/venvs/a python-home=/venvs/b\n"),
        "site.conf:1: WSGIDaemonProcess myapps: python-home is given more than once (`/venvs/a` and `/venvs/b`): a daemon group has one python-home; to give each application its own virtual environment, give each its own WSGIDaemonProcess (recommended), or activate the venv in each .wsgi script (activate_this.py or site.addsitedir) with python-home pointing at an empty venv"
            .replace("a daemon group has", "a daemon process group has")
    );
}

#[test]
fn process_group_not_defined() {
    assert_eq!(
        error("WSGIDaemonProcess myapp\nWSGIProcessGroup myap\nWSGIScriptAlias / /srv/app.wsgi\n"),
        "site.conf:2: WSGIProcessGroup: no daemon process group named `myap` is defined (defined: myapp at site.conf:1): add `WSGIDaemonProcess myap` at the server level or in this virtual host, or fix the name"
    );
    assert_eq!(
        error("WSGIScriptAlias / /srv/app.wsgi process-group=site\n"),
        "site.conf:1: WSGIScriptAlias: no daemon process group named `site` is defined (this configuration defines no daemon process groups): add `WSGIDaemonProcess site` at the server level or in this virtual host, or fix the name"
    );
}

#[test]
fn process_group_of_another_virtual_host() {
    assert_eq!(
        error(
            "<VirtualHost *:80>\nServerName a.example.com\nWSGIDaemonProcess a\n</VirtualHost>\n<VirtualHost *:80>\nServerName b.example.com\nWSGIProcessGroup a\n</VirtualHost>\n"
        ),
        "site.conf:7: WSGIProcessGroup: daemon process group `a` is defined inside the <VirtualHost> at site.conf:3 (ServerName a.example.com), so only requests to that ServerName may use it, and this one is for b.example.com: define the group at the server level, outside any <VirtualHost>, to share it"
    );
}

#[test]
fn unknown_wsgi_directive() {
    assert_eq!(
        error("WSGIProcesGroup x\n"),
        "site.conf:1: WSGIProcesGroup: unknown mod_wsgi directive (did you mean `WSGIProcessGroup`?)"
    );
}

#[test]
fn wrong_argument_count() {
    assert_eq!(
        error("WSGIApplicationGroup\n"),
        "site.conf:1: WSGIApplicationGroup: takes one argument, 0 given: the syntax is `WSGIApplicationGroup NAME|%{GLOBAL}|%{SERVER}|%{RESOURCE}|%{HOST}|%{ENV:variable}`"
    );
}

#[test]
fn bad_flag() {
    assert_eq!(
        error("WSGIScriptReloading maybe\n"),
        "site.conf:1: WSGIScriptReloading: `maybe` is not a valid value: use On or Off"
    );
    assert_eq!(
        error("WSGIMapHEADToGET sometimes\n"),
        "site.conf:1: WSGIMapHEADToGET: `sometimes` is not a valid value: use On, Off or Auto"
    );
}

#[test]
fn bad_regex() {
    assert_eq!(
        error("WSGIScriptAliasMatch ^/(app /srv/$1.wsgi\n"),
        "site.conf:1: WSGIScriptAliasMatch: the regular expression `^/(app` does not compile (error: unclosed group): fix the pattern"
    );
}

#[test]
fn script_alias_in_a_directory() {
    assert_eq!(
        error("<Directory /srv>\nWSGIScriptAlias / /srv/app.wsgi\n</Directory>\n"),
        "site.conf:2: WSGIScriptAlias: cannot occur within <Directory> section: move WSGIScriptAlias out of the section, to the server level or into the <VirtualHost>"
    );
}

#[test]
fn trusted_proxy_that_is_a_host_name() {
    assert_eq!(
        error("WSGITrustedProxies proxy.example.com\n"),
        "site.conf:1: WSGITrustedProxies: proxy=`proxy.example.com` is not valid: use an IP address or a network such as 10.0.0.0/8 (host names are not accepted)"
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let all =
        errors("WSGIDaemonProcess a threads=x\nWSGIPythonOptimize 3\nWSGIProcessGroup nothere\n");
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all[0].starts_with("site.conf:1:"));
    assert!(all[1].starts_with("site.conf:2: WSGIPythonOptimize: level=`3` is not valid"));
    assert!(
        all[2]
            .starts_with("site.conf:3: WSGIProcessGroup: no daemon process group named `nothere`")
    );
}

#[test]
fn other_modules_directives_are_never_errors() {
    let config = load_str(
        "LoadModule rewrite_module modules/mod_rewrite.so\nRewriteEngine On\nKeepAlive On\n<Location /x>\nProxyPass http://127.0.0.1:9000/\n</Location>\nWSGIRestrictEmbedded On\n",
        Path::new("site.conf"),
        &ReadOptions::default(),
    )
    .unwrap();
    assert!(config.server.restrict_embedded);
}

#[test]
fn removed_directives_warn_and_are_ignored() {
    let config = load_str(
        "WSGILazyInitialization On\n",
        Path::new("site.conf"),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        config.warnings[0].to_string(),
        "site.conf:1: WSGILazyInitialization: is ignored: Python is never started in the root-owned parent process"
    );
}

/// `check_file` keeps what can be kept of a configuration with errors, beside them: the group
/// of a `WSGIDaemonProcess` line with a bad option, with the options that parse.
#[test]
fn check_file_keeps_the_rest_of_a_configuration_with_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.conf");
    std::fs::write(
        &path,
        "User www-data\nWSGIDaemonProcess app threads=4 processes=abc\nWSGIScriptAlias / /srv/app.wsgi process-group=app\n",
    )
    .unwrap();
    let (config, errors) = wsgi_config::load::check_file(&path, &ReadOptions::default());
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [format!(
            "{}:2: WSGIDaemonProcess app: processes=`abc` is not valid: use a whole number from 1 to 1024",
            path.display()
        )]
    );
    let config = config.expect("the text was read");
    assert_eq!(config.user.as_deref(), Some("www-data"));
    let app = config.daemon("app").expect("the group is defined");
    assert_eq!((app.options.threads, app.options.processes), (4, 1));
    assert_eq!(config.main.script_aliases.len(), 1);
    assert!(wsgi_config::load_file(&path, &ReadOptions::default()).is_err());

    let missing = dir.path().join("missing.conf");
    let (config, errors) = wsgi_config::load::check_file(&missing, &ReadOptions::default());
    assert!(config.is_none());
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn interpreter_options_refuse_what_they_cannot_scope() {
    assert_eq!(
        error(
            "<WSGIInterpreterOptions process-group=%{GLOBAL}>\n  WSGIPythonHome /usr\n</WSGIInterpreterOptions>\n"
        ),
        "site.conf:2: WSGIPythonHome: cannot be set per interpreter inside <WSGIInterpreterOptions>: mod_wsgi 6 applies only WSGIPythonPath, WSGISwitchInterval, WSGIPerInterpreterGIL, WSGIFreeThreading, WSGIRestrictStdin, WSGIRestrictStdout, WSGIRestrictSignal there (anything else, to the whole server); move WSGIPythonHome out of the section"
    );
    assert_eq!(
        errors(
            "<WSGIInterpreterOptions process-group=%{GLOBAL} process-group=x process-groups=y>\n  WSGIPythonPath /srv\n</WSGIInterpreterOptions>\n"
        ),
        [
            "site.conf:1: <WSGIInterpreterOptions>: process-group is given more than once (`%{GLOBAL}` and `x`): a section selects one group of each kind: write one section per group",
            "site.conf:1: <WSGIInterpreterOptions>: unknown option `process-groups` (did you mean `process-group`?): valid options are process-group, application-group",
        ]
    );
    assert_eq!(
        errors(
            "<WSGIInterpreterOptions application-group=%{SERVER} oops>\n</WSGIInterpreterOptions>\n"
        ),
        [
            "site.conf:1: <WSGIInterpreterOptions>: application-group=`%{SERVER}` is not valid: mod_wsgi 6 matches the name as written: give a literal group name, or %{GLOBAL}",
            "site.conf:1: <WSGIInterpreterOptions>: `oops` is not an option: options are written `name=value`, with no spaces around `=`",
        ]
    );
    assert_eq!(
        error(
            "<WSGIInterpreterOptions application-group=a>\n  WSGIFreeThreading On\n</WSGIInterpreterOptions>\n"
        ),
        "site.conf:2: WSGIFreeThreading: cannot be set per interpreter inside <WSGIInterpreterOptions>: WSGIFreeThreading is process-wide, and this section selects one application group (mod_wsgi 6 skips it there with a warning): put it in a section with process-group= only"
    );
    assert_eq!(
        error(
            "<WSGIInterpreterOptions process-group=%{GLOBAL}>\n  WSGIPythonPth /srv\n</WSGIInterpreterOptions>\n"
        ),
        "site.conf:2: WSGIPythonPth: unknown mod_wsgi directive (did you mean `WSGIPythonPath`?)"
    );
    assert_eq!(
        error("<WSGIInterpreterOptions process-group=d>\n</WSGIInterpreterOptions>\n"),
        "site.conf:1: <WSGIInterpreterOptions>: no daemon process group named `d` is defined (this configuration defines no daemon process groups): add `WSGIDaemonProcess d` at the server level or in this virtual host, or fix the name"
    );
}

#[test]
fn interpreter_options_resolve_as_mod_wsgi_6() {
    let config = load_str(
        "WSGIRestrictStdout On\n\
         WSGIDaemonProcess d\n\
         <VirtualHost *:80>\n  WSGIDaemonProcess v\n</VirtualHost>\n\
         <WSGIInterpreterOptions>\n  WSGIPythonPath /all\n  WSGISwitchInterval 0.1\n</WSGIInterpreterOptions>\n\
         <WSGIInterpreterOptions process-group=d application-group=a>\n  WSGIPythonPath /d-a\n  WSGIRestrictStdout Off\n</WSGIInterpreterOptions>\n\
         <WSGIInterpreterOptions process-group=d>\n  WSGIPythonPath /d:/d2\n  WSGISwitchInterval 0.2\n  WSGIRestrictStdin On\n</WSGIInterpreterOptions>\n\
         <WSGIInterpreterOptions process-group=v>\n  WSGISwitchInterval 0.3\n</WSGIInterpreterOptions>\n",
        Path::new("site.conf"),
        &ReadOptions::default(),
    )
    .unwrap();
    let rules = config.python.interpreter_rules();
    let paths = |pg: &str, ag: &str| -> Vec<Vec<String>> {
        rules
            .resolve(pg, ag)
            .python_path_layers
            .iter()
            .map(|l| l.iter().map(|p| p.display().to_string()).collect())
            .collect()
    };
    // Least specific first: each goes in front of the ones before it.
    assert_eq!(
        paths("d", "a"),
        [vec!["/all"], vec!["/d", "/d2"], vec!["/d-a"]]
    );
    assert_eq!(paths("d", "b"), [vec!["/all"], vec!["/d", "/d2"]]);
    assert_eq!(paths("", "a"), [vec!["/all"]]);
    let a = rules.resolve("d", "a");
    assert!(!a.restrict_stdout && a.restrict_stdin, "{a:?}");
    let b = rules.resolve("d", "b");
    assert!(b.restrict_stdout && b.restrict_stdin, "{b:?}");
    let embedded = rules.resolve("", "");
    assert!(embedded.restrict_stdout && !embedded.restrict_stdin);
    assert_eq!(config.python.switch_interval_for("d"), Some(0.2));
    assert_eq!(
        config.python.switch_interval_for("v"),
        Some(0.3),
        "a virtual host's group too"
    );
    assert_eq!(config.python.switch_interval_for(""), Some(0.1));
}
