//! Shared helpers: one Runtime per test process, script files, sinks and bodies.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use wsgi_interp::{
    CallOptions, InterpreterHandle, Outcome, RequestBody, RequestHead, ResponseSink, Runtime,
    ScriptSpec, StartConfig,
};
use wsgi_testkit::venvs;

/// The process's one CPython (a process can start it only once).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        Runtime::start(&StartConfig::default()).expect("CPython starts")
    })
}

/// A fresh folder for this test process's files (`interp-tests/PID` in the test root).
pub fn workdir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = venvs::test_root()
            .join("interp-tests")
            .join(std::process::id().to_string());
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// Writes a WSGI script and returns its spec.
pub fn script(name: &str, source: &str) -> ScriptSpec {
    let path = workdir().join(name);
    std::fs::write(&path, source).unwrap();
    ScriptSpec::new(path)
}

/// A sink that collects the response, optionally failing on the n-th body write.
#[derive(Default)]
pub struct VecSink {
    pub status: Option<(u16, String)>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub writes: usize,
    /// Which write (1-based) came through `write_last`, if one did.
    pub last_write: Option<usize>,
    pub fail_on_write: Option<usize>,
    pub sendfile: bool,
    pub files: Vec<(u64, u64)>,
}

impl VecSink {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

impl ResponseSink for VecSink {
    fn start(
        &mut self,
        status: u16,
        reason: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> io::Result<()> {
        assert!(self.status.is_none(), "start called twice");
        self.status = Some((status, reason.to_string()));
        self.headers = headers;
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        assert!(self.status.is_some(), "write before start");
        assert!(!chunk.is_empty());
        self.writes += 1;
        if self.fail_on_write == Some(self.writes) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client went away",
            ));
        }
        self.body.extend_from_slice(chunk);
        Ok(())
    }
    fn write_last(&mut self, chunk: &[u8]) -> io::Result<()> {
        assert!(self.last_write.is_none(), "two last chunks");
        self.write(chunk)?;
        self.last_write = Some(self.writes);
        Ok(())
    }
    fn file(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<bool> {
        if !self.sendfile {
            return Ok(false);
        }
        self.files.push((offset, len));
        let mut buf = vec![0u8; len as usize];
        use std::os::unix::fs::FileExt;
        let f = reopen_fd(fd);
        f.read_exact_at(&mut buf, offset)?;
        self.body.extend_from_slice(&buf);
        Ok(true)
    }
}

fn reopen_fd(fd: RawFd) -> std::fs::File {
    // Duplicate the fd so the File we make owns its own descriptor.
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    std::fs::File::open(path).unwrap()
}

/// A request for `GET /` with some headers.
pub fn head() -> RequestHead {
    RequestHead {
        method: "GET".into(),
        script_name: b"/app".to_vec(),
        path_info: b"/x".to_vec(),
        query_string: b"a=1".to_vec(),
        request_uri: b"/app/x?a=1".to_vec(),
        protocol: "HTTP/1.1".into(),
        server_name: "localhost".into(),
        server_port: 8080,
        remote_addr: "127.0.0.1".into(),
        remote_port: 40000,
        headers: vec![("Host".into(), b"localhost:8080".to_vec())],
        ..Default::default()
    }
}

/// Calls `spec` in `interp` with an empty body.
pub fn get(interp: &InterpreterHandle, spec: &ScriptSpec) -> (Outcome, VecSink) {
    call(interp, spec, &head())
}

/// Calls `spec` in `interp` for `head`, with an empty body.
pub fn call(
    interp: &InterpreterHandle,
    spec: &ScriptSpec,
    head: &RequestHead,
) -> (Outcome, VecSink) {
    let mut sink = VecSink::default();
    let out = interp.call(
        spec,
        head,
        &CallOptions::default(),
        &mut io::empty(),
        &mut sink,
    );
    (out, sink)
}

/// A body of `len` bytes generated on the fly, recording the largest read asked for.
pub struct Generated {
    pub left: u64,
    pub max_ask: usize,
    pub total: u64,
}

impl RequestBody for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.max_ask = self.max_ask.max(buf.len());
        let n = (buf.len() as u64).min(self.left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = ((self.total + i as u64) % 251) as u8;
        }
        self.left -= n as u64;
        self.total += n as u64;
        Ok(n)
    }
}
