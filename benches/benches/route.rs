//! Route lookup: a request path to its script, process group and application group, in
//! configurations with 1, 100 and 10,000 `WSGIScriptAlias` mounts, and among 20 name-based
//! virtual hosts (the choice by Host header, which a request makes several times).

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use wsgi_config::reader::ReadOptions;
use wsgi_config::route::RouteRequest;

fn config_with_mounts(n: usize) -> wsgi_config::Config {
    let mut text = String::from(
        "ServerName bench.example.com\nWSGIDaemonProcess site\nWSGIProcessGroup site\n",
    );
    for i in 0..n {
        text.push_str(&format!("WSGIScriptAlias /app{i} /srv/apps/app{i}.wsgi\n"));
    }
    wsgi_config::load_str(&text, Path::new("bench.conf"), &ReadOptions::default()).expect("valid")
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [1usize, 100, 10_000] {
        let config = config_with_mounts(n);
        // The last mount: the worst case for a lookup in configuration order.
        let path = format!("/app{}/some/page", n - 1);
        group.bench_with_input(BenchmarkId::new("last_of", n), &path, |b, path| {
            b.iter(|| {
                let request = RouteRequest {
                    local_ip: None,
                    local_port: 8080,
                    host: Some("bench.example.com"),
                    path: black_box(path),
                    facts: None,
                };
                black_box(config.route(&request).expect("routes").expect("matches"))
            })
        });
    }
    // Name-based virtual hosts, each with a plain and a wildcard alias; the request is for the
    // last one's plain alias, written as clients write names.
    let mut text = String::from("Listen 80\n");
    for i in 0..20 {
        text.push_str(&format!(
            "<VirtualHost *:80>\nServerName site{i}.example.com\nServerAlias www.Site{i}.example.com \
             *.site{i}.example.org\nWSGIScriptAlias / /srv/apps/site{i}.wsgi\n</VirtualHost>\n"
        ));
    }
    let config = wsgi_config::load_str(&text, Path::new("bench.conf"), &ReadOptions::default())
        .expect("valid");
    group.bench_function("virtual_host_20", |b| {
        b.iter(|| {
            let request = RouteRequest {
                local_ip: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                local_port: 80,
                host: Some(black_box("www.site19.example.com")),
                path: black_box("/page"),
                facts: None,
            };
            black_box(config.route(&request).expect("routes").expect("matches"))
        })
    });
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
