//! Heap allocations per call in the adapter's steady state, on each side.
//!
//! A counting global allocator tags every allocation with the thread that made it: the
//! client (this program's main thread), the server's event loop (the thread that runs
//! `Server::run`), and anything else (the server's worker threads). An in-process server
//! (the reference `echo`) and a library [`Client`] make warm-up calls first, then the
//! counted ones; allocations per call = allocations during the counted calls / calls.
//!
//! `cargo run --release -p wirecall-bench --bin alloc`
//!
//! The core's own figure (zero) is proved by `core/tests/alloc.rs`.
#![allow(unsafe_code)] // the counting allocator below; each unsafe block says why it is sound

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wirecall::builtins::TypedEcho;
use wirecall::core::typed::Bytes;
use wirecall::typed::decode_outcome;
use wirecall::{Client, ClientConfig, Endpoint, ServerBuilder, ServerConfig, builtins};

/// Who allocates: [`OTHER`] (worker threads, the runtime), [`CLIENT`], [`SERVER`].
const OTHER: usize = 0;
const CLIENT: usize = 1;
const SERVER: usize = 2;

static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static BYTES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

thread_local! {
    // `const`-initialised and without a destructor: reading it never allocates.
    static SIDE: Cell<usize> = const { Cell::new(OTHER) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(size: usize) {
    let side = SIDE.try_with(Cell::get).unwrap_or(OTHER).min(SERVER);
    if let (Some(c), Some(b)) = (COUNTS.get(side), BYTES.get(side)) {
        c.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(size as u64, Ordering::Relaxed);
    }
}

fn snapshot() -> [(u64, u64); 3] {
    [OTHER, CLIENT, SERVER].map(|s| {
        (
            COUNTS.get(s).map_or(0, |c| c.load(Ordering::Relaxed)),
            BYTES.get(s).map_or(0, |b| b.load(Ordering::Relaxed)),
        )
    })
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `calls` echo calls of `size` bytes with `window` in flight, of the untyped `echo` or
/// (`typed`) the typed echo; every answer checked.
fn calls(client: &mut Client, calls: u64, size: usize, window: usize, typed: bool) -> Result<()> {
    let body = vec![b'x'; size];
    let timeout = Some(Duration::from_secs(10));
    let (mut made, mut done) = (0u64, 0u64);
    while done < calls {
        while made < calls && client.pending() < window {
            if typed {
                client
                    .submit_typed::<TypedEcho, ()>(&Bytes(&body), timeout)
                    .map_err(|e| format!("{e}"))?;
            } else {
                client.submit("echo", &body, timeout)?;
            }
            made += 1;
        }
        // The answer is borrowed from the client's store (`wait_any_borrowed`): the
        // client side of a call need not allocate.
        let Some((id, outcome)) = client.wait_any_borrowed() else {
            return Err("no call waiting".into());
        };
        let right = if typed {
            let answer = outcome.as_deref().map_err(|e| format!("call {id}: {e}"))?;
            decode_outcome::<TypedEcho>(Ok(answer)).is_ok_and(|echo| *echo == *body)
        } else {
            outcome.as_ref().is_ok_and(|answer| **answer == *body)
        };
        if !right {
            return Err(format!("call {id}: {outcome:?}").into());
        }
        done += 1;
    }
    Ok(())
}

fn measure(
    endpoint: &str,
    workers: usize,
    size: usize,
    window: usize,
    typed: bool,
) -> Result<String> {
    const WARM_UP: u64 = 2_000;
    const CALLS: u64 = 20_000;
    let server = builtins::register(ServerBuilder::new(ServerConfig::default()))
        .listen(endpoint.parse::<Endpoint>()?)
        .workers(workers)
        .build()?;
    let endpoint = server.endpoints().first().cloned().ok_or("no endpoint")?;
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        SIDE.with(|s| s.set(SERVER));
        server.run()
    });
    let mut client = Client::connect(&endpoint, ClientConfig::default())?;
    calls(&mut client, WARM_UP, size, window, typed)?;
    let before = snapshot();
    calls(&mut client, CALLS, size, window, typed)?;
    let after = snapshot();
    let _ = client.close();
    stop.shutdown();
    thread.join().map_err(|_| "the server thread panicked")??;
    let per = |side: usize| {
        let (c0, b0) = before.get(side).copied().unwrap_or_default();
        let (c1, b1) = after.get(side).copied().unwrap_or_default();
        (
            (c1 - c0) as f64 / CALLS as f64,
            (b1 - b0) as f64 / CALLS as f64,
        )
    };
    let (client_n, client_b) = per(CLIENT);
    let (server_n, server_b) = per(SERVER);
    let (worker_n, worker_b) = per(OTHER);
    let method = if typed { "typed/echo" } else { "echo" };
    Ok(format!(
        "{:<5} {method:<10} {workers}w {size:>5} B window {window:<3} | client {client_n:>5.2} ({client_b:>6.0} B) | server loop {server_n:>5.2} ({server_b:>6.0} B) | workers {worker_n:>5.2} ({worker_b:>6.0} B)",
        endpoint.transport()
    ))
}

fn main() -> ExitCode {
    SIDE.with(|s| s.set(CLIENT));
    let dir = match tempfile_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("alloc: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("heap allocations per call (bytes allocated per call), after warm-up:");
    let mut failed = false;
    for transport in ["unix", "tcp", "unix-dgram", "udp"] {
        for (workers, typed) in [(0, false), (0, true), (1, false), (1, true)] {
            // A UDP datagram holds at most 1,232 bytes (PROTOCOL.md): 32-byte calls only.
            let sizes: &[usize] = if transport == "udp" {
                &[32]
            } else {
                &[32, 4096]
            };
            for &size in sizes {
                for window in [1, 64] {
                    let endpoint = match transport {
                        "unix" => format!("unix:{}/a.sock", dir.display()),
                        "unix-dgram" => format!("unix-dgram:{}/d.sock", dir.display()),
                        "udp" => "udp:127.0.0.1:0".to_owned(),
                        _ => "tcp:127.0.0.1:0".to_owned(),
                    };
                    match measure(&endpoint, workers, size, window, typed) {
                        Ok(line) => println!("{line}"),
                        Err(e) => {
                            eprintln!(
                                "alloc: {transport} {workers}w {size} B window {window} \
                                 typed {typed}: {e}"
                            );
                            failed = true;
                        }
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("wirecall-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
