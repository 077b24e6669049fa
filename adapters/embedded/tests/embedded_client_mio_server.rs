//! The embedded client, driven on tokio through embedded-io-adapters, against the mio
//! server over real TCP and Unix sockets: answers, a remote error, an unknown method, a
//! deadline that passes while the function runs, keepalive while idle, graceful close.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Instant as StdInstant;

use common::{BUF, MioServer, Shout, Sum, SumWide, TokioTimer, bounded, settings};
use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::{Read, Write};
use wirecall::Endpoint;
use wirecall_core::wire::RejectCode;
use wirecall_core::{Config, Duration};
use wirecall_embedded::{
    CallErrorKind, Client, ClientStorage, CloseReason, Execution, Settings, TypedCallError,
};

const SECOND: Option<Duration> = Some(Duration::from_secs(1));

/// Every kind of outcome, one call after another, then a graceful close.
async fn outcomes<T: Read + Write>(io: T) {
    let mut storage = ClientStorage::<BUF, 8>::new();
    let mut client = Client::new(io, &mut storage, settings(), TokioTimer::new()).unwrap();
    let mut out = [0u8; 512];

    let answer = client
        .call("echo", b"hello", SECOND, &mut out)
        .await
        .unwrap();
    assert_eq!(answer, b"hello");
    let answer = client
        .call("upper", b"shout", SECOND, &mut out)
        .await
        .unwrap();
    assert_eq!(answer, b"SHOUT");

    let e = client
        .call("fail", b"", SECOND, &mut out)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            CallErrorKind::Remote {
                code: 42,
                message: "failed on purpose"
            }
        ),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::Executed);

    let e = client
        .call("nope", b"", SECOND, &mut out)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::Rejected { code, .. } if *code == RejectCode::UNKNOWN_METHOD),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::NotExecuted);

    // The deadline passes while `sleep` runs: the timer fires while the client waits.
    let start = StdInstant::now();
    let e = client
        .call("sleep", b"500", Some(Duration::from_millis(50)), &mut out)
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), CallErrorKind::TimedOut), "{e}");
    assert_eq!(e.execution(), Execution::MaybeExecuted);
    assert!(
        start.elapsed() < std::time::Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );

    // The connection goes on; the late answer is dropped by the core.
    let answer = client
        .call("echo", b"after", SECOND, &mut out)
        .await
        .unwrap();
    assert_eq!(answer, b"after");

    // An answer larger than the buffer lent: the call ran, the answer is not delivered.
    let e = client
        .call("echo", &[1; 600], SECOND, &mut out)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), CallErrorKind::AnswerTooLarge { len: 600 }),
        "{e}"
    );
    assert_eq!(e.execution(), Execution::Executed);

    assert_eq!(client.close().await.unwrap(), CloseReason::Graceful);
}

/// Typed calls from the `no_std` client: values, an application error as a value, a
/// borrowed answer decoded in place, and another interface version refused unexecuted.
#[tokio::test]
async fn typed_calls_over_tcp() {
    let server = MioServer::start();
    let Endpoint::Tcp(host, port) = &server.tcp else {
        panic!("tcp")
    };
    let stream = bounded(tokio::net::TcpStream::connect((host.as_str(), *port)))
        .await
        .unwrap();
    bounded(async {
        let mut storage = ClientStorage::<BUF, 8>::new();
        let io = FromTokio::new(stream);
        let mut client = Client::new(io, &mut storage, settings(), TokioTimer::new()).unwrap();
        let (mut scratch, mut out) = ([0u8; 64], [0u8; 64]);
        let sum = client
            .call_typed::<Sum>(&(2, 3), SECOND, &mut scratch, &mut out)
            .await
            .unwrap();
        assert_eq!(sum, 5);
        let e = client
            .call_typed::<Sum>(&(u32::MAX, 1), SECOND, &mut scratch, &mut out)
            .await
            .unwrap_err();
        assert!(matches!(e, TypedCallError::Application(7)), "{e:?}");
        assert_eq!(e.execution(), Execution::Executed);
        let loud = client
            .call_typed::<Shout>(&"quiet", SECOND, &mut scratch, &mut out)
            .await
            .unwrap();
        assert_eq!(loud, "QUIET");
        let e = client
            .call_typed::<SumWide>(&(2, 3), SECOND, &mut scratch, &mut out)
            .await
            .unwrap_err();
        let TypedCallError::Call(call) = &e else {
            panic!("{e:?}")
        };
        assert!(
            matches!(call.kind(), CallErrorKind::Rejected { code, .. } if *code == RejectCode::SCHEMA_MISMATCH),
            "{e:?}"
        );
        assert_eq!(e.execution(), Execution::NotExecuted);
        assert_eq!(client.close().await.unwrap(), CloseReason::Graceful);
    })
    .await;
}

