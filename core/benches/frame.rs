//! Micro-benchmarks of the core's hot paths: encoding and decoding one request frame
//! (32-byte and 4 KiB bodies), the stream decoder splitting a long stream fed in chunks
//! (bytes/s), and one whole call through a client and a server connection in memory (no
//! sockets: the core's own cost per call).
//!
//! `cargo bench -p wirecall-core --bench frame`
// A benchmark is test code: a failure in setup is a bug in the benchmark, so it panics
// with a message rather than threading errors through criterion's closures, and indexing
// into buffers it sized itself cannot go out of bounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wirecall_core::client::{CallSlot, ClientConnection, ClientEvent};
use wirecall_core::frame::{FrameDecoder, encode_frame};
use wirecall_core::server::{RequestSlot, ServerConnection, ServerEvent};
use wirecall_core::wire::{Reply, Request};
use wirecall_core::{Config, Duration, Frame, Instant, RequestId};

const SIZES: [usize; 2] = [32, 4096];

fn request(body: &[u8]) -> Frame<'_> {
    Frame::Request(Request {
        id: RequestId(123_456),
        method: "echo",
        budget_ms: Some(5000),
        body,
    })
}

fn encode_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in SIZES {
        let body = vec![0x5a_u8; size];
        let frame = request(&body);
        let mut out = vec![0u8; size + 64];
        let len = encode_frame(&frame, &mut out).unwrap();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &frame, |b, frame| {
            b.iter(|| encode_frame(black_box(frame), black_box(&mut out)).unwrap());
        });
        let wire = out[..len].to_vec();
        group.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, wire| {
            b.iter(|| Frame::decode(black_box(&wire[4..])).unwrap());
        });
    }
    group.finish();
}

/// A stream of request frames of `size`-byte bodies, about `total` bytes long.
fn stream_of(size: usize, total: usize) -> (Vec<u8>, usize) {
    let body = vec![0x5a_u8; size];
    let mut stream = Vec::with_capacity(total + size + 64);
    let mut frames = 0;
    let mut scratch = vec![0u8; size + 64];
    while stream.len() < total {
        let n = encode_frame(&request(&body), &mut scratch).unwrap();
        stream.extend_from_slice(&scratch[..n]);
        frames += 1;
    }
    (stream, frames)
}

fn stream_decoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_decoder");
    for size in SIZES {
        let (stream, frames) = stream_of(size, 1 << 20);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        for chunk in [1448, 65536] {
            let mut decoder = FrameDecoder::new(vec![0u8; 65536 + 4], 65536);
            let id = BenchmarkId::new(format!("split/{size}B"), format!("chunk {chunk}"));
            group.bench_with_input(id, &stream, |b, stream| {
                b.iter(|| {
                    let mut seen = 0usize;
                    for mut piece in stream.chunks(chunk) {
                        while !piece.is_empty() {
                            let n = decoder.feed(piece);
                            piece = &piece[n..];
                            while let Some(body) = decoder.next_frame().unwrap() {
                                black_box(body);
                                seen += 1;
                            }
                        }
                    }
                    assert_eq!(seen, frames);
                });
            });
            let id = BenchmarkId::new(format!("split+decode/{size}B"), format!("chunk {chunk}"));
            group.bench_with_input(id, &stream, |b, stream| {
                b.iter(|| {
                    let mut seen = 0usize;
                    for mut piece in stream.chunks(chunk) {
                        while !piece.is_empty() {
                            let n = decoder.feed(piece);
                            piece = &piece[n..];
                            while let Some(body) = decoder.next_frame().unwrap() {
                                black_box(Frame::decode(body).unwrap());
                                seen += 1;
                            }
                        }
                    }
                    assert_eq!(seen, frames);
                });
            });
        }
    }
    group.finish();
}

type Client = ClientConnection<Vec<u8>, Vec<CallSlot>>;
type Server = ServerConnection<Vec<u8>, Vec<RequestSlot>>;

/// Moves every byte one side has to send into the other side's receive buffer.
fn pipe(from: &[u8], into: &mut [u8]) -> usize {
    let n = from.len().min(into.len());
    into[..n].copy_from_slice(&from[..n]);
    n
}

fn client_to_server(client: &mut Client, server: &mut Server, now: Instant) {
    let n = pipe(client.transmit(), server.input_buffer());
    client.advance_transmit(n);
    server.commit_input(now, n);
}

fn server_to_client(server: &mut Server, client: &mut Client, now: Instant) {
    let n = pipe(server.transmit(), client.input_buffer());
    server.advance_transmit(n);
    client.commit_input(now, n);
}

/// One call end to end through both state machines: `call`, the request's bytes into the
/// server, its event, `respond`, the response's bytes into the client, its event.
fn core_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_call");
    for size in SIZES {
        let config = Config::default();
        let buf = || vec![0u8; 65536 + 4];
        let now = Instant::from_millis(1);
        let mut client: Client =
            ClientConnection::new(config, buf(), buf(), vec![CallSlot::EMPTY; 64], now).unwrap();
        let mut server: Server =
            ServerConnection::new(config, buf(), buf(), vec![RequestSlot::EMPTY; 64], now).unwrap();
        // Handshake.
        client_to_server(&mut client, &mut server, now);
        server_to_client(&mut server, &mut client, now);
        while server.poll_event(now).is_some() {}
        while client.poll_event(now).is_some() {}
        let body = vec![0x5a_u8; size];
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("ping_pong", size), |b| {
            b.iter(|| {
                client
                    .call(now, "echo", black_box(&body), Some(Duration::from_secs(5)))
                    .unwrap();
                client_to_server(&mut client, &mut server, now);
                let mut id = None;
                while let Some(event) = server.poll_event(now) {
                    if let ServerEvent::Request(request) = event {
                        id = Some((request.id, request.body.len()));
                    }
                }
                let (id, len) = id.unwrap();
                server.respond(id, Reply::Ok(&body[..len])).unwrap();
                server_to_client(&mut server, &mut client, now);
                let mut answered = false;
                while let Some(event) = client.poll_event(now) {
                    if let ClientEvent::Response { body, .. } = event {
                        black_box(body);
                        answered = true;
                    }
                }
                assert!(answered);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode_decode, stream_decoder, core_call);
criterion_main!(benches);
