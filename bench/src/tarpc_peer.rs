//! The RPC system a Rust user picks instead of wirecall: tarpc, with its serde transport
//! (length-delimited frames, bincode), over Unix streams and TCP, on a single-threaded
//! tokio runtime on each side (like wirecall's one event loop and the tokio peer).
//!
//! Written as tarpc's own examples write a service: a `#[tarpc::service]` trait, a
//! `BaseChannel` per connection whose requests are each spawned as a task, and the
//! generated client with the default configuration (its dispatch runs as a task of the
//! client's runtime). The body is `bytes::Bytes`, which serializes as one byte string.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

use crate::{ClientReport, Result, Transport};

/// The service: echo the body.
#[tarpc::service]
pub(crate) trait Echo {
    /// Answers `body` unchanged.
    async fn echo(body: Bytes) -> Bytes;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, body: Bytes) -> Bytes {
        body
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?)
}

async fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(task);
}

/// Binds `transport` at `addr`, prints `listening on <ep>`, serves until the process ends.
pub(crate) fn serve(transport: Transport, addr: &str) -> Result<()> {
    runtime()?.block_on(async {
        match transport {
            Transport::Unix => {
                let mut incoming =
                    tarpc::serde_transport::unix::listen(addr, Bincode::default).await?;
                incoming.config_mut().max_frame_length(1 << 20);
                crate::announce(&format!("unix:{addr}"));
                while let Some(conn) = incoming.next().await {
                    let Ok(conn) = conn else { continue };
                    let channel = BaseChannel::with_defaults(conn);
                    tokio::spawn(channel.execute(EchoServer.serve()).for_each(spawn));
                }
                Ok(())
            }
            Transport::Tcp => {
                let mut incoming =
                    tarpc::serde_transport::tcp::listen(addr, Bincode::default).await?;
                incoming.config_mut().max_frame_length(1 << 20);
                crate::announce(&format!("tcp:{}", incoming.local_addr()));
                while let Some(conn) = incoming.next().await {
                    let Ok(conn) = conn else { continue };
                    let _ = conn.get_ref().set_nodelay(true);
                    let channel = BaseChannel::with_defaults(conn);
                    tokio::spawn(channel.execute(EchoServer.serve()).for_each(spawn));
                }
                Ok(())
            }
            Transport::UnixDgram | Transport::Udp => {
                Err("the tarpc peer serves streams only".into())
            }
        }
    })
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
        let client = match transport {
            Transport::Unix => {
                let mut connect = tarpc::serde_transport::unix::connect(endpoint, Bincode::default);
                connect.config_mut().max_frame_length(1 << 20);
                EchoClient::new(client::Config::default(), connect.await?).spawn()
            }
            Transport::Tcp => {
                let mut connect = tarpc::serde_transport::tcp::connect(endpoint, Bincode::default);
                connect.config_mut().max_frame_length(1 << 20);
                let conn = connect.await?;
                conn.get_ref().set_nodelay(true)?;
                EchoClient::new(client::Config::default(), conn).spawn()
            }
            Transport::UnixDgram | Transport::Udp => {
                return Err("the tarpc peer serves streams only".into());
            }
        };
        drive(&client, size, window, run).await
    })
}

/// Keeps `window` calls in flight until `run` has passed, checking every answer.
async fn drive(
    client: &EchoClient,
    size: usize,
    window: usize,
    run: Duration,
) -> Result<ClientReport> {
    let frame = crate::raw::frame(size);
    let body = Bytes::from(frame.get(4..).unwrap_or_default().to_vec());
    let start = Instant::now();
    let deadline = start + run;
    let mut in_flight = FuturesUnordered::new();
    for _ in 0..window.max(1) {
        in_flight.push(client.echo(context::current(), body.clone()));
    }
    let (mut calls, mut errors) = (0u64, 0u64);
    let mut last = start;
    while let Some(answer) = in_flight.next().await {
        match answer {
            Ok(answer) if answer == body => calls += 1,
            _ => errors += 1,
        }
        last = Instant::now();
        if last < deadline {
            in_flight.push(client.echo(context::current(), body.clone()));
        }
    }
    Ok(ClientReport::new(calls, errors, last - start))
}
