//! `WSGIDaemonProcess NAME option=value ...`: every option mod_wsgi has, with its default and
//! its value checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, closest};
use crate::options::{
    parse_absolute, parse_buffer_size, parse_int, parse_option_flag, parse_path_list,
    parse_python_home, parse_seconds, parse_signed, split_option,
};

/// One option of `WSGIDaemonProcess`: its name, a value it accepts, and how its value is read
/// into which field of [`DaemonOptions`]. The parser, its "valid options" message and the
/// tests read [`DAEMON_OPTIONS`], so adding an option is adding an entry (and its field).
#[derive(Debug, Clone, Copy)]
pub struct DaemonOptionDef {
    /// The name as mod_wsgi spells it (lowercase; matched case-insensitively).
    pub name: &'static str,
    /// A value it accepts.
    pub sample: &'static str,
    /// How the value is read, and the field it sets.
    pub(crate) parse: Parse,
}

/// A field of [`DaemonOptions`].
type Field<T> = fn(&mut DaemonOptions) -> &mut T;

/// How a daemon option's value is checked, and the field it sets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Parse {
    /// A number of seconds, 0 or more.
    Seconds(Field<Duration>),
    /// A whole number from `min` to `max`.
    Count(u64, u64, Field<u64>),
    /// 0 (the default) or a number of bytes of at least `min`.
    Buffer(u64, Field<u64>),
    /// A name, not empty (the message says `give {what}`).
    Name(&'static str, Field<Option<String>>),
    /// An absolute path (the message's `fix` when it is not).
    Absolute(&'static str, Field<Option<PathBuf>>),
    /// Anything else: `(options, name, value, notes)`, noting what is accepted but odd.
    Other(
        fn(&mut DaemonOptions, &'static str, &str, &mut Vec<OptionNote>) -> Result<(), ErrorKind>,
    ),
}

impl Parse {
    /// Reads `value` of option `name` into `o`.
    fn apply(
        self,
        o: &mut DaemonOptions,
        name: &'static str,
        value: &str,
        notes: &mut Vec<OptionNote>,
    ) -> Result<(), ErrorKind> {
        match self {
            Parse::Seconds(field) => *field(o) = parse_seconds(name, value)?,
            Parse::Count(min, max, field) => *field(o) = parse_int(name, value, min, max)?,
            Parse::Buffer(min, field) => *field(o) = parse_buffer_size(name, value, min)?,
            Parse::Name(what, field) => *field(o) = Some(non_empty(name, value, what)?),
            Parse::Absolute(fix, field) => *field(o) = Some(parse_absolute(name, value, fix)?),
            Parse::Other(apply) => apply(o, name, value, notes)?,
        }
        Ok(())
    }
}

const fn option(name: &'static str, sample: &'static str, parse: Parse) -> DaemonOptionDef {
    DaemonOptionDef {
        name,
        sample,
        parse,
    }
}

use Parse::*;

/// Every option `WSGIDaemonProcess` takes, in mod_wsgi's order.
#[rustfmt::skip]
pub static DAEMON_OPTIONS: &[DaemonOptionDef] = &[
    option("processes", "3", Other(|o, name, value, _| {
        o.processes = parse_int(name, value, 1, 1024)? as u32;
        o.processes_given = true;
        Ok(())
    })),
    option("threads", "3", Other(|o, name, value, _| {
        o.threads = parse_int(name, value, 0, 65533)? as u32;
        Ok(())
    })),
    option("user", "www-data", Other(|o, name, value, _| {
        let user = non_empty(name, value, "a user name or #uid")?;
        if user == "root" || user == "#0" {
            return Err(ErrorKind::BadValue {
                option: name.into(),
                value: user,
                expected: "daemon processes never run as root: name an unprivileged user such as www-data".into(),
            });
        }
        o.user = Some(user);
        Ok(())
    })),
    option("group", "www-data", Name("a group name or #gid", |o| &mut o.group)),
    option("supplementary-groups", "adm,staff", Other(|o, name, value, _| {
        o.supplementary_groups = value
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        if o.supplementary_groups.len() > 64 {
            return Err(ErrorKind::BadValue {
                option: name.into(),
                value: value.into(),
                expected: "name at most 64 groups".into(),
            });
        }
        Ok(())
    })),
    option("umask", "0022", Other(|o, name, value, _| {
        let mask = u32::from_str_radix(value, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ErrorKind::BadValue {
                option: name.into(),
                value: value.into(),
                expected: "use an octal mask from 0000 to 0777, such as 0007".into(),
            })?;
        o.umask = Some(mask);
        Ok(())
    })),
    option("chroot", "/srv/x", Other(|o, name, value, notes| {
        o.chroot = Some(parse_absolute(name, value, "give the absolute path of the new root")?);
        notes.push(OptionNote(
            "chroot is deprecated in mod_wsgi and needs the server to start as root".into(),
        ));
        Ok(())
    })),
    option("home", "/srv/x", Absolute("give the absolute path of the working directory", |o| &mut o.home)),
    option("lang", "C.UTF-8", Name("a locale name such as en_US.UTF-8", |o| &mut o.lang)),
    option("locale", "C.UTF-8", Name("a locale name such as en_US.UTF-8", |o| &mut o.locale)),
    option("python-home", "/srv/x", Other(|o, _, value, _| {
        o.python_home = Some(parse_python_home(value)?);
        Ok(())
    })),
    option("python-path", "/a:/b", Other(|o, _, value, _| {
        o.python_path = parse_path_list(value);
        Ok(())
    })),
    option("python-eggs", "/srv/x", Absolute("give the absolute path of the egg cache folder", |o| &mut o.python_eggs)),
    option("switch-interval", "0.01", Other(|o, name, value, _| {
        let seconds: f64 = value
            .parse()
            .ok()
            .filter(|s: &f64| *s > 0.0 && s.is_finite())
            .ok_or_else(|| ErrorKind::BadValue {
                option: name.into(),
                value: value.into(),
                expected: "use a positive number of seconds, such as 0.005".into(),
            })?;
        o.switch_interval = Some(seconds);
        Ok(())
    })),
    option("display-name", "%{GROUP}", Name("a process title or %{GROUP}", |o| &mut o.display_name)),
    option("stack-size", "3", Other(|o, name, value, _| {
        o.stack_size = Some(parse_int(name, value, 1, u64::MAX)?);
        Ok(())
    })),
    option("maximum-requests", "3", Count(0, u64::MAX, |o| &mut o.maximum_requests)),
    option("startup-timeout", "3", Seconds(|o| &mut o.startup_timeout)),
    option("shutdown-timeout", "3", Seconds(|o| &mut o.shutdown_timeout)),
    option("deadlock-timeout", "3", Seconds(|o| &mut o.deadlock_timeout)),
    option("inactivity-timeout", "3", Seconds(|o| &mut o.inactivity_timeout)),
    option("request-timeout", "3", Seconds(|o| &mut o.request_timeout)),
    option("interrupt-timeout", "3", Seconds(|o| &mut o.interrupt_timeout)),
    option("graceful-timeout", "3", Seconds(|o| &mut o.graceful_timeout)),
    option("eviction-timeout", "3", Seconds(|o| &mut o.eviction_timeout)),
    option("restart-interval", "3", Seconds(|o| &mut o.restart_interval)),
    option("connect-timeout", "3", Seconds(|o| &mut o.connect_timeout)),
    option("socket-timeout", "3", Seconds(|o| &mut o.socket_timeout)),
    option("queue-timeout", "3", Seconds(|o| &mut o.queue_timeout)),
    option("listen-backlog", "3", Other(|o, name, value, _| {
        o.listen_backlog = parse_int(name, value, 1, u64::from(u32::MAX))? as u32;
        Ok(())
    })),
    option("socket-user", "www-data", Name("a user name or #uid", |o| &mut o.socket_user)),
    option("send-buffer-size", "65536", Buffer(512, |o| &mut o.send_buffer_size)),
    option("receive-buffer-size", "65536", Buffer(512, |o| &mut o.receive_buffer_size)),
    option("header-buffer-size", "8192", Buffer(8192, |o| &mut o.header_buffer_size)),
    option("response-buffer-size", "65536", Buffer(65536, |o| &mut o.response_buffer_size)),
    option("response-socket-timeout", "3", Seconds(|o| &mut o.response_socket_timeout)),
    option("response-flush-delay", "3", Count(0, 60_000, |o| &mut o.response_flush_delay_ms)),
    option("script-user", "www-data", Name("a user name or #uid", |o| &mut o.script_user)),
    option("script-group", "www-data", Name("a group name or #gid", |o| &mut o.script_group)),
    option("cpu-time-limit", "3", Count(0, u64::MAX, |o| &mut o.cpu_time_limit)),
    option("cpu-priority", "5", Other(|o, name, value, _| {
        o.cpu_priority = parse_signed(name, value, -20, 19)? as i32;
        Ok(())
    })),
    option("memory-limit", "1000000000", Count(0, u64::MAX, |o| &mut o.memory_limit)),
    option("virtual-memory-limit", "1000000000", Count(0, u64::MAX, |o| &mut o.virtual_memory_limit)),
    option("server-metrics", "On", Other(|o, name, value, _| {
        o.server_metrics = parse_option_flag(name, value)?;
        Ok(())
    })),
    option("newrelic-config-file", "/srv/newrelic.ini", Other(removed)),
    option("newrelic-environment", "production", Other(removed)),
];

/// `newrelic-config-file=` and `newrelic-environment=`: accepted with a note.
fn removed(
    _: &mut DaemonOptions,
    name: &'static str,
    _: &str,
    notes: &mut Vec<OptionNote>,
) -> Result<(), ErrorKind> {
    notes.push(OptionNote(format!(
        "{name} was removed from mod_wsgi and is ignored: load the New Relic agent from the WSGI script instead"
    )));
    Ok(())
}

/// The options of one daemon process group, with mod_wsgi's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonOptions {
    /// Number of processes (`processes=`, default 1).
    pub processes: u32,
    /// Whether `processes=` was given at all: mod_wsgi then sets `wsgi.multiprocess` to True,
    /// even for `processes=1`.
    pub processes_given: bool,
    /// Request threads per process (`threads=`, default 15; 0 is "service script" mode).
    pub threads: u32,
    /// The user the processes run as (`user=name` or `#uid`); default Apache's `User`.
    pub user: Option<String>,
    /// The group the processes run as (`group=name` or `#gid`); default Apache's `Group`.
    pub group: Option<String>,
    /// Supplementary groups (`supplementary-groups=a,b`); default the user's groups.
    pub supplementary_groups: Vec<String>,
    /// The process umask (`umask=0nnn`, octal); default inherited.
    pub umask: Option<u32>,
    /// Deprecated `chroot=`.
    pub chroot: Option<PathBuf>,
    /// Working directory, also put at `sys.path[0]` (`home=`).
    pub home: Option<PathBuf>,
    /// `lang=`: sets `LANG`.
    pub lang: Option<String>,
    /// `locale=`: sets `LC_ALL` and the C locale.
    pub locale: Option<String>,
    /// The venv root (`python-home=`); default `WSGIPythonHome`.
    pub python_home: Option<PathBuf>,
    /// Folders put at the front of `sys.path` (`python-path=a:b`), with `.pth` processing.
    pub python_path: Vec<PathBuf>,
    /// `python-eggs=`: `PYTHON_EGG_CACHE`.
    pub python_eggs: Option<PathBuf>,
    /// `switch-interval=`: Python's thread switch interval, seconds.
    pub switch_interval: Option<f64>,
    /// `display-name=`: the process title (`%{GROUP}` becomes `(wsgi:NAME)`).
    pub display_name: Option<String>,
    /// `stack-size=`: thread stack size in bytes.
    pub stack_size: Option<u64>,
    /// `maximum-requests=`: recycle a process after this many requests (0: never).
    pub maximum_requests: u64,
    /// `startup-timeout=`: restart if the script has not loaded in time (0: off).
    pub startup_timeout: Duration,
    /// `shutdown-timeout=`: hard cutoff when a process stops (default 5 s).
    pub shutdown_timeout: Duration,
    /// `deadlock-timeout=`: restart when the GIL cannot be had for this long (default 300 s).
    pub deadlock_timeout: Duration,
    /// `inactivity-timeout=`: restart when idle this long (0: off).
    pub inactivity_timeout: Duration,
    /// `request-timeout=`: a request running this long gets 504 and its process is replaced
    /// (0: off).
    pub request_timeout: Duration,
    /// `interrupt-timeout=`: time given to a request interrupted by request-timeout (0: off).
    pub interrupt_timeout: Duration,
    /// `graceful-timeout=`: how long a recycling process may drain (default 15 s).
    pub graceful_timeout: Duration,
    /// `eviction-timeout=`: drain time on an explicit graceful restart (0: graceful-timeout).
    pub eviction_timeout: Duration,
    /// `restart-interval=`: recycle after this long (0: never).
    pub restart_interval: Duration,
    /// `connect-timeout=`: how long the front retries connecting (default 15 s).
    pub connect_timeout: Duration,
    /// `socket-timeout=`: per read/write on the daemon socket (0: the server's `Timeout`).
    pub socket_timeout: Duration,
    /// `queue-timeout=`: a request waiting longer for a thread gets 503 (0: off).
    pub queue_timeout: Duration,
    /// `listen-backlog=`: the daemon socket's backlog (default 100).
    pub listen_backlog: u32,
    /// `socket-user=`: owner of the daemon socket.
    pub socket_user: Option<String>,
    /// `send-buffer-size=` (0: the system's).
    pub send_buffer_size: u64,
    /// `receive-buffer-size=` (0: the system's).
    pub receive_buffer_size: u64,
    /// `header-buffer-size=` (0: 32 KiB).
    pub header_buffer_size: u64,
    /// `response-buffer-size=` (0: 8 MiB).
    pub response_buffer_size: u64,
    /// `response-socket-timeout=` (0: socket-timeout).
    pub response_socket_timeout: Duration,
    /// `response-flush-delay=` in milliseconds (default 5).
    pub response_flush_delay_ms: u64,
    /// `script-user=`: scripts must be owned by this user.
    pub script_user: Option<String>,
    /// `script-group=`: scripts must be owned by this group.
    pub script_group: Option<String>,
    /// `cpu-time-limit=` seconds (0: none).
    pub cpu_time_limit: u64,
    /// `cpu-priority=` nice value.
    pub cpu_priority: i32,
    /// `memory-limit=` bytes (0: none).
    pub memory_limit: u64,
    /// `virtual-memory-limit=` bytes (0: none).
    pub virtual_memory_limit: u64,
    /// `server-metrics=On|Off`.
    pub server_metrics: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            processes: 1,
            processes_given: false,
            threads: 15,
            user: None,
            group: None,
            supplementary_groups: Vec::new(),
            umask: None,
            chroot: None,
            home: None,
            lang: None,
            locale: None,
            python_home: None,
            python_path: Vec::new(),
            python_eggs: None,
            switch_interval: None,
            display_name: None,
            stack_size: None,
            maximum_requests: 0,
            startup_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(5),
            deadlock_timeout: Duration::from_secs(300),
            inactivity_timeout: Duration::ZERO,
            request_timeout: Duration::ZERO,
            interrupt_timeout: Duration::ZERO,
            graceful_timeout: Duration::from_secs(15),
            eviction_timeout: Duration::ZERO,
            restart_interval: Duration::ZERO,
            connect_timeout: Duration::from_secs(15),
            socket_timeout: Duration::ZERO,
            queue_timeout: Duration::ZERO,
            listen_backlog: 100,
            socket_user: None,
            send_buffer_size: 0,
            receive_buffer_size: 0,
            header_buffer_size: 0,
            response_buffer_size: 0,
            response_socket_timeout: Duration::ZERO,
            response_flush_delay_ms: 5,
            script_user: None,
            script_group: None,
            cpu_time_limit: 0,
            cpu_priority: 0,
            memory_limit: 0,
            virtual_memory_limit: 0,
            server_metrics: false,
        }
    }
}

