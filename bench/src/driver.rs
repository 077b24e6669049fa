//! The tokio driver of wirecall (`wirecall-tokio`) as a benchmark server and client, on a
//! single-threaded runtime on each side, like the plain tokio peer ([`crate::peer`]) and
//! wirecall's one mio event loop, so the three do the same work on one CPU each.
//!
//! The server serves `echo` (a synchronous function, as `wirecall serve` does); the client
//! keeps `window` calls in flight with [`Client::start`] and checks every answer.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use wirecall::{ClientConfig, Endpoint, ServerConfig};
use wirecall_tokio::{Client, ServerBuilder};

use crate::{ClientReport, Result, Transport};

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?)
}

fn endpoint(transport: Transport, addr: &str) -> Result<Endpoint> {
    Ok(format!("{}:{addr}", transport.scheme()).parse()?)
}

/// Serves `echo` at `addr`, prints `listening on <ep>`, serves until the process ends.
pub(crate) fn serve(transport: Transport, addr: &str) -> Result<()> {
    let mut config = ServerConfig::default();
    // Room for 4 KiB bodies over UDP, as `wirecall serve --max-datagram 8192` in compare.
    config.datagram.max_datagram = 8192;
    let server = ServerBuilder::new(config)
        .function("echo", |body| Ok(body.to_vec()))
        .listen(endpoint(transport, addr)?)
        .build()?;
    let shown = server
        .endpoints()
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    runtime()?.block_on(async move {
        crate::announce(&shown);
        server.run().await
    })?;
    Ok(())
}

/// Runs the client for `secs` seconds with `window` calls in flight and reports.
pub(crate) fn client(
    transport: Transport,
    addr: &str,
    size: usize,
    window: usize,
    secs: f64,
) -> Result<ClientReport> {
    let endpoint = endpoint(transport, addr)?;
    let run = Duration::from_secs_f64(secs);
    let body = vec![0x5au8; size];
    let mut config = ClientConfig::default();
    config.datagram.max_datagram = 8192;
    runtime()?.block_on(async move {
        let client = Client::connect(&endpoint, config).await?;
        let timeout = Some(Duration::from_secs(1));
        let start = Instant::now();
        let deadline = start + run;
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..window.max(1) {
            in_flight.push(client.start("echo", &body, timeout).await?);
        }
        let (mut calls, mut errors) = (0u64, 0u64);
        let mut last = start;
        while let Some(outcome) = in_flight.next().await {
            match outcome {
                Ok(answer) if answer == body => calls += 1,
                _ => errors += 1,
            }
            last = Instant::now();
            if last < deadline {
                in_flight.push(client.start("echo", &body, timeout).await?);
            }
        }
        Ok(ClientReport::new(calls, errors, last - start))
    })
}
