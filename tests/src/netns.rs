//! Two network namespaces joined by a veth pair: a test's own two "hosts".
//!
//! [`HostPair::create`] makes them with names that hold the test's pid, gives each end an
//! address from one private /30 that exists only inside those namespaces (nothing else is
//! ever addressed), and brings the links up; dropping the pair deletes both namespaces
//! (which deletes the veth pair with them), whatever happened in between.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The /30 the two ends share: the server end, the client end, the prefix length.
const SERVER_IP: &str = "10.200.0.1";
const CLIENT_IP: &str = "10.200.0.2";
const PREFIX: u8 = 30;

/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a namespace test cannot run here: print it and pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

/// Two namespaces, "server" and "client", joined by a veth pair; deleted on drop.
#[derive(Debug)]
pub struct HostPair {
    /// The server namespace's name.
    pub server: String,
    /// The client namespace's name.
    pub client: String,
    /// The server end's address (inside `server` only).
    pub server_ip: &'static str,
    /// The client end's address (inside `client` only).
    pub client_ip: &'static str,
}

impl HostPair {
    /// Creates the pair for test `tag` (a few letters; the pid is added).
    ///
    /// # Errors
    ///
    /// `Ok(Err(skip))` when the test cannot run here: not root, no `ip`, or no permission
    /// to make namespaces (a restricted container). `Err` when setting up failed
    /// otherwise (the namespaces made so far are deleted).
    pub fn create(tag: &str) -> Result<Result<Self, Skip>, String> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Err(Skip(
                "not root: creating network namespaces needs root".into(),
            )));
        }
        if !ip_exists() {
            return Ok(Err(Skip(
                "no `ip` command (iproute2) on this machine".into(),
            )));
        }
        let pid = std::process::id();
        let pair = Self {
            server: format!("wc{tag}s{pid}"),
            client: format!("wc{tag}c{pid}"),
            server_ip: SERVER_IP,
            client_ip: CLIENT_IP,
        };
        // A namespace of the same name can only be left over from an earlier process with
        // this pid that died before cleaning up: ours by name, so it goes.
        pair.delete();
        if let Err(e) = ip(&["netns", "add", &pair.server]) {
            return Ok(Err(Skip(format!("cannot create a network namespace: {e}"))));
        }
        // From here on, dropping `pair` deletes whatever was made.
        ip(&["netns", "add", &pair.client])?;
        // Veth names are at most 15 bytes; the pid keeps them apart from other tests'.
        let (server_if, client_if) = (format!("wcv{pid}s"), format!("wcv{pid}c"));
        ip(&[
            "link",
            "add",
            &server_if,
            "netns",
            &pair.server,
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            &pair.client,
        ])?;
        for (ns, dev, addr) in [
            (&pair.server, &server_if, SERVER_IP),
            (&pair.client, &client_if, CLIENT_IP),
        ] {
            let cidr = format!("{addr}/{PREFIX}");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(Ok(pair))
    }

    /// Deletes both namespaces (and with them the veth pair); errors are ignored (a
    /// namespace not made yet does not exist).
    fn delete(&self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for HostPair {
    fn drop(&mut self) {
        self.delete();
    }
}

fn ip_exists() -> bool {
    Command::new("ip")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs one `ip` command; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = crate::run(Path::new("ip"), args, b"", IP_TIMEOUT)?;
    if out.code == Some(0) {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), out.stderr.trim()))
    }
}
