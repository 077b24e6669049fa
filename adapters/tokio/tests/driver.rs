//! What only the tokio driver has, over real sockets: `async` functions (answered, panicking,
//! stopped when their call is cancelled), a call cancelled by dropping its future, shutdown
//! driven by a future, the connection limit, and clients shared by many tasks. The behaviour
//! every driver shares is the conformance suite's (`tests/tests/conformance.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wirecall::function::ERROR_FUNCTION_PANICKED;
use wirecall::{CallErrorKind, ClientConfig, Endpoint, Execution, ServerConfig, StatsHandle};
use wirecall_tokio::{Client, Server, ServerBuilder, ShutdownHandle};

/// Every wait of these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

/// Counts the runs of `slow` that got to their end.
fn builder(finished: &Arc<AtomicU32>, config: ServerConfig) -> ServerBuilder {
    let finished = Arc::clone(finished);
    wirecall::builtins::register(ServerBuilder::new(config))
        .async_function("double", |body| async move {
            tokio::task::yield_now().await;
            let mut out = body.clone();
            out.extend_from_slice(&body);
            Ok(out)
        })
        .async_function("slow", move |_| {
            let finished = Arc::clone(&finished);
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(b"done".to_vec())
            }
        })
        .async_function("panics", |_| async move {
            tokio::task::yield_now().await;
            panic!("an async function panics")
        })
}

/// A server on a fresh TCP port, running in a task of the test's runtime.
fn start(
    server: Server,
) -> (
    Endpoint,
    ShutdownHandle,
    StatsHandle,
    tokio::task::JoinHandle<()>,
) {
    let endpoint = server.endpoints()[0].clone();
    let stop = server.shutdown_handle();
    let stats = server.stats();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    (endpoint, stop, stats, task)
}

