//! Embedding proof: a wirecall client and server driven over a plain std `UnixStream` pair
//! with blocking reads and writes, no mio and no async runtime: only the public API of
//! `wirecall-core`. This is the whole job of a runtime: move bytes, pass the time, and act
//! on events.
//!
//! Run: `cargo run -p wirecall-core --example unix_stream_pair`

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Instant as StdInstant;

use wirecall_core::client::{CallSlot, ClientConnection, ClientEvent};
use wirecall_core::server::{RequestSlot, ServerConnection, ServerEvent};
use wirecall_core::wire::{RejectCode, Reply, Target};
use wirecall_core::{Config, Duration, Instant};

/// The core's clock: microseconds since the program started.
fn now(epoch: StdInstant) -> Instant {
    Instant::from_micros(u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Writes everything the connection wants to send. A peer that has already gone is not an
/// error here: the next read sees end-of-stream and the connection reports why it closed.
fn flush(sock: &mut UnixStream, bytes: &[u8]) -> io::Result<usize> {
    match sock.write_all(bytes) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) => {}
        other => other?,
    }
    Ok(bytes.len())
}

/// Sets the socket's read timeout to the connection's next timer.
fn wait_for(sock: &UnixStream, wake: Option<Instant>, now: Instant) -> io::Result<()> {
    let timeout = wake.map(|w| {
        let d = w.saturating_duration_since(now).as_micros().max(1);
        std::time::Duration::from_micros(d)
    });
    sock.set_read_timeout(timeout)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The server: answers `echo`, `upper` and `sum` (bytes added up), until the client leaves.
/// One turn of the driver contract: bytes in, events (answered in place), bytes out, sleep.
fn serve(mut sock: UnixStream, epoch: StdInstant) -> io::Result<u64> {
    let mut conn = ServerConnection::new(
        Config::default(),
        vec![0u8; 70_000],
        vec![0u8; 70_000],
        vec![RequestSlot::EMPTY; 64],
        now(epoch),
    )
    .map_err(io::Error::other)?;
    let mut answered = 0;
    // Where computed answers are built; `echo` answers straight from the receive buffer.
    let mut scratch = Vec::new();
    loop {
        // 1. Bytes in (a read that times out brings none: a timer is due).
        wait_for(&sock, conn.poll_timeout(), now(epoch))?;
        match sock.read(conn.input_buffer()) {
            Ok(0) => conn.handle_eof(),
            Ok(n) => conn.commit_input(now(epoch), n),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
        // 2. Events, until none; they fire due timers themselves.
        let t = now(epoch);
        while let Some(event) = conn.poll_event(t) {
            match event {
                ServerEvent::Request(req) => {
                    let id = req.id;
                    conn.respond_with(id, |req| match req.target {
                        Target::Method("echo") => Reply::Ok(req.body),
                        Target::Method("upper") => {
                            scratch.clear();
                            scratch.extend(req.body.iter().map(u8::to_ascii_uppercase));
                            Reply::Ok(&scratch)
                        }
                        Target::Method("sum") => {
                            scratch.clear();
                            let sum: u64 = req.body.iter().map(|&b| u64::from(b)).sum();
                            scratch.extend_from_slice(sum.to_string().as_bytes());
                            Reply::Ok(&scratch)
                        }
                        _ => Reply::Rejected {
                            code: RejectCode::UNKNOWN_METHOD,
                            message: "no such method",
                        },
                    })
                    .map_err(io::Error::other)?;
                    answered += 1;
                }
                ServerEvent::Closed(reason) => {
                    let n = flush(&mut sock, conn.transmit())?;
                    conn.advance_transmit(n);
                    println!("server: connection closed ({reason})");
                    return Ok(answered);
                }
                _ => {}
            }
        }
        // 3. Bytes out.
        let n = flush(&mut sock, conn.transmit())?;
        conn.advance_transmit(n);
    }
}

fn main() -> io::Result<()> {
    let epoch = StdInstant::now();
    let (client_sock, server_sock) = UnixStream::pair()?;
    let server = thread::spawn(move || serve(server_sock, epoch));

    let mut sock = client_sock;
    let mut conn = ClientConnection::new(
        Config::default(),
        vec![0u8; 70_000],
        vec![0u8; 70_000],
        vec![CallSlot::EMPTY; 64],
        now(epoch),
    )
    .map_err(io::Error::other)?;

    // Pipelined: all calls go out before any answer comes back.
    let calls: [(&str, &[u8]); 4] = [
        ("echo", b"hello, wirecall"),
        ("upper", b"shout"),
        ("sum", &[1, 2, 3, 250]),
        ("nope", b""),
    ];
    let mut pending = std::collections::HashMap::new();
    for (method, body) in calls {
        let sent_at = StdInstant::now();
        let id = conn
            .call(now(epoch), method, body, Some(Duration::from_secs(2)))
            .map_err(io::Error::other)?;
        pending.insert(id, (method, sent_at));
    }
    println!("{:<4} {:<6} {:<54} {:>9}", "id", "method", "answer", "rtt");
    loop {
        let t = now(epoch);
        while let Some(event) = conn.poll_event(t) {
            match event {
                ClientEvent::Response { id, body } => {
                    let (method, at) = pending.remove(&id).unwrap_or(("?", StdInstant::now()));
                    let answer = String::from_utf8_lossy(body);
                    println!(
                        "{:<4} {:<6} {:<54} {:>9.1?}",
                        id.to_string(),
                        method,
                        answer,
                        at.elapsed()
                    );
                    if pending.is_empty() {
                        conn.close(t); // graceful: the closed event follows
                    }
                }
                ClientEvent::Failed { id, failure } => {
                    let (method, at) = pending.remove(&id).unwrap_or(("?", StdInstant::now()));
                    let answer = format!("{failure} [{}]", failure.execution());
                    println!(
                        "{:<4} {:<6} {:<54} {:>9.1?}",
                        id.to_string(),
                        method,
                        answer,
                        at.elapsed()
                    );
                    if pending.is_empty() {
                        conn.close(t);
                    }
                }
                ClientEvent::Closed(reason) => {
                    let n = flush(&mut sock, conn.transmit())?;
                    conn.advance_transmit(n);
                    drop(sock);
                    println!("client: connection closed ({reason})");
                    let answered = server
                        .join()
                        .map_err(|_| io::Error::other("server panicked"))??;
                    println!("server answered {answered} calls");
                    return Ok(());
                }
                _ => {}
            }
        }
        let n = flush(&mut sock, conn.transmit())?;
        conn.advance_transmit(n);
        wait_for(&sock, conn.poll_timeout(), now(epoch))?;
        match sock.read(conn.input_buffer()) {
            Ok(0) => conn.handle_eof(),
            Ok(n) => conn.commit_input(now(epoch), n),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
}