impl DaemonOptions {
    /// `wsgi.multithread` for applications in this group (mod_wsgi: `threads != 1`).
    pub fn multithread(&self) -> bool {
        self.threads != 1
    }

    /// `wsgi.multiprocess` (mod_wsgi: whether `processes=` was given).
    pub fn multiprocess(&self) -> bool {
        self.processes_given
    }

    /// `wsgi.run_once` (mod_wsgi: one thread and `maximum-requests=1`).
    pub fn run_once(&self) -> bool {
        self.threads == 1 && self.maximum_requests == 1
    }

    /// The process title for group `name`, if one is set.
    pub fn process_title(&self, name: &str) -> Option<String> {
        self.display_name
            .as_ref()
            .map(|d| d.replace("%{GROUP}", &format!("(wsgi:{name})")))
    }
}

/// The stack of a daemon process's worker thread when `stack-size=` is not given (Rust's
/// default thread stack).
pub const WORKER_STACK: usize = 2 * 1024 * 1024;

/// The program a daemon process runs: what it holds before its workers differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonProgram {
    /// `wsgi-daemon`, which the Apache module execs (the system allocator).
    WsgiDaemon,
    /// `wsgi daemon-process`, which `wsgi serve` execs (mimalloc, which reserves its memory
    /// 64 MiB at a time, and a larger program).
    Wsgi,
}

