//! The environ's source for an Apache request: what [`RequestHead::build`] needs, read through
//! [`Request`]'s accessors, for an application ([`request_head`]) or an access or auth script
//! ([`hook_head`]); and who the request is, for routing and group names.

use std::path::Path;

use wsgi_config::Config;
use wsgi_config::model::MapHeadToGet;
use wsgi_config::route::{Requester, Route};
use wsgi_interp::{CallOptions, HeadSource, RequestHead, Scheme, Stamps};

use crate::ffi::{Request, RequestInfo};

/// The index of the virtual host Apache chose for the request (None: the main server).
pub(crate) fn host_index(config: &Config, info: &RequestInfo) -> Option<usize> {
    info.vhost.as_ref().and_then(|(file, line)| {
        config.virtual_hosts.iter().position(|h| {
            h.span
                .as_ref()
                .is_some_and(|s| s.line == *line && s.file.as_ref() == Path::new(file))
        })
    })
}

/// Who a request is, for naming its groups: its virtual host, the server name, the port it
/// came in on, the `Host` header's name, and its variables (`env`).
pub(crate) fn requester<'a>(
    config: &'a Config,
    info: &'a RequestInfo,
    host: Option<usize>,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> Requester<'a> {
    Requester {
        host,
        server_name: config.server_name(host).unwrap_or(&info.server_name),
        port: info.local_port,
        host_header: info
            .hostname
            .as_deref()
            .map(|h| h.split(':').next().unwrap_or(h)),
        env,
    }
}

/// A variable for `%{ENV:NAME}` in group names: the request's own (`env`, the last one set
/// wins), else the process's.
pub(crate) fn env_var(env: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .or_else(|| std::env::var(name).ok())
}

/// The options of a call in this Apache child (embedded mode, or a hook script).
pub(crate) fn call_options(info: &RequestInfo, pass_authorization: bool) -> CallOptions {
    CallOptions {
        process_group: String::new(),
        multithread: info.multithread,
        multiprocess: info.multiprocess,
        run_once: false,
        pass_authorization,
    }
}

/// The environ's source, from the request and its route.
pub(crate) fn request_head(r: &Request<'_>, info: &RequestInfo, route: &Route) -> RequestHead {
    let (mut headers, env) = (r.headers(), r.env());
    // Apache has already merged repeated headers with ", ". For Cookie that is unsplittable, so
    // it becomes "; " as wsgi-rs gives it elsewhere (a valid cookie value holds no comma).
    for (name, value) in &mut headers {
        if name.eq_ignore_ascii_case("cookie") {
            *value = String::from_utf8_lossy(value)
                .replace(", ", "; ")
                .into_bytes();
        }
    }
    // WSGIMapHEADToGET: Auto (the default) shows HEAD as GET when an output filter that needs
    // the whole body (mod_deflate, mod_cache, ...) is in the chain, as mod_wsgi does.
    let map_head = match route.settings.map_head_to_get {
        Some(MapHeadToGet::On) => true,
        Some(MapHeadToGet::Off) => false,
        Some(MapHeadToGet::Auto) | None => r.has_content_filters(),
    };
    let method = if map_head && info.method == "HEAD" {
        "GET".into()
    } else {
        wsgi_interp::method_text(&info.method)
    };
    let source = source_of(
        info,
        method,
        (&route.script_name, &route.path_info),
        headers,
        env,
        // A handler script handles the requested file.
        route.script_filename().as_os_str().as_encoded_bytes(),
        Some((&info.context_prefix, &info.context_document_root)),
    );
    let mut head = RequestHead::build(source, &route.settings);
    add_server_vars(&mut head, info);
    // The mod_wsgi.* keys apps and middleware read (mod_wsgi 6 names and forms).
    for (name, value) in route.handler_environ() {
        head.set_extra(name, value);
    }
    if !info.log_id.is_empty() {
        head.set_extra("mod_wsgi.request_id", info.log_id.clone());
    }
    head
}

/// The environ's source for an access or auth script, as the request stands when Apache asks
/// (before any handler, whatever it will be): `SCRIPT_NAME`/`PATH_INFO` split from `r->uri` at
/// `r->path_info`, `SCRIPT_FILENAME` the mapped file, and, as mod_wsgi does, neither the
/// `SetEnv` variables (an `.htaccess` file must not be able to feed the script) nor the
/// `Authorization` header.
pub(crate) fn hook_head(r: &Request<'_>, info: &RequestInfo) -> RequestHead {
    let headers = r.headers();
    let (script_name, path_info) =
        wsgi_config::handlers::split_path_info(&info.uri, &info.path_info);
    let source = source_of(
        info,
        wsgi_interp::method_text(&info.method),
        (&script_name, &path_info),
        headers,
        Vec::new(),
        &info.filename,
        None,
    );
    // No trusted proxy applies before a handler is chosen.
    let mut head = RequestHead::build(source, &wsgi_config::WsgiSettings::default());
    add_server_vars(&mut head, info);
    head
}

/// What [`RequestHead::build`] needs, from the request's fields, with the method, the
/// `SCRIPT_NAME` and `PATH_INFO`, the headers, the variables, the file and the `CONTEXT_*`
/// pair (an application's, not a hook's) the caller chose.
fn source_of<'a>(
    info: &'a RequestInfo,
    method: std::borrow::Cow<'static, str>,
    (script_name, path_info): (&'a str, &'a str),
    headers: Vec<(String, Vec<u8>)>,
    env: Vec<(String, Vec<u8>)>,
    script_filename: &'a [u8],
    context: Option<(&'a [u8], &'a [u8])>,
) -> HeadSource<'a> {
    HeadSource {
        method,
        request_uri: &info.unparsed_uri,
        query_string: &info.args,
        protocol: &info.protocol,
        scheme: scheme(&info.scheme),
        script_name,
        path_info,
        // As Apache gives them to CGI (UseCanonicalName): the application group name stays
        // derived from configuration.
        server_name: &info.server_name,
        server_port: info.server_port,
        peer: (info.remote_ip.clone(), info.remote_port),
        local: (&info.local_ip, info.local_port),
        headers,
        env,
        script_filename,
        document_root: &info.document_root,
        server_admin: &info.server_admin,
        context,
        stamps: Stamps {
            request_start_us: u64::try_from(info.request_time_us).unwrap_or(0),
            server_pid: wsgi_interp::process_id(),
            // The handler runs after Apache read the request.
            received: Some(std::time::Instant::now()),
            ..Stamps::default()
        },
    }
}

/// The variables Apache gives CGI beside the headers that are its own, each when it is not
/// empty: the server's software and the authenticated user's.
fn add_server_vars(head: &mut RequestHead, info: &RequestInfo) {
    let vars: [(&str, &[u8]); 3] = [
        ("SERVER_SOFTWARE", &info.server_software),
        ("REMOTE_USER", &info.user),
        ("AUTH_TYPE", &info.auth_type),
    ];
    for (name, value) in vars {
        if !value.is_empty() {
            head.set_extra(name, value.to_vec());
        }
    }
}

/// `https`, or else `http`.
fn scheme(name: &str) -> Scheme {
    if name == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }
}
