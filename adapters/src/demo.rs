//! `wirecall demo`: a reference server on temporary endpoints of all four transports inside
//! this process (a Unix stream and a Unix datagram socket in a temporary directory, TCP and
//! UDP on 127.0.0.1 with ports the OS chooses), a few calls over each, a table of the
//! answers and round-trip times, and a clean shutdown. Needs nothing installed and leaves
//! nothing behind.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::builtins;
use crate::client::Client;
use crate::config::{ClientConfig, ServerConfig};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::server::ServerBuilder;

/// The calls made over each transport.
const CALLS: [(&str, &str); 4] = [
    ("echo", "hello, wirecall"),
    ("upper", "shout"),
    ("time", ""),
    ("list", ""),
];

/// Runs the demo, writing the table to `out`.
///
/// # Errors
///
/// A server that cannot start, a connection that fails, or `out` failing. A call that
/// fails is shown in the table, not returned.
pub fn run(out: &mut dyn Write) -> Result<(), Error> {
    let dir = tempfile::Builder::new()
        .prefix("wirecall-demo-")
        .tempdir()
        .map_err(Error::io("creating a temporary directory"))?;
    let socket = dir.path().join("demo.sock");
    let datagram_socket = dir.path().join("demo-dgram.sock");
    let server = builtins::register(ServerBuilder::new(ServerConfig::default()))
        .listen(Endpoint::Unix(socket.clone()))
        .listen(Endpoint::Tcp("127.0.0.1".into(), 0))
        .listen(Endpoint::UnixDatagram(datagram_socket.clone()))
        .listen(Endpoint::Udp("127.0.0.1".into(), 0))
        .build()?;
    let endpoints = server.endpoints().to_vec();
    let stop = server.shutdown_handle();
    let serving = thread::Builder::new()
        .name("wirecall-demo-server".into())
        .spawn(move || server.run())
        .map_err(Error::io("starting the server thread"))?;

    let shown = show(out, &endpoints);
    stop.shutdown();
    let served = serving.join().unwrap_or_else(|_| {
        Err(Error::Io {
            context: "running the server",
            source: std::io::Error::other("the server thread panicked"),
        })
    });
    shown?;
    served?;
    let write = Error::io("writing the demo's output");
    let removed = !socket.exists() && !datagram_socket.exists();
    writeln!(
        out,
        "\nserver shut down gracefully; socket files removed: {}",
        if removed { "yes" } else { "no" }
    )
    .map_err(write)
}

fn show(out: &mut dyn Write, endpoints: &[Endpoint]) -> Result<(), Error> {
    let write = || Error::io("writing the demo's output");
    writeln!(out, "server listening on").map_err(write())?;
    for endpoint in endpoints {
        writeln!(out, "  {endpoint}").map_err(write())?;
    }
    writeln!(out).map_err(write())?;
    writeln!(
        out,
        "{:<11} {:<6} {:<40} {:>10}",
        "transport", "method", "answer", "rtt"
    )
    .map_err(write())?;
    for endpoint in endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default())?;
        for (method, body) in CALLS {
            let start = Instant::now();
            let outcome = client.call(method, body.as_bytes(), Some(Duration::from_secs(5)));
            let rtt = start.elapsed();
            let answer = match outcome {
                Ok(bytes) => String::from_utf8_lossy(&bytes)
                    .trim_end()
                    .replace('\n', ","),
                Err(e) => format!("failed: {e} [{}]", e.execution()),
            };
            writeln!(
                out,
                "{:<11} {:<6} {:<40} {:>10}",
                endpoint.transport(),
                method,
                answer,
                format!("{rtt:.1?}")
            )
            .map_err(write())?;
        }
        let _ = client.close();
    }
    Ok(())
}