fn counter(stats: &StatsHandle, name: &str) -> u64 {
    let text = stats.snapshot().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_functions_answer_and_a_panic_is_an_executed_error() {
    let finished = Arc::new(AtomicU32::new(0));
    let server = builder(&finished, ServerConfig::default())
        .listen("tcp:127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let (endpoint, stop, _, task) = start(server);
    let client = Client::connect(&endpoint, ClientConfig::default())
        .await
        .unwrap();
    let answer = client.call("double", b"ab", Some(BOUND)).await.unwrap();
    assert_eq!(answer, b"abab");
    let e = client.call("panics", b"", Some(BOUND)).await.unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::Remote { code, .. } if *code == ERROR_FUNCTION_PANICKED),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::Executed);
    // The server goes on.
    assert_eq!(client.call("echo", b"x", Some(BOUND)).await.unwrap(), b"x");
    stop.shutdown();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_cancels_it_and_stops_its_async_function() {
    for endpoint in ["tcp:127.0.0.1:0", "udp:127.0.0.1:0"] {
        let finished = Arc::new(AtomicU32::new(0));
        let server = builder(&finished, ServerConfig::default())
            .listen(endpoint.parse().unwrap())
            .build()
            .unwrap();
        let (endpoint, stop, stats, task) = start(server);
        let client = Client::connect(&endpoint, ClientConfig::default())
            .await
            .unwrap();
        let call = client.start("slow", b"", Some(BOUND)).await.unwrap();
        // A round trip after it: the slow call has reached the server and is running.
        assert_eq!(client.call("echo", b"x", Some(BOUND)).await.unwrap(), b"x");
        drop(call);
        let deadline = tokio::time::Instant::now() + BOUND;
        while counter(&stats, "requests.cancelled") == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{endpoint}: the cancel is counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Longer than the function would have taken: it was stopped, not run to its end.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "{endpoint}: the task was stopped"
        );
        // A call that is awaited runs to its end.
        assert_eq!(
            client.call("slow", b"", Some(BOUND)).await.unwrap(),
            b"done"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        stop.shutdown();
        tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_shuts_down_when_its_future_completes() {
    let finished = Arc::new(AtomicU32::new(0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let server = builder(&finished, ServerConfig::default())
        .listen(Endpoint::Unix(path.clone()))
        .build()
        .unwrap();
    let endpoint = server.endpoints()[0].clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = rx.await;
    }));
    let client = Client::connect(&endpoint, ClientConfig::default())
        .await
        .unwrap();
    let call = client.start("slow", b"", Some(BOUND)).await.unwrap();
    assert_eq!(client.call("echo", b"x", Some(BOUND)).await.unwrap(), b"x");
    tx.send(()).unwrap();
    // The call taken before the shutdown is answered; then the server returns, and its
    // socket file is gone.
    assert_eq!(call.await.unwrap(), b"done");
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!path.exists());
    let e = client.call("echo", b"late", Some(BOUND)).await.unwrap_err();
    assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_refused_as_not_executed() {
    let finished = Arc::new(AtomicU32::new(0));
    let mut config = ServerConfig::default();
    config.max_connections = 1;
    let server = builder(&finished, config)
        .listen("tcp:127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let (endpoint, stop, stats, task) = start(server);
    let first = Client::connect(&endpoint, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(first.call("echo", b"1", Some(BOUND)).await.unwrap(), b"1");
    let second = Client::connect(&endpoint, ClientConfig::default())
        .await
        .unwrap();
    let e = second.call("echo", b"2", Some(BOUND)).await.unwrap_err();
    assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
    // Lost with the refusal, or not sent because the refusal came first.
    assert!(
        matches!(
            e.kind(),
            CallErrorKind::ConnectionLost(_) | CallErrorKind::NotSent(_)
        ),
        "{e}"
    );
    let refused =
        wirecall::core::client::CloseReason::PeerClosed(wirecall::core::wire::CloseCode::REFUSED);
    assert_eq!(second.closed(), Some(refused), "the server said why");
    assert_eq!(counter(&stats, "connections.refused"), 1);
    assert_eq!(first.call("echo", b"3", Some(BOUND)).await.unwrap(), b"3");
    stop.shutdown();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_shared_by_many_tasks_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let finished = Arc::new(AtomicU32::new(0));
    let server = builder(&finished, ServerConfig::default())
        .listen(Endpoint::Unix(dir.path().join("s.sock")))
        .listen("tcp:127.0.0.1:0".parse().unwrap())
        .listen(Endpoint::UnixDatagram(dir.path().join("s.dgram")))
        .listen("udp:127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let endpoints = server.endpoints().to_vec();
    let stop = server.shutdown_handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    for endpoint in &endpoints {
        let client = Client::connect(endpoint, ClientConfig::default())
            .await
            .unwrap();
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let body = i.to_be_bytes();
                    let answer = client.call("double", &body, Some(BOUND)).await.unwrap();
                    assert_eq!(answer, [body, body].concat());
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(BOUND, t).await.unwrap().unwrap();
        }
        client.close().await;
    }
    stop.shutdown();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_a_slot_gets_the_one_a_dropped_call_frees() {
    for endpoint in ["tcp:127.0.0.1:0", "udp:127.0.0.1:0"] {
        let finished = Arc::new(AtomicU32::new(0));
        let server = builder(&finished, ServerConfig::default())
            .listen(endpoint.parse().unwrap())
            .build()
            .unwrap();
        let (endpoint, stop, _, task) = start(server);
        let mut config = ClientConfig::default();
        config.connection.max_in_flight = 1;
        // Keepalive far away, so nothing else would wake the client's driver.
        config.connection.keepalive_interval = None;
        let client = Client::connect(&endpoint, config).await.unwrap();
        let slow = client.start("sleep", b"10000", None).await.unwrap();
        // Another task's call waits for the one slot...
        let waiting = {
            let client = client.clone();
            tokio::spawn(async move { client.call("echo", b"next", Some(BOUND)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "{endpoint}: it waits while the slot is taken"
        );
        // ...and gets it as soon as the slow call is dropped.
        let dropped = tokio::time::Instant::now();
        drop(slow);
        let answer = tokio::time::timeout(BOUND, waiting).await.unwrap().unwrap();
        assert_eq!(answer.unwrap(), b"next");
        let took = dropped.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "{endpoint}: waited {took:?} for the slot"
        );
        stop.shutdown();
        tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_datagram_client_reaches_a_server_restarted_on_its_path() {
    let finished = Arc::new(AtomicU32::new(0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let serve = || {
        let server = builder(&finished, ServerConfig::default())
            .listen(Endpoint::UnixDatagram(path.clone()))
            .build()
            .unwrap();
        start(server)
    };
    let (endpoint, stop, _, task) = serve();
    let client = Client::connect(&endpoint, ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(client.call("echo", b"1", Some(BOUND)).await.unwrap(), b"1");
    stop.shutdown();
    // Drained at once (nothing runs; the client's driver acknowledges its answer).
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
    let (_, stop, _, task) = serve();
    // The first send finds the old socket closed; the client connects to the new one and
    // sends again at once.
    assert_eq!(client.call("echo", b"2", Some(BOUND)).await.unwrap(), b"2");
    stop.shutdown();
    client.close().await;
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}
