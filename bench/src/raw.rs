//! The physical limit: blocking std sockets doing the same echo as the others, with nothing
//! on top. Stream frames are a 4-byte big-endian length and the body (the framing of
//! wirecall and of tokio-util's `LengthDelimitedCodec`); a datagram holds one body.
//!
//! The stream server is batched: one `read` takes whatever has arrived, and one `write`
//! sends back every whole frame in it, so a window of calls costs one read and one write
//! per batch, not per call. The pipelined client is batched the same way: one read takes
//! every answer that has arrived, one write sends as many new calls.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{ClientReport, Result, Transport};

/// Socket buffers of the raw stream sockets: large enough that a whole window of 4 KiB
/// calls (and its answers) fits, so the blocking client can write a batch before it reads.
const SOCKET_BUFFER: usize = 4 << 20;
/// Length prefix of a stream frame.
const PREFIX: usize = 4;
/// How long a blocked datagram client waits for an answer before it sends again.
const DATAGRAM_WAIT: Duration = Duration::from_millis(200);

/// Binds `transport` at `addr` (a path, or `127.0.0.1:0`), prints `listening on <ep>` and
/// serves every client on its own thread until the process is ended.
pub(crate) fn serve(transport: Transport, addr: &str) -> Result<()> {
    match transport {
        Transport::Unix => {
            let listener = UnixListener::bind(addr)?;
            crate::announce(&format!("unix:{addr}"));
            for stream in listener.incoming() {
                let stream = stream?;
                big_buffers(&stream);
                std::thread::spawn(move || echo_stream(stream));
            }
        }
        Transport::Tcp => {
            let listener = TcpListener::bind(addr)?;
            crate::announce(&format!("tcp:{}", listener.local_addr()?));
            for stream in listener.incoming() {
                let stream = stream?;
                stream.set_nodelay(true)?;
                big_buffers(&stream);
                std::thread::spawn(move || echo_stream(stream));
            }
        }
        Transport::UnixDgram => {
            let socket = UnixDatagram::bind(addr)?;
            crate::announce(&format!("unix-dgram:{addr}"));
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                if let Some(path) = from.as_pathname() {
                    // A client that is gone is no reason to stop serving the others.
                    let _ = socket.send_to(buf.get(..n).unwrap_or_default(), path);
                }
            }
        }
        Transport::Udp => {
            let socket = UdpSocket::bind(addr)?;
            crate::announce(&format!("udp:{}", socket.local_addr()?));
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                let _ = socket.send_to(buf.get(..n).unwrap_or_default(), from);
            }
        }
    }
    Ok(())
}

/// Socket buffers of [`SOCKET_BUFFER`] bytes each way (the tokio peer gets them too).
pub(crate) fn big_buffers(socket: &impl AsFd) {
    // Best effort: without it the 4 KiB window may be slower, never wrong.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(socket, SOCKET_BUFFER);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(socket, SOCKET_BUFFER);
}

/// Echoes every whole frame back, one read and one write per batch.
fn echo_stream(mut stream: impl Read + Write) {
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        let n = match stream.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let whole = whole_frames(buf.get(..filled).unwrap_or_default()).0;
        if whole > 0 {
            if stream
                .write_all(buf.get(..whole).unwrap_or_default())
                .is_err()
            {
                return;
            }
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
        if filled == buf.len() {
            return; // a frame larger than the buffer: not one of ours
        }
    }
}

/// The length of the whole frames at the start of `buf`, and how many there are.
fn whole_frames(buf: &[u8]) -> (usize, usize) {
    let (mut at, mut count) = (0, 0);
    while let Some(prefix) = buf.get(at..).and_then(<[u8]>::first_chunk::<PREFIX>) {
        let end = at + PREFIX + u32::from_be_bytes(*prefix) as usize;
        if end > buf.len() {
            break;
        }
        at = end;
        count += 1;
    }
    (at, count)
}

/// The request frame every call sends: prefix and a body of `size` bytes.
pub(crate) fn frame(size: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(PREFIX + size);
    frame.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend((0..size).map(|i| b'a' + (i % 26) as u8));
    frame
}