#[tokio::test]
async fn every_outcome_over_tcp() {
    let server = MioServer::start();
    let Endpoint::Tcp(host, port) = &server.tcp else {
        panic!("tcp")
    };
    let stream = bounded(tokio::net::TcpStream::connect((host.as_str(), *port)))
        .await
        .unwrap();
    bounded(outcomes(FromTokio::new(stream))).await;
}

#[tokio::test]
async fn every_outcome_over_unix() {
    let server = MioServer::start();
    let Endpoint::Unix(path) = &server.unix else {
        panic!("unix")
    };
    let stream = bounded(tokio::net::UnixStream::connect(path))
        .await
        .unwrap();
    bounded(outcomes(FromTokio::new(stream))).await;
}

/// With a 100 ms keepalive, the idle client pings and takes the pongs: the connection
/// stays open over many keepalive periods, and the next call works.
#[tokio::test]
async fn keepalive_runs_while_idle() {
    let server = MioServer::start();
    let Endpoint::Tcp(host, port) = &server.tcp else {
        panic!("tcp")
    };
    let stream = bounded(tokio::net::TcpStream::connect((host.as_str(), *port)))
        .await
        .unwrap();
    let settings = Settings::new(Config {
        max_frame_len: 4096,
        keepalive_interval: Some(Duration::from_millis(100)),
        keepalive_timeout: Duration::from_millis(500),
        ..Config::default()
    });
    let mut storage = ClientStorage::<BUF, 4>::new();
    let timer = TokioTimer::new();
    let mut client = Client::new(FromTokio::new(stream), &mut storage, settings, timer).unwrap();
    let mut out = [0u8; 64];
    bounded(async {
        assert_eq!(
            client.call("echo", b"1", SECOND, &mut out).await.unwrap(),
            b"1"
        );
        // Ten keepalive periods without a call.
        let until = client.now().saturating_add(Duration::from_secs(1));
        client.idle_until(until).await.unwrap();
        assert_eq!(client.closed(), None);
        assert_eq!(
            client.call("echo", b"2", SECOND, &mut out).await.unwrap(),
            b"2"
        );
        assert_eq!(client.close().await.unwrap(), CloseReason::Graceful);
    })
    .await;
}

/// A request too large for the server's frames is refused by the core before it is sent.
#[tokio::test]
async fn a_request_too_large_is_not_sent() {
    let server = MioServer::start();
    let Endpoint::Unix(path) = &server.unix else {
        panic!("unix")
    };
    let stream = bounded(tokio::net::UnixStream::connect(path))
        .await
        .unwrap();
    let mut storage = ClientStorage::<BUF, 4>::new();
    let mut client = Client::new(
        FromTokio::new(stream),
        &mut storage,
        settings(),
        TokioTimer::new(),
    )
    .unwrap();
    let mut out = [0u8; 64];
    let big = vec![0u8; BUF];
    bounded(async {
        let e = client
            .call("echo", &big, SECOND, &mut out)
            .await
            .unwrap_err();
        assert!(matches!(e.kind(), CallErrorKind::NotSent(_)), "{e}");
        assert_eq!(e.execution(), Execution::NotExecuted);
        assert_eq!(
            client.call("echo", b"ok", SECOND, &mut out).await.unwrap(),
            b"ok"
        );
    })
    .await;
}