impl DaemonProgram {
    /// What an idle daemon process of this program holds besides its workers' stacks, in
    /// bytes of data (`RLIMIT_DATA`) and of address space (`RLIMIT_AS`): measured as the
    /// least `memory-limit=` and `virtual-memory-limit=` under which a process with
    /// `threads=1` and with `threads=15` starts and serves (Debian 12, Python 3.11, release
    /// builds), less its workers' stacks, rounded down.
    ///
    /// `wsgi` measured again once its image lost 32 MiB of zeroes (release and debug builds):
    /// 105, 120 and 135 MB of address space at `threads=` 1, 8 and 15 (the debug build 18 MB
    /// more), 21, 37, 54 and 90 MB of data at 1, 8, 15 and 30: the address space grows by the
    /// stack alone, the data by about 2.38 MB a worker, 0.28 MB beside its stack (its Python
    /// thread state and its allocator heap).
    fn idle_without_workers(self) -> (u64, u64) {
        match self {
            DaemonProgram::WsgiDaemon => (10_000_000, 24_000_000),
            DaemonProgram::Wsgi => (18_000_000, 102_000_000),
        }
    }

    /// The data each worker holds beside its stack (rounded down; not measured for
    /// `wsgi-daemon`, hence none).
    fn data_per_worker(self) -> u64 {
        match self {
            DaemonProgram::WsgiDaemon => 0,
            DaemonProgram::Wsgi => 250_000,
        }
    }
}

