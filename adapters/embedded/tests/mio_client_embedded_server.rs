//! The embedded server, driven on tokio through embedded-io-adapters, called by the mio
//! crate's blocking client over real TCP and Unix sockets: answers, a remote error, an
//! unknown method, a thousand calls in a row, and a graceful shutdown that answers what
//! was received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::thread;
use std::time::Duration;

use common::{BUF, Functions, TokioTimer, settings};
use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::{Read, Write};
use tokio::sync::oneshot;
use wirecall::core::wire::RejectCode;
use wirecall::{CallErrorKind, Client, ClientConfig, Endpoint, Execution};
use wirecall_embedded::{CloseReason, ServerStorage, serve};

const WAIT: Option<Duration> = Some(Duration::from_secs(5));

/// How one served connection ended, and how many calls its functions ran.
type Served = (Result<CloseReason, String>, usize);

/// Serves one connection until it ends or `stop` fires.
async fn serve_one<T: Read + Write>(io: T, stop: oneshot::Receiver<()>) -> Served {
    let mut storage = ServerStorage::<BUF, 8>::new();
    let mut functions = Functions::new();
    let stop = async {
        // A dropped sender is no stop signal.
        if stop.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let timer = TokioTimer::new();
    let ended = serve(io, &mut storage, settings(), timer, &mut functions, stop).await;
    (ended.map_err(|e| e.to_string()), functions.ran)
}

/// An embedded server for one connection on a thread of its own, on `transport`.
struct Embedded {
    endpoint: Endpoint,
    stop: Option<oneshot::Sender<()>>,
    thread: thread::JoinHandle<Served>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy)]
enum Transport {
    Tcp,
    Unix,
}

impl Embedded {
    fn start(transport: Transport) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = oneshot::channel();
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let bound = std::time::Duration::from_secs(30);
        let (endpoint, thread) = match transport {
            Transport::Tcp => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                let port = listener.local_addr().unwrap().port();
                let thread = thread::spawn(move || {
                    runtime().block_on(async {
                        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                        let (stream, _) = listener.accept().await.unwrap();
                        let served = serve_one(FromTokio::new(stream), stopped);
                        tokio::time::timeout(bound, served).await.unwrap()
                    })
                });
                (Endpoint::Tcp("127.0.0.1".into(), port), thread)
            }
            Transport::Unix => {
                let path = dir.path().join("embedded.sock");
                let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
                listener.set_nonblocking(true).unwrap();
                let thread = thread::spawn(move || {
                    runtime().block_on(async {
                        let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                        let (stream, _) = listener.accept().await.unwrap();
                        let served = serve_one(FromTokio::new(stream), stopped);
                        tokio::time::timeout(bound, served).await.unwrap()
                    })
                });
                (Endpoint::Unix(path), thread)
            }
        };
        Self {
            endpoint,
            stop: Some(stop),
            thread,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.endpoint, ClientConfig::default()).unwrap()
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
    }

    fn join(self) -> Served {
        self.thread.join().unwrap()
    }
}

fn calls_and_close(transport: Transport) {
    let server = Embedded::start(transport);
    let mut client = server.client();
    assert_eq!(client.call("echo", b"hello", WAIT).unwrap(), b"hello");
    assert_eq!(client.call("upper", b"shout", WAIT).unwrap(), b"SHOUT");

    let e = client.call("fail", b"", WAIT).unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::Remote { code: 7, message } if message == "failed on purpose"),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::Executed);

    let e = client.call("nope", b"", WAIT).unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::Rejected { code, .. } if *code == RejectCode::UNKNOWN_METHOD),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::NotExecuted);

    for i in 0..1000u32 {
        let body = i.to_string();
        assert_eq!(
            client.call("echo", body.as_bytes(), WAIT).unwrap(),
            body.as_bytes()
        );
    }
    assert_eq!(client.close(), CloseReason::Graceful);
    let (ended, ran) = server.join();
    assert_eq!(ended, Ok(CloseReason::Graceful));
    assert_eq!(ran, 3 + 1000);
}

#[test]
fn mio_client_calls_the_embedded_server_over_tcp() {
    calls_and_close(Transport::Tcp);
}

#[test]
fn mio_client_calls_the_embedded_server_over_unix() {
    calls_and_close(Transport::Unix);
}

/// Calls in flight when the server is asked to stop: each is answered (it had arrived)
/// or refused as not executed (it came after the go-away), and the server ran exactly
/// the ones answered; then the connection closes gracefully.
fn shutdown_answers_what_was_received(transport: Transport) {
    let mut server = Embedded::start(transport);
    let mut client = server.client();
    let ids: Vec<_> = (0..8u8)
        .map(|i| client.submit("echo", &[i], WAIT).unwrap())
        .collect();
    assert_eq!(client.wait(ids[0]).unwrap(), [0]);
    server.stop();
    let mut answered = 1;
    for (i, id) in ids.iter().enumerate().skip(1) {
        match client.wait(*id) {
            Ok(body) => {
                assert_eq!(body, [u8::try_from(i).unwrap()]);
                answered += 1;
            }
            Err(e) => assert_eq!(e.execution(), Execution::NotExecuted, "{e}"),
        }
    }
    // The stop reaches the server thread in its own time: calls made until then are
    // answered; the first one after its go-away is not executed.
    loop {
        match client.call("echo", b"late", WAIT) {
            Ok(body) => {
                assert_eq!(body, b"late");
                answered += 1;
                assert!(answered < 10_000, "the stop is never seen");
            }
            Err(e) => {
                assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
                break;
            }
        }
    }
    drop(client);
    let (ended, ran) = server.join();
    assert_eq!(ended, Ok(CloseReason::Graceful));
    assert_eq!(ran, answered);
}

#[test]
fn shutdown_answers_what_was_received_over_tcp() {
    shutdown_answers_what_was_received(Transport::Tcp);
}

#[test]
fn shutdown_answers_what_was_received_over_unix() {
    shutdown_answers_what_was_received(Transport::Unix);
}
