//! The embedded client and the embedded server, both driven on tokio, over a Unix stream
//! pair: calls of every outcome, a stop while the client waits, graceful close on both
//! sides, and the connection timers firing while a driver waits for input that never comes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use tokio::sync::Mutex;

use common::{BUF, Functions, TokioTimer, bounded, settings};
use embedded_io_adapters::tokio_1::FromTokio;
use tokio::net::UnixStream;
use wirecall_core::wire::RejectCode;
use wirecall_core::{Config, Duration};
use wirecall_embedded::{
    CallErrorKind, Client, ClientStorage, CloseReason, Error, Execution, ServerStorage, Settings,
    serve,
};

const SECOND: Option<Duration> = Some(Duration::from_secs(1));

/// Storage in `static`s, as on a device (a `Mutex` only because a `static` hands out no
/// `&mut` by itself; on embassy a `StaticCell` hands it out once).
static SERVER_STORAGE: Mutex<ServerStorage<BUF, 8>> = Mutex::const_new(ServerStorage::new());
static CLIENT_STORAGE: Mutex<ClientStorage<BUF, 8>> = Mutex::const_new(ClientStorage::new());

#[tokio::test]
async fn client_and_server_over_a_unix_pair() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut server_storage = SERVER_STORAGE.lock().await;
    let mut functions = Functions::new();
    let server = serve(
        FromTokio::new(b),
        &mut *server_storage,
        settings(),
        TokioTimer::new(),
        &mut functions,
        std::future::pending(),
    );
    let mut client_storage = CLIENT_STORAGE.lock().await;
    let client = async {
        let mut client = Client::new(
            FromTokio::new(a),
            &mut *client_storage,
            settings(),
            TokioTimer::new(),
        )
        .unwrap();
        let mut out = [0u8; 256];
        assert_eq!(
            client.call("echo", b"hi", SECOND, &mut out).await.unwrap(),
            b"hi"
        );
        assert_eq!(
            client
                .call("upper", b"abc", SECOND, &mut out)
                .await
                .unwrap(),
            b"ABC"
        );
        let e = client
            .call("fail", b"", SECOND, &mut out)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e.kind(),
                CallErrorKind::Remote {
                    code: 7,
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
        // A body as large as the frames allow, both ways.
        let big = vec![b'x'; 4000];
        let mut big_out = vec![0u8; 4000];
        assert_eq!(
            client
                .call("echo", &big, SECOND, &mut big_out)
                .await
                .unwrap(),
            &big[..]
        );
        for i in 0..200u32 {
            let body = i.to_le_bytes();
            assert_eq!(
                client.call("echo", &body, SECOND, &mut out).await.unwrap(),
                body
            );
        }
        client.close().await.unwrap()
    };
    let (served, closed) = bounded(async { tokio::join!(server, client) }).await;
    assert_eq!(closed, CloseReason::Graceful);
    assert_eq!(served.unwrap(), CloseReason::Graceful);
    assert_eq!(functions.ran, 4 + 200);
}

/// A stop signal closes the server gracefully; the client's next call is not executed.
#[tokio::test]
async fn a_stopped_server_closes_gracefully() {
    let (a, b) = UnixStream::pair().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server_storage = ServerStorage::<BUF, 8>::new();
    let mut functions = Functions::new();
    let server = serve(
        FromTokio::new(b),
        &mut server_storage,
        settings(),
        TokioTimer::new(),
        &mut functions,
        async {
            let _ = stopped.await;
        },
    );
    let mut client_storage = ClientStorage::<BUF, 8>::new();
    let client = async {
        let mut client = Client::new(
            FromTokio::new(a),
            &mut client_storage,
            settings(),
            TokioTimer::new(),
        )
        .unwrap();
        let mut out = [0u8; 64];
        assert_eq!(
            client.call("echo", b"1", SECOND, &mut out).await.unwrap(),
            b"1"
        );
        stop.send(()).unwrap();
        // A call that arrived before the go-away is answered; once the go-away is in,
        // calls fail as not executed.
        let mut answered = 1;
        loop {
            match client.call("echo", b"2", SECOND, &mut out).await {
                Ok(body) => {
                    assert_eq!(body, b"2");
                    answered += 1;
                    assert!(answered < 100, "the stop is never seen");
                }
                Err(e) => {
                    assert_eq!(e.execution(), Execution::NotExecuted, "{e}");
                    break;
                }
            }
        }
        (client.close().await, answered)
    };
    let (served, (closed, answered)) = bounded(async { tokio::join!(server, client) }).await;
    assert_eq!(served.unwrap(), CloseReason::Graceful);
    assert!(closed.is_ok(), "{closed:?}");
    assert_eq!(functions.ran, answered);
}

/// A server whose client never says hello: the handshake timer fires while the server
/// waits for input, and the connection ends.
#[tokio::test]
async fn the_handshake_timer_fires_while_the_server_waits() {
    let (_silent, b) = UnixStream::pair().unwrap();
    let settings = Settings::new(Config {
        max_frame_len: 4096,
        handshake_timeout: Duration::from_millis(100),
        ..Config::default()
    });
    let mut storage = ServerStorage::<BUF, 4>::new();
    let mut functions = Functions::new();
    let served = bounded(serve(
        FromTokio::new(b),
        &mut storage,
        settings,
        TokioTimer::new(),
        &mut functions,
        std::future::pending(),
    ))
    .await;
    assert_eq!(served.unwrap(), CloseReason::HandshakeTimedOut);
}

/// A client whose server never answers: the call's deadline fires while the client waits
/// for input; idle, the handshake timer ends the connection.
#[tokio::test]
async fn the_client_timers_fire_while_it_waits() {
    let (a, _silent) = UnixStream::pair().unwrap();
    let settings = Settings::new(Config {
        max_frame_len: 4096,
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let mut storage = ClientStorage::<BUF, 4>::new();
    let mut client =
        Client::new(FromTokio::new(a), &mut storage, settings, TokioTimer::new()).unwrap();
    let mut out = [0u8; 16];
    bounded(async {
        let e = client
            .call("echo", b"x", Some(Duration::from_millis(50)), &mut out)
            .await
            .unwrap_err();
        assert!(matches!(e.kind(), CallErrorKind::TimedOut), "{e}");
        assert_eq!(e.execution(), Execution::MaybeExecuted);
        let until = client.now().saturating_add(Duration::from_secs(5));
        let ended = client.idle_until(until).await.unwrap_err();
        assert!(
            matches!(ended, Error::Closed(CloseReason::HandshakeTimedOut)),
            "{ended}"
        );
        assert_eq!(client.closed(), Some(CloseReason::HandshakeTimedOut));
    })
    .await;
}
