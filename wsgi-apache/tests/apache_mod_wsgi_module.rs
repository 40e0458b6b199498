//! `import mod_wsgi` under Apache with mod_wsgi_rs, beside Debian's mod_wsgi 4.9.4 serving the
//! same site, in embedded and in daemon mode: the same public names (ours has mod_wsgi 6's
//! `RequestTimeout` too), of the same kinds, with the same values where the value is the
//! server's (groups, processes, threads) and the same types where it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use wsgi_testkit::apache::{Apache, require_debian_mod_wsgi};
use wsgi_testkit::apps::field;
use wsgi_testkit::fs::scratch_world_readable;

/// Reports what `mod_wsgi` holds, one `key=value` line each.
const APP: &str = r#"
import mod_wsgi

def kind(value):
    if isinstance(value, type):
        return 'class'
    if callable(value):
        # Debian's are builtin functions, ours Python functions: both called the same way.
        return 'callable'
    return type(value).__name__

def application(environ, start_response):
    names = sorted(n for n in dir(mod_wsgi) if not n.startswith('_'))
    lines = ['kind.%s=%s' % (n, kind(getattr(mod_wsgi, n))) for n in names]
    metrics = mod_wsgi.process_metrics()
    mod_wsgi.request_metrics()
    sample = mod_wsgi.request_metrics()
    lines += [
        'process_group=%r' % mod_wsgi.process_group,
        'application_group=%r' % mod_wsgi.application_group,
        'maximum_processes=%r' % mod_wsgi.maximum_processes,
        'threads_per_process=%r' % mod_wsgi.threads_per_process,
        'version=%r' % [type(x).__name__ for x in mod_wsgi.version],
        'process_metrics=%r' % sorted((k, type(v).__name__) for k, v in metrics.items()),
        'thread_entry=%r' % sorted((k, type(v).__name__) for k, v in metrics['threads'][0].items()),
        'request_metrics=%r' % sorted(sample),
        'server_metrics=%r' % (mod_wsgi.server_metrics(),),
        'request_data=%s' % type(mod_wsgi.request_data()).__name__,
        'active_requests=%s' % type(mod_wsgi.active_requests).__name__,
    ]
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [('\n'.join(lines) + '\n').encode()]
"#;

fn site(dir: &Path) -> String {
    std::fs::write(dir.join("names.wsgi"), APP).unwrap();
    format!(
        "WSGISocketPrefix {d}/wsgi
WSGIDaemonProcess site threads=3
WSGIScriptAlias /embedded {d}/names.wsgi application-group=%{{GLOBAL}}
WSGIScriptAlias /daemon {d}/names.wsgi process-group=site application-group=%{{GLOBAL}}
<Directory {d}>
    Require all granted
</Directory>
",
        d = dir.display()
    )
}

/// `kind.NAME=KIND` lines as a map.
fn kinds(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("kind."))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Python list repr of strings, as a set.
fn list(text: &str) -> BTreeSet<String> {
    text.trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('\'').to_string())
        .collect()
}

#[test]
fn import_mod_wsgi_matches_debians_mod_wsgi() {
    require_debian_mod_wsgi();
    let dir = scratch_world_readable("wsgi-apache-mod-wsgi-module-");
    let (ours, theirs) = Apache::ours_and_debians(dir.path(), &site(dir.path()));
    for (path, process_group, threads) in [("/embedded", "''", "16"), ("/daemon", "'site'", "3")] {
        let get = |apache: &Apache| {
            let (status, _, body) = apache.get(path);
            assert_eq!(status, 200, "{path}: {}", apache.error_log());
            body
        };
        let (ob, tb) = (get(&ours), get(&theirs));
        let (ok, tk) = (kinds(&ob), kinds(&tb));
        let only_ours: Vec<&String> = ok.keys().filter(|n| !tk.contains_key(*n)).collect();
        let only_theirs: Vec<&String> = tk.keys().filter(|n| !ok.contains_key(*n)).collect();
        assert!(only_theirs.is_empty(), "{path}: missing {only_theirs:?}");
        assert_eq!(
            only_ours,
            ["RequestTimeout"],
            "{path}: only mod_wsgi 6's RequestTimeout may be ours alone"
        );
        for (name, kind) in &tk {
            assert_eq!(&ok[name], kind, "{path}: kind of mod_wsgi.{name}");
        }
        // The server's own values.
        for key in [
            "process_group",
            "application_group",
            "maximum_processes",
            "threads_per_process",
        ] {
            assert_eq!(field(&ob, key), field(&tb, key), "{path}: {key}");
        }
        assert_eq!(field(&ob, "process_group"), process_group);
        assert_eq!(field(&ob, "threads_per_process"), threads);
        // The same types where the values are the process's.
        for key in [
            "version",
            "process_metrics",
            "thread_entry",
            "request_data",
            "active_requests",
        ] {
            assert_eq!(field(&ob, key), field(&tb, key), "{path}: {key}");
        }
        // No scoreboard (WSGIServerMetrics is Off). mod_wsgi 4.9.4 gives it in embedded mode
        // all the same (its unset setting counts as On); mod_wsgi 6 answers None, as we do.
        assert_eq!(field(&ob, "server_metrics"), "None", "{path}");
        if path == "/embedded" {
            assert!(field(&tb, "server_metrics").starts_with("{'server_limit': "));
        } else {
            assert_eq!(field(&tb, "server_metrics"), "None");
        }
        // request_metrics(): a subset of mod_wsgi's keys (not its time histograms).
        let (om, tm) = (
            list(&field(&ob, "request_metrics")),
            list(&field(&tb, "request_metrics")),
        );
        assert!(
            om.is_subset(&tm) && om.contains("request_count"),
            "{path}: ours {om:?}, mod_wsgi's {tm:?}"
        );
    }
}