/// The least `memory-limit=` and `virtual-memory-limit=` a daemon process can start under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFloor {
    /// For `memory-limit=` (`RLIMIT_DATA`: private writable memory, thread stacks included).
    pub data: u64,
    /// For `virtual-memory-limit=` (`RLIMIT_AS`: all the address space).
    pub address_space: u64,
}

/// What an idle daemon process of `program` with `threads` workers of `stack-size=`
/// `stack_size` needs before its application loads anything: under less it cannot start
/// its threads or Python.
pub fn memory_floor(program: DaemonProgram, threads: u32, stack_size: Option<u64>) -> MemoryFloor {
    const PAGE: u64 = 4096;
    // Each worker's stack, in whole pages, and its guard page.
    let stack = stack_size.unwrap_or(WORKER_STACK as u64).div_ceil(PAGE) * PAGE + PAGE;
    let workers = u64::from(threads.max(1));
    let stacks = workers * stack;
    let (data, address_space) = program.idle_without_workers();
    MemoryFloor {
        data: data + stacks + workers * program.data_per_worker(),
        address_space: address_space + stacks,
    }
}

/// `memory-limit=` and `virtual-memory-limit=` of `o` under what a daemon process of
/// `program` needs to start ([`memory_floor`]): why, with the least value and what to set,
/// one entry per limit.
pub fn memory_limits_too_small(o: &DaemonOptions, program: DaemonProgram) -> Vec<ErrorKind> {
    let floor = memory_floor(program, o.threads, o.stack_size);
    let limits = [
        (
            "memory-limit",
            o.memory_limit,
            floor.data,
            "data (thread stacks included)",
        ),
        (
            "virtual-memory-limit",
            o.virtual_memory_limit,
            floor.address_space,
            "address space",
        ),
    ];
    let running = match program {
        DaemonProgram::WsgiDaemon => "a daemon process",
        DaemonProgram::Wsgi => "a daemon process of wsgi serve (the wsgi program)",
    };
    limits
        .into_iter()
        .filter(|(_, limit, least, _)| *limit > 0 && limit < least)
        .map(|(option, limit, least, what)| ErrorKind::BadValue {
            option: option.into(),
            value: limit.to_string(),
            expected: format!(
                "{running} with threads={} needs {least} bytes ({} MB) of {what} before its application loads anything, so it could not start: set {option}={} or more (with room for the application: a running process's VmData and VmSize in /proc/PID/status show what it uses), or lower threads={}{}",
                o.threads.max(1),
                least.div_ceil(1_000_000),
                least.div_ceil(100_000_000) * 100_000_000,
                o.threads,
                if o.stack_size.is_some() { " or stack-size=" } else { "" },
            ),
        })
        .collect()
}

