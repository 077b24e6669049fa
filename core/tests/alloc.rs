//! The core never allocates: a counting global allocator watches a steady state of calls
//! (stream and datagram, client and server) and must see zero allocations. The crate is
//! `no_std` without `alloc`, so this guards against a dependency or feature bringing the
//! heap in, and against the test harness doing it behind our back.
#![allow(
    clippy::unwrap_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    missing_docs
)]
#![allow(unsafe_code)] // the counting allocator below; each unsafe block says why it is sound

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use wirecall_core::client::ClientEvent;
use wirecall_core::datagram::{
    DatagramCallSlot, DatagramClient, DatagramConfig, DatagramEntry, DatagramEvent, DatagramServer,
    Received,
};
use wirecall_core::server::ServerEvent;
use wirecall_core::sim::{NetConfig, Pair, Step};
use wirecall_core::wire::Reply;
use wirecall_core::{Config, Duration, Instant, RequestId};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Only the test's own thread is counted: the test harness allocates on its threads
    /// (output capture, progress) whenever it likes.
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.with(std::cell::Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Drives `calls` pipelined calls through a stream client and server; no allocation in the
/// loop itself.
fn stream_calls(pair: &mut Pair<4096, 16, 65536>, calls: u64) {
    let mut made = 0u64;
    let mut done = 0u64;
    let mut pending = [RequestId(0); 16];
    pair.drive(1_000_000, |p| {
        while made < calls {
            match p.client.call(
                p.now,
                "echo",
                b"0123456789abcdef0123456789abcdef",
                Some(Duration::from_secs(5)),
            ) {
                Ok(_) => made += 1,
                Err(_) => break,
            }
        }
        let now = p.now;
        let mut n = 0;
        while let Some(ev) = p.server.poll_event(now) {
            if let ServerEvent::Request(r) = ev {
                pending[n] = r.id;
                n += 1;
            }
        }
        for id in &pending[..n] {
            p.server
                .respond(*id, Reply::Ok(b"0123456789abcdef0123456789abcdef"))
                .unwrap();
        }
        while let Some(ev) = p.client.poll_event(now) {
            if let ClientEvent::Response { .. } = ev {
                done += 1;
            }
        }
        if done == calls {
            Step::Done
        } else {
            Step::Continue
        }
    })
    .unwrap();
}

#[test]
fn steady_state_calls_allocate_nothing_in_core() {
    COUNTED.with(|c| c.set(true));
    // Stream: warm up, then measure.
    let mut pair: Box<Pair<4096, 16, 65536>> = Box::new(
        Pair::new(
            1,
            Config::default(),
            Config::default(),
            NetConfig::default(),
        )
        .unwrap(),
    );
    stream_calls(&mut pair, 100);
    let before = allocations();
    stream_calls(&mut pair, 10_000);
    let stream_allocs = allocations() - before;

    // Datagram: client and server storage allocated up front, then a loop of calls.
    let cfg = DatagramConfig::default();
    let mut client = DatagramClient::new(
        cfg,
        7,
        7,
        vec![0u8; cfg.client_storage_len(16).unwrap()],
        vec![DatagramCallSlot::EMPTY; 16],
    )
    .unwrap();
    let mut server = DatagramServer::new(
        cfg,
        vec![0u8; cfg.server_storage_len(1024).unwrap()],
        vec![DatagramEntry::<u32>::EMPTY; 1024],
    )
    .unwrap();
    let mut buf = [0u8; 1232];
    let mut run = |client: &mut DatagramClient<Vec<u8>, Vec<DatagramCallSlot>>, n: u64, t0: u64| {
        for i in 0..n {
            let now = Instant::from_millis(t0 + i * 10_000); // old entries expire
            client
                .call(now, "echo", b"0123456789abcdef0123456789abcdef", None)
                .unwrap();
            let len = {
                let d = client.poll_transmit(now).unwrap().bytes;
                buf[..d.len()].copy_from_slice(d);
                d.len()
            };
            let answer_len = match server.handle_datagram(now, &1, &buf[..len]) {
                Received::Request(r) => {
                    let h = r.handle;
                    let tx = server
                        .respond(h, Reply::Ok(b"0123456789abcdef0123456789abcdef"))
                        .unwrap();
                    let l = tx.bytes.len();
                    let mut answer = [0u8; 1232];
                    answer[..l].copy_from_slice(tx.bytes);
                    buf[..l].copy_from_slice(&answer[..l]);
                    l
                }
                other => panic!("{other:?}"),
            };
            assert!(client.handle_datagram(now, &buf[..answer_len]));
            assert!(matches!(
                client.poll_event(now),
                Some(DatagramEvent::Response { .. })
            ));
        }
    };
    run(&mut client, 100, 0);
    let before = allocations();
    run(&mut client, 10_000, 1_000_000);
    let datagram_allocs = allocations() - before;

    println!("allocations over 10,000 calls: stream {stream_allocs}, datagram {datagram_allocs}");
    assert_eq!(stream_allocs, 0, "stream calls allocated");
    assert_eq!(datagram_allocs, 0, "datagram calls allocated");
}
