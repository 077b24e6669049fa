//! Real load balancers in front of real servers: HAProxy and nginx (its stream module),
//! started by a test with a configuration it writes into its own temporary directory, in
//! the foreground, and killed (by pid) when dropped.
//!
//! They are the Debian packages `haproxy`, `nginx` and `libnginx-mod-stream`, which
//! `.ci/run` installs. Where they are missing, a test that needs one is skipped with a
//! loud message ([`Balancer::start`] gives `Ok(Err(skip))`), unless
//! `WIRECALL_REQUIRE_BALANCERS=1` is set (as `.ci/run` sets it once it has installed
//! them): then a missing balancer fails the test, so CI can never pass without them.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::Skip;

/// How long a balancer may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Which balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `haproxy -f CONFIG -db`.
    Haproxy,
    /// `nginx -c CONFIG -g 'daemon off;'`, with the stream module loaded.
    Nginx,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
        }
    }
}

/// A balancer process a test started; killed on drop.
#[derive(Debug)]
pub struct Balancer {
    child: Child,
    kind: Kind,
    output: Arc<Mutex<String>>,
}

/// Where a program is on this machine (`/usr/sbin` is not on every user's path).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `true` when `.ci/run` (or the person running the tests) says the balancers must be
/// there.
fn required() -> bool {
    std::env::var("WIRECALL_REQUIRE_BALANCERS").is_ok_and(|v| v == "1")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound and released), for a
/// balancer's listener: they take their ports from their configuration.
///
/// # Errors
///
/// No port could be bound.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(listener
        .local_addr()
        .map_err(|e| format!("free port: {e}"))?
        .port())
}

/// The nginx directive that loads the stream module (Debian builds it as a module).
#[must_use]
pub fn nginx_stream_module() -> &'static str {
    if Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").exists() {
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    } else {
        ""
    }
}

impl Balancer {
    /// Writes `config` to `dir` and starts `kind` with it, then waits until it accepts
    /// TCP connections on `ready` (one of its listeners).
    ///
    /// # Errors
    ///
    /// `Ok(Err(skip))` when `kind` is not installed (and not required by `WIRECALL_REQUIRE_BALANCERS=1`); `Err` when it
    /// is missing though required, exits, or does not listen on `ready` in time (with what
    /// it printed).
    pub fn start(
        kind: Kind,
        dir: &Path,
        config: &str,
        ready: SocketAddr,
    ) -> Result<Result<Self, Skip>, String> {
        let Some(program) = find(kind.program()) else {
            let why = format!(
                "{} is not installed (Debian package {}; .ci/run installs it)",
                kind.program(),
                match kind {
                    Kind::Haproxy => "haproxy",
                    Kind::Nginx => "nginx and libnginx-mod-stream",
                }
            );
            if required() {
                return Err(format!("{why}, and WIRECALL_REQUIRE_BALANCERS=1"));
            }
            eprintln!("!!! SKIPPED: {why} !!!");
            return Ok(Err(Skip(why)));
        };
        let file = dir.join(format!("{}.conf", kind.program()));
        std::fs::write(&file, config).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let mut command = Command::new(program);
        match kind {
            Kind::Haproxy => {
                command.arg("-f").arg(&file).arg("-db");
            }
            Kind::Nginx => {
                command
                    .arg("-c")
                    .arg(&file)
                    .arg("-p")
                    .arg(dir)
                    .arg("-e")
                    .arg("stderr")
                    .arg("-g")
                    .arg("daemon off;");
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.program()))?;
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            thread::spawn(move || collect(pipe, &output));
        }
        let mut balancer = Self {
            child,
            kind,
            output,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = balancer.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}):\n{}\nconfig:\n{config}",
                    kind.program(),
                    balancer.output()
                ));
            }
            if TcpStream::connect_timeout(&ready, Duration::from_millis(200)).is_ok() {
                return Ok(Ok(balancer));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not listening on {ready} in time:\n{}",
                    kind.program(),
                    balancer.output()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it printed so far (its log, warnings).
    #[must_use]
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Which balancer this is.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// The status HAProxy gives each server of `backend` (`UP`, `DOWN`, `MAINT`, `no check`,
/// ...), read from its stats socket at `socket` (`stats socket PATH` in its `global`
/// section) with `show stat`.
///
/// # Errors
///
/// The socket cannot be reached or its answer has no status column.
pub fn haproxy_status(socket: &Path, backend: &str) -> Result<Vec<(String, String)>, String> {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("HAProxy stats socket {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"show stat\n")
        .map_err(|e| format!("HAProxy stats socket: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("HAProxy stats socket: {e}"))?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().trim_start_matches("# ");
    let column = |name: &str| header.split(',').position(|c| c == name);
    let (Some(px), Some(sv), Some(status)) = (column("pxname"), column("svname"), column("status"))
    else {
        return Err(format!("no status column in HAProxy's stats:\n{text}"));
    };
    Ok(lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| fields.get(px) == Some(&backend))
        .filter(|fields| !matches!(fields.get(sv), Some(&"BACKEND" | &"FRONTEND")))
        .filter_map(|fields| {
            Some((
                (*fields.get(sv)?).to_owned(),
                (*fields.get(status)?).to_owned(),
            ))
        })
        .collect())
}

fn collect(mut pipe: Box<dyn Read + Send>, into: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(bytes) = buf.get(..n) {
            into.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(&String::from_utf8_lossy(bytes));
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // Ours alone, by pid. SIGTERM first: nginx's master then stops its workers (a
        // SIGKILL would leave them running); SIGKILL if it takes too long.
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if crate::wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