/// A non-fatal finding while reading the options.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionNote(pub String);

/// Reads the `option=value` words of `WSGIDaemonProcess`: the options that parse, with
/// mod_wsgi's defaults for the others, and every word refused, in order (not only the first).
/// Warnings for accepted-but-odd options are pushed to `notes`.
pub fn parse_daemon_options(
    words: &[String],
    notes: &mut Vec<OptionNote>,
) -> (DaemonOptions, Vec<ErrorKind>) {
    let mut o = DaemonOptions::default();
    let mut refused = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for word in words {
        let (name, value) = match split_option(word) {
            Ok(split) => split,
            Err(e) => {
                refused.push(e);
                continue;
            }
        };
        let key = name.to_ascii_lowercase();
        let Some(def) = DAEMON_OPTIONS.iter().find(|o| o.name == key) else {
            refused.push(ErrorKind::UnknownOption {
                option: name.to_string(),
                suggestion: closest(name, DAEMON_OPTIONS.iter().map(|o| o.name)),
                valid: DAEMON_OPTIONS.iter().map(|o| o.name).collect(),
            });
            continue;
        };
        let canonical = def.name;
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == canonical) {
            if canonical == "python-home" {
                refused.push(ErrorKind::DuplicateOption {
                    option: "python-home",
                    first: first.to_string(),
                    second: value.to_string(),
                    fix: "a daemon process group has one python-home; to give each application its own virtual environment, give each its own WSGIDaemonProcess (recommended), or activate the venv in each .wsgi script (activate_this.py or site.addsitedir) with python-home pointing at an empty venv",
                });
                continue;
            }
            notes.push(OptionNote(format!(
                "{canonical} is given more than once (`{first}` and `{value}`): the last one, `{value}`, is used"
            )));
        }
        seen.push((canonical, value));
        if let Err(e) = def.parse.apply(&mut o, canonical, value, notes) {
            refused.push(e);
        }
    }
    // The smaller of the programs' needs: under it, no daemon process can start. wsgi serve
    // refuses what its own program cannot start under (`serve_support::unserved`).
    refused.extend(memory_limits_too_small(&o, DaemonProgram::WsgiDaemon));
    if let (Some(_), Some(group)) = (&o.script_user, &o.script_group) {
        refused.push(ErrorKind::BadValue {
            option: "script-group".into(),
            value: group.clone(),
            expected: "only one of script-user and script-group may be set: keep one".into(),
        });
    }
    (o, refused)
}

