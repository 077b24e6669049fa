//! The peer Rust users reach for today: tokio with tokio-util's `LengthDelimitedCodec`
//! (4-byte big-endian length, the same framing as wirecall and the raw sockets), on a
//! single-threaded runtime on each side (like wirecall's one event loop).
//!
//! Like the raw sockets, every socket gets 4 MiB buffers each way: the client is one task
//! that writes a window and then reads, so a window of 4 KiB calls must fit the buffers
//! (with the defaults it can deadlock, as any single-task client would).
//!
//! The server is the *better* form: each connection's frame stream is forwarded into its
//! frame sink (`StreamExt::forward`), which flushes only when no more input is ready, so a
//! window of calls is answered with one write. (Reading one frame and sending one frame,
//! with a flush each, is about 8x slower on a window of 64.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{ClientReport, Result, Transport};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?)
}

/// Binds `transport` at `addr`, prints `listening on <ep>`, serves until the process ends.
pub(crate) fn serve(transport: Transport, addr: &str) -> Result<()> {
    runtime()?.block_on(async {
        match transport {
            Transport::Unix => {
                let listener = UnixListener::bind(addr)?;
                crate::announce(&format!("unix:{addr}"));
                loop {
                    let (stream, _) = listener.accept().await?;
                    crate::raw::big_buffers(&stream);
                    tokio::spawn(echo(stream));
                }
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(addr).await?;
                crate::announce(&format!("tcp:{}", listener.local_addr()?));
                loop {
                    let (stream, _) = listener.accept().await?;
                    stream.set_nodelay(true)?;
                    crate::raw::big_buffers(&stream);
                    tokio::spawn(echo(stream));
                }
            }
            Transport::UnixDgram | Transport::Udp => {
                Err("the tokio peer serves streams only".into())
            }
        }
    })
}

/// One connection: the frames read are forwarded into the frames written.
async fn echo<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) {
    let (read, write) = tokio::io::split(stream);
    let frames = FramedRead::new(read, LengthDelimitedCodec::new());
    let sink = FramedWrite::new(write, LengthDelimitedCodec::new());
    // The connection ends with the client; an error ends it too.
    let _ = frames.map_ok(bytes::BytesMut::freeze).forward(sink).await;
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
    runtime()?.block_on(async {
        match transport {
            Transport::Unix => {
                let stream = UnixStream::connect(endpoint).await?;
                crate::raw::big_buffers(&stream);
                drive(stream, size, window, run).await
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(endpoint).await?;
                stream.set_nodelay(true)?;
                crate::raw::big_buffers(&stream);
                drive(stream, size, window, run).await
            }
            Transport::UnixDgram | Transport::Udp => {
                Err("the tokio peer serves streams only".into())
            }
        }
    })
}

/// Keeps `window` frames in flight: sends a batch with one flush, takes every answer that
/// is ready, checks each, sends as many new ones with one flush.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    size: usize,
    window: usize,
    run: Duration,
) -> Result<ClientReport> {
    let frame = crate::raw::frame(size);
    let body = Bytes::from(frame.get(4..).unwrap_or_default().to_vec());
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    let start = Instant::now();
    let deadline = start + run;
    for _ in 0..window.max(1) {
        framed.feed(body.clone()).await?;
    }
    SinkExt::<Bytes>::flush(&mut framed).await?;
    let mut in_flight = window.max(1);
    let mut calls = 0u64;
    let mut last = start;
    while in_flight > 0 {
        let mut answered = 0usize;
        let mut next = framed.next().await;
        loop {
            match next {
                Some(Ok(answer)) if answer == body => answered += 1,
                Some(Ok(_)) => return Err("wrong answer from the server".into()),
                Some(Err(e)) => return Err(e.into()),
                None => return Err("the server closed the connection".into()),
            }
            if answered == in_flight {
                break;
            }
            // Take what is already here without waiting, then answer it all at once.
            match framed.next().now_or_never() {
                Some(item) => next = item,
                None => break,
            }
        }
        calls += answered as u64;
        in_flight -= answered;
        last = Instant::now();
        if last < deadline {
            for _ in 0..answered {
                framed.feed(body.clone()).await?;
            }
            SinkExt::<Bytes>::flush(&mut framed).await?;
            in_flight += answered;
        }
    }
    Ok(ClientReport::new(calls, 0, last - start))
}
