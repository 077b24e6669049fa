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
use wirecall_core::wire::{RejectCode, Reply, RequestId};
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
    loop {
        let n = flush(&mut sock, conn.transmit())?;
        conn.advance_transmit(n);
        wait_for(&sock, conn.poll_timeout(), now(epoch))?;
        match sock.read(conn.input_buffer()) {
            Ok(0) => conn.handle_eof(now(epoch)),
            Ok(n) => conn.commit_input(now(epoch), n),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
        let t = now(epoch);
        conn.handle_timeout(t);
        // Events borrow the connection, so answers are computed first and sent after.
        let mut answers: Vec<(RequestId, Result<Vec<u8>, RejectCode>)> = Vec::new();
        while let Some(event) = conn.poll_event(t) {
            match event {
                ServerEvent::Request(req) => answers.push((
                    req.id,
                    match req.method {
                        "echo" => Ok(req.body.to_vec()),
                        "upper" => Ok(req.body.to_ascii_uppercase()),
                        "sum" => Ok(req
                            .body
                            .iter()
                            .map(|&b| u64::from(b))
                            .sum::<u64>()
                            .to_string()
                            .into_bytes()),
                        _ => Err(RejectCode::UNKNOWN_METHOD),
                    },
                )),
                ServerEvent::Closed(reason) => {
                    let n = flush(&mut sock, conn.transmit())?;
                    conn.advance_transmit(n);
                    println!("server: connection closed ({reason})");
                    return Ok(answered);
                }
                _ => {}
            }
        }
        for (id, answer) in answers {
            let reply = match &answer {
                Ok(body) => Reply::Ok(body),
                Err(code) => Reply::Rejected {
                    code: *code,
                    message: "no such method",
                },
            };
            conn.respond(id, reply).map_err(io::Error::other)?;
            answered += 1;
        }
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
            Ok(0) => conn.handle_eof(now(epoch)),
            Ok(n) => conn.commit_input(now(epoch), n),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
        conn.handle_timeout(now(epoch));
    }
}