fn non_empty(option: &str, value: &str, what: &str) -> Result<String, ErrorKind> {
    if value.is_empty() {
        Err(ErrorKind::BadValue {
            option: option.to_string(),
            value: String::new(),
            expected: format!("give {what}"),
        })
    } else {
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options, or the one error of words that hold one bad option at most.
    fn parse(words: &[&str]) -> Result<DaemonOptions, ErrorKind> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let (options, mut refused) = parse_daemon_options(&words, &mut Vec::new());
        assert!(refused.len() <= 1, "{refused:?}");
        match refused.pop() {
            None => Ok(options),
            Some(e) => Err(e),
        }
    }

    #[test]
    fn defaults_are_mod_wsgi_defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.processes, o.threads), (1, 15));
        assert!(!o.multiprocess());
        assert!(o.multithread());
        assert_eq!(o.graceful_timeout, Duration::from_secs(15));
        assert_eq!(o.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(o.deadlock_timeout, Duration::from_secs(300));
        assert_eq!(o.connect_timeout, Duration::from_secs(15));
        assert_eq!(o.listen_backlog, 100);
    }

    #[test]
    fn explicit_processes_one_is_multiprocess() {
        let o = parse(&["processes=1"]).unwrap();
        assert_eq!(o.processes, 1);
        assert!(o.multiprocess());
    }

    /// Walks the table: every option is named once, in lowercase, and parses its sample value
    /// alone (so none is listed without being handled).
    #[test]
    fn every_listed_option_is_handled() {
        for (i, option) in DAEMON_OPTIONS.iter().enumerate() {
            assert_eq!(option.name, option.name.to_ascii_lowercase());
            assert!(
                DAEMON_OPTIONS[i + 1..]
                    .iter()
                    .all(|o| o.name != option.name),
                "{} twice",
                option.name
            );
            let word = format!("{}={}", option.name, option.sample);
            let mut notes = Vec::new();
            let (_, refused) = parse_daemon_options(std::slice::from_ref(&word), &mut notes);
            assert_eq!(refused, [], "{word}");
        }
    }

    #[test]
    fn python_path_is_split_on_colons() {
        let o = parse(&["python-path=/a:/b"]).unwrap();
        assert_eq!(
            o.python_path,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn display_name_group_placeholder() {
        let o = parse(&["display-name=%{GROUP}"]).unwrap();
        assert_eq!(o.process_title("site").as_deref(), Some("(wsgi:site)"));
    }

    #[test]
    fn unknown_option_names_it_and_lists_valid_ones() {
        let e = parse(&["proceses=2"]).unwrap_err().to_string();
        assert!(
            e.starts_with("unknown option `proceses` (did you mean `processes`?): valid options are processes, threads, user,"),
            "{e}"
        );
        assert!(
            e.ends_with("server-metrics, newrelic-config-file, newrelic-environment"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        assert_eq!(
            parse(&["threads=many"]).unwrap_err().to_string(),
            "threads=`many` is not valid: use a whole number from 0 to 65533"
        );
        assert_eq!(
            parse(&["processes=0"]).unwrap_err().to_string(),
            "processes=`0` is not valid: use a whole number from 1 to 1024"
        );
        assert_eq!(
            parse(&["umask=999"]).unwrap_err().to_string(),
            "umask=`999` is not valid: use an octal mask from 0000 to 0777, such as 0007"
        );
        assert_eq!(
            parse(&["header-buffer-size=100"]).unwrap_err().to_string(),
            "header-buffer-size=`100` is not valid: use 0 for the default, or a number of bytes of at least 8192"
        );
        assert_eq!(
            parse(&["user=root"]).unwrap_err().to_string(),
            "user=`root` is not valid: daemon processes never run as root: name an unprivileged user such as www-data"
        );
        assert_eq!(
            parse(&["threads"]).unwrap_err().to_string(),
            "`threads` is not an option: options are written `name=value`, with no spaces around `=`"
        );
    }

    #[test]
    fn python_home_once_and_at_the_root() {
        let e = parse(&["python-home=/a", "python-home=/b"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("python-home is given more than once (`/a` and `/b`): a daemon process group has one python-home;"), "{e}");
        assert_eq!(
            parse(&["python-home=/usr/local/venvs/myapp/bin/python"])
                .unwrap_err()
                .to_string(),
            "python-home=`/usr/local/venvs/myapp/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /usr/local/venvs/myapp"
        );
        assert_eq!(
            parse(&["python-home=venvs/x"]).unwrap_err().to_string(),
            "python-home=`venvs/x` must be an absolute path (starting with /): use the virtual environment's root, what `python -c 'import sys; print(sys.prefix)'` prints"
        );
    }

    #[test]
    fn every_bad_option_is_refused_and_the_others_kept() {
        let words: Vec<String> = [
            "processes=abc",
            "threads=4",
            "proceses=2",
            "display-name",
            "python-home=/srv/venv/bin/python",
            "python-path=/srv/app",
        ]
        .iter()
        .map(|w| w.to_string())
        .collect();
        let (o, refused) = parse_daemon_options(&words, &mut Vec::new());
        let refused: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert_eq!(refused.len(), 4, "{refused:#?}");
        assert_eq!(
            refused[0],
            "processes=`abc` is not valid: use a whole number from 1 to 1024"
        );
        assert!(
            refused[1].starts_with("unknown option `proceses` (did you mean `processes`?)"),
            "{}",
            refused[1]
        );
        assert_eq!(
            refused[2],
            "`display-name` is not an option: options are written `name=value`, with no spaces around `=`"
        );
        assert_eq!(
            refused[3],
            "python-home=`/srv/venv/bin/python` is the virtual environment's python executable, not its root (the folder holding bin/ and lib/, what `python -c 'import sys; print(sys.prefix)'` prints): use /srv/venv"
        );
        assert_eq!((o.processes, o.processes_given, o.threads), (1, false, 4));
        assert_eq!(o.python_home, None);
        assert_eq!(o.python_path, [PathBuf::from("/srv/app")]);
    }

    #[test]
    fn memory_limits_a_daemon_cannot_start_under_are_refused_with_the_least_value() {
        // threads=15 of 2 MiB stacks (and their guard pages): 31.5 MB, plus the program's own.
        let floor = memory_floor(DaemonProgram::WsgiDaemon, 15, None);
        assert_eq!(floor.data, 10_000_000 + 15 * 2_101_248);
        assert_eq!(floor.address_space, 24_000_000 + 15 * 2_101_248);
        assert_eq!(
            parse(&["memory-limit=20000000"]).unwrap_err().to_string(),
            "memory-limit=`20000000` is not valid: a daemon process with threads=15 needs 41518720 bytes (42 MB) of data (thread stacks included) before its application loads anything, so it could not start: set memory-limit=100000000 or more (with room for the application: a running process's VmData and VmSize in /proc/PID/status show what it uses), or lower threads=15"
        );
        let e = parse(&[
            "threads=4",
            "stack-size=8388608",
            "virtual-memory-limit=50000000",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("virtual-memory-limit=`50000000` is not valid: a daemon process with threads=4 needs 57570816 bytes (58 MB) of address space"),
            "{e}"
        );
        assert!(e.ends_with("or lower threads=4 or stack-size="), "{e}");
        // At the floor, above it, and 0 (no limit): accepted.
        for ok in [
            format!("memory-limit={}", floor.data),
            "memory-limit=300000000".into(),
            "virtual-memory-limit=300000000".into(),
            "memory-limit=0".into(),
        ] {
            assert!(parse(&[&ok]).is_ok(), "{ok}");
        }
        // Fewer threads need less.
        assert!(parse(&["threads=1", "memory-limit=20000000"]).is_ok());
        // Both limits too small: both refused.
        let words: Vec<String> = ["memory-limit=1000", "virtual-memory-limit=1000"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        let (_, refused) = parse_daemon_options(&words, &mut Vec::new());
        assert_eq!(refused.len(), 2, "{refused:?}");
    }

    #[test]
    fn the_wsgi_program_needs_more_than_wsgi_daemon() {
        let o = parse(&["virtual-memory-limit=100000000"]).unwrap();
        assert!(memory_limits_too_small(&o, DaemonProgram::WsgiDaemon).is_empty());
        let refused = memory_limits_too_small(&o, DaemonProgram::Wsgi);
        assert_eq!(refused.len(), 1);
        let e = refused[0].to_string();
        assert!(
            e.starts_with("virtual-memory-limit=`100000000` is not valid: a daemon process of wsgi serve (the wsgi program) with threads=15 needs 133518720 bytes (134 MB) of address space"),
            "{e}"
        );
        assert!(
            e.contains("set virtual-memory-limit=200000000 or more"),
            "{e}"
        );
    }

    #[test]
    fn each_worker_of_the_wsgi_program_needs_data_beside_its_stack() {
        // Measured: threads=30 starts under memory-limit=90000000, not under 89000000.
        let o = parse(&["threads=30", "memory-limit=85000000"]).unwrap();
        assert!(memory_limits_too_small(&o, DaemonProgram::WsgiDaemon).is_empty());
        let refused = memory_limits_too_small(&o, DaemonProgram::Wsgi);
        assert_eq!(refused.len(), 1, "{refused:?}");
        let floor = memory_floor(DaemonProgram::Wsgi, 30, None);
        assert_eq!(floor.data, 18_000_000 + 30 * (2_101_248 + 250_000));
        assert!(floor.data < 90_000_000);
        let o = parse(&["threads=30", "memory-limit=90000000"]).unwrap();
        assert!(memory_limits_too_small(&o, DaemonProgram::Wsgi).is_empty());
    }

    #[test]
    fn repeated_options_warn_and_the_last_wins() {
        let mut notes = Vec::new();
        let (o, refused) =
            parse_daemon_options(&["threads=2".into(), "threads=4".into()], &mut notes);
        assert_eq!(refused, []);
        assert_eq!(o.threads, 4);
        assert_eq!(notes.len(), 1);
    }
}
