//! Embedded mode under the MPMs other than event: mpm_prefork (single-threaded children) and
//! mpm_worker (threaded children, no event loop), as Debian ships them.

use std::collections::BTreeSet;

use wsgi_testkit::apache::{Apache, Mpm};
use wsgi_testkit::apps::field;
use wsgi_testkit::fs::scratch_world_readable;

const APP: &str = r#"
import os, time

def application(environ, start_response):
    if environ['PATH_INFO'] == '/slow':
        time.sleep(0.5)
    if environ['REQUEST_METHOD'] == 'POST':
        data = environ['wsgi.input'].read()
        body = b'posted=%d %d\n' % (len(data), sum(data) % 65521)
    else:
        body = ('hello=world\npid=%d\nmultithread=%s\nmultiprocess=%s\npath_info=%s\n' % (
            os.getpid(), environ['wsgi.multithread'], environ['wsgi.multiprocess'],
            environ['PATH_INFO'])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
"#;

/// Serves the app under `mpm` and checks it answers (GET, a POST body, concurrent slow
/// requests); returns the GET's body and the pids that answered the concurrent requests.
fn serve(mpm: Mpm) -> (Vec<u8>, BTreeSet<u32>) {
    let dir = scratch_world_readable("wsgi-apache-mpm-");
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("app.wsgi"), APP).unwrap();
    let site = format!(
        "WSGIScriptAlias /app {p}/app.wsgi
<Directory {p}>
    Require all granted
</Directory>
",
        p = project.display()
    );
    let mut apache = Apache::start_mpm(dir.path(), mpm, &site);
    let loaded = std::fs::read_to_string(dir.path().join("httpd.conf")).unwrap();
    let name = format!("{mpm:?}").to_lowercase();
    assert!(loaded.contains(&format!("mod_mpm_{name}.so")), "{loaded}");

    let (status, _, body) = apache.get("/app/x");
    assert_eq!(status, 200, "{}", apache.error_log());
    assert_eq!(field(&body, "hello"), "world");
    assert_eq!(field(&body, "path_info"), "/x");

    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (status, _, posted) = apache.request("POST", "/app/post", &[], &data);
    assert_eq!(status, 200, "{}", apache.error_log());
    let sum = data.iter().map(|b| u64::from(*b)).sum::<u64>() % 65521;
    assert_eq!(field(&posted, "posted"), format!("{} {sum}", data.len()));

    let pids: BTreeSet<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (status, _, body) = apache.get("/app/slow");
                    assert_eq!(status, 200);
                    field(&body, "pid").parse::<u32>().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = apache.stop();
    assert!(took.as_secs() < 5, "stopping took {took:?}");
    (body, pids)
}

#[test]
fn prefork_serves_with_single_threaded_children() {
    let (body, pids) = serve(Mpm::Prefork);
    assert_eq!(field(&body, "multithread"), "False");
    assert_eq!(field(&body, "multiprocess"), "True");
    // Four slow requests at once, one per single-threaded child: more than one process.
    assert!(pids.len() > 1, "{pids:?}");
}

#[test]
fn worker_serves_with_threaded_children() {
    let (body, pids) = serve(Mpm::Worker);
    assert_eq!(field(&body, "multithread"), "True");
    // One child (ServerLimit 1): its threads answer all four at once.
    assert_eq!(pids.len(), 1, "{pids:?}");
}