/// Runs the client for `secs` seconds with `window` calls in flight and reports.
pub(crate) fn client(
    transport: Transport,
    endpoint: &str,
    size: usize,
    window: usize,
    secs: f64,
) -> Result<ClientReport> {
    let run = Duration::from_secs_f64(secs);
    match transport {
        Transport::Unix => {
            let stream = UnixStream::connect(endpoint)?;
            big_buffers(&stream);
            stream_client(stream, size, window, run)
        }
        Transport::Tcp => {
            let stream = TcpStream::connect(endpoint)?;
            stream.set_nodelay(true)?;
            big_buffers(&stream);
            stream_client(stream, size, window, run)
        }
        Transport::UnixDgram => {
            let own = PathBuf::from(format!("{endpoint}.client-{}", std::process::id()));
            let _ = std::fs::remove_file(&own);
            let socket = UnixDatagram::bind(&own)?;
            socket.connect(endpoint)?;
            socket.set_read_timeout(Some(DATAGRAM_WAIT))?;
            let result = datagram_client(|b| socket.send(b), |b| socket.recv(b), size, window, run);
            let _ = std::fs::remove_file(&own);
            result
        }
        Transport::Udp => {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(endpoint)?;
            socket.set_read_timeout(Some(DATAGRAM_WAIT))?;
            datagram_client(|b| socket.send(b), |b| socket.recv(b), size, window, run)
        }
    }
}

/// Keeps `window` frames in flight: writes a batch, reads whatever answers came, checks
/// each byte for byte, writes as many new calls in one write.
fn stream_client(
    mut stream: impl Read + Write,
    size: usize,
    window: usize,
    run: Duration,
) -> Result<ClientReport> {
    let frame = frame(size);
    let batch: Vec<u8> = frame.repeat(window.max(1));
    let mut buf = vec![0u8; batch.len() + (1 << 16)];
    let mut filled = 0;
    let start = Instant::now();
    let deadline = start + run;
    stream.write_all(&batch)?;
    let mut in_flight = window.max(1);
    let mut calls = 0u64;
    let mut last = start;
    while in_flight > 0 {
        let n = stream.read(buf.get_mut(filled..).unwrap_or_default())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        filled += n;
        let (whole, count) = whole_frames(buf.get(..filled).unwrap_or_default());
        if count == 0 {
            continue;
        }
        // Every answer is the request frame again.
        for answer in buf.get(..whole).unwrap_or_default().chunks(frame.len()) {
            if answer != frame.as_slice() {
                return Err("wrong answer from the server".into());
            }
        }
        buf.copy_within(whole..filled, 0);
        filled -= whole;
        calls += count as u64;
        in_flight -= count;
        last = Instant::now();
        if last < deadline {
            stream.write_all(batch.get(..count * frame.len()).unwrap_or_default())?;
            in_flight += count;
        }
    }
    Ok(ClientReport::new(calls, 0, last - start))
}

/// Ping-pong over datagrams (window 1; larger windows are not measured raw): send one
/// body, wait for it back. A lost datagram (none on loopback in practice) is sent again
/// after [`DATAGRAM_WAIT`] and counted as an error.
fn datagram_client(
    send: impl Fn(&[u8]) -> io::Result<usize>,
    recv: impl Fn(&mut [u8]) -> io::Result<usize>,
    size: usize,
    window: usize,
    run: Duration,
) -> Result<ClientReport> {
    if window != 1 {
        return Err("raw datagram clients do ping-pong only (window 1)".into());
    }
    let body = frame(size).split_off(PREFIX);
    let mut buf = vec![0u8; size + 1];
    let start = Instant::now();
    let deadline = start + run;
    let (mut calls, mut lost) = (0u64, 0u64);
    let mut last = start;
    while last < deadline {
        send(&body)?;
        match recv(&mut buf) {
            Ok(n) if buf.get(..n) == Some(body.as_slice()) => calls += 1,
            Ok(_) => return Err("wrong answer from the server".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                lost += 1;
            }
            Err(e) => return Err(e.into()),
        }
        last = Instant::now();
    }
    Ok(ClientReport::new(calls, lost, last - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_whole() {
        let f = frame(3);
        let mut two = f.repeat(2);
        two.extend_from_slice(&f[..5]);
        assert_eq!(whole_frames(&two), (14, 2));
        assert_eq!(whole_frames(&[0, 0]), (0, 0));
    }
}
