//! Typed endpoints through the `wirecall` library on real sockets of all four transports:
//! a server that serves endpoints as Rust functions of their types, clients that call them
//! with the same types (values back, application errors as values), and a client built
//! from another version of the interface (one field's type changed) that gets a schema
//! mismatch, not executed, and never a garbled decode.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use wirecall::core::wire::RejectCode;
use wirecall::typed::Endpoint as _;
use wirecall::{
    CallErrorKind, Client, ClientConfig, Endpoint, Execution, ServerBuilder, ServerConfig,
    ShutdownHandle, TypedCallError,
};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// Version 1 of a small interface: what the server is built with.
mod v1 {
    use serde::{Deserialize, Serialize};
    use wirecall::typed::Schema;

    #[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Add {
        pub(crate) a: i32,
        pub(crate) b: i32,
    }

    #[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum CalcError {
        Overflow,
    }

    wirecall::core::endpoints! {
        pub(crate) AddEndpoint = "calc/add": Add => i32, CalcError;
        pub(crate) Shout = "calc/shout": &'a str => &'a str, CalcError;
        /// Which transport the server saw the call on: 1 unix, 2 tcp, 3 unix-dgram, 4 udp.
        pub(crate) Transport = "peer/transport": () => u8, CalcError;
    }
}

/// Version 2 of the same interface, as a client built from a later release has it: the
/// same paths, one field of `Add` widened to `i64`.
mod v2 {
    use serde::{Deserialize, Serialize};
    use wirecall::typed::Schema;

    #[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Add {
        pub(crate) a: i64,
        pub(crate) b: i32,
    }

    pub(crate) use super::v1::CalcError;

    wirecall::core::endpoints! {
        pub(crate) AddEndpoint = "calc/add": Add => i32, CalcError;
        /// A path the server does not serve.
        pub(crate) Mul = "calc/mul": Add => i32, CalcError;
    }
}

struct Running {
    endpoints: Vec<Endpoint>,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<Result<(), wirecall::Error>>>,
    ran: Arc<AtomicU32>,
    stats: wirecall::StatsHandle,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ran = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&ran);
    let shouts = Mutex::new(String::new());
    let builder = ServerBuilder::new(ServerConfig::default());
    let stats = builder.stats();
    let server = builder
        .function("echo", |b| Ok(b.to_vec()))
        .endpoint::<v1::AddEndpoint, _>(move |req: v1::Add| {
            counted.fetch_add(1, Ordering::SeqCst);
            req.a.checked_add(req.b).ok_or(v1::CalcError::Overflow)
        })
        // A response that borrows answers through the deferred form.
        .endpoint_deferred::<v1::Shout, _>(move |text: &str, responder| {
            let mut out = shouts.lock().unwrap();
            *out = text.to_uppercase();
            responder.respond(&Ok(out.as_str()));
        })
        .listen(Endpoint::Unix(dir.path().join("typed.sock")))
        .listen(Endpoint::Tcp("127.0.0.1".into(), 0))
        .listen(Endpoint::UnixDatagram(dir.path().join("typed-dgram.sock")))
        .listen(Endpoint::Udp("127.0.0.1".into(), 0))
        .build()
        .unwrap();
    let endpoints = server.endpoints().to_vec();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.run());
    Running {
        endpoints,
        stop,
        thread: Some(thread),
        ran,
        stats,
        _dir: dir,
    }
}

#[test]
fn typed_calls_return_values_and_application_errors_on_every_transport() {
    let server = start();
    for endpoint in &server.endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let sum = client
            .call_typed::<v1::AddEndpoint>(&v1::Add { a: 2, b: 3 }, WAIT)
            .unwrap();
        assert_eq!(sum, 5, "{endpoint}");

        let overflow = client
            .call_typed::<v1::AddEndpoint>(&v1::Add { a: i32::MAX, b: 1 }, WAIT)
            .unwrap_err();
        assert!(
            matches!(
                overflow,
                TypedCallError::Application(v1::CalcError::Overflow)
            ),
            "{endpoint}: {overflow:?}"
        );
        assert_eq!(overflow.execution(), Execution::Executed);

        // Borrowed both ways: the request from the caller, the answer from `answer`.
        let mut answer = Vec::new();
        let loud = client
            .call_typed_in::<v1::Shout>(&"hello", WAIT, &mut answer)
            .unwrap();
        assert_eq!(loud, "HELLO", "{endpoint}");

        // Untyped calls share the connection.
        assert_eq!(client.call("echo", b"x", WAIT).unwrap(), b"x");
    }
}

#[test]
fn pipelined_typed_calls_end_in_their_own_answers() {
    let server = start();
    for endpoint in &server.endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let ids: Vec<_> = (0..40)
            .map(|i| {
                client
                    .submit_typed::<v1::AddEndpoint, v1::CalcError>(
                        &v1::Add { a: i, b: 1000 },
                        WAIT,
                    )
                    .unwrap()
            })
            .collect();
        for (i, id) in ids.into_iter().enumerate().rev() {
            let sum = client.wait_typed::<v1::AddEndpoint>(id).unwrap();
            assert_eq!(sum, i32::try_from(i).unwrap() + 1000, "{endpoint}");
        }
    }
}

#[test]
fn a_client_of_another_interface_version_is_refused_as_a_schema_mismatch() {
    let server = start();
    assert_eq!(v1::AddEndpoint::PATH, v2::AddEndpoint::PATH);
    assert_eq!(v1::AddEndpoint::KEY.path, v2::AddEndpoint::KEY.path);
    assert_ne!(v1::AddEndpoint::KEY.schema, v2::AddEndpoint::KEY.schema);
    let mut refused = 0;
    for endpoint in &server.endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let before = server.ran.load(Ordering::SeqCst);
        let e = client
            .call_typed::<v2::AddEndpoint>(&v2::Add { a: 2, b: 3 }, WAIT)
            .unwrap_err();
        assert!(e.is_schema_mismatch(), "{endpoint}: {e:?}");
        assert_eq!(e.execution(), Execution::NotExecuted, "{endpoint}");
        let TypedCallError::Call(call) = &e else {
            panic!("{e:?}")
        };
        let CallErrorKind::Rejected { message, .. } = call.kind() else {
            panic!("{call:?}")
        };
        assert!(message.contains("calc/add"), "{message}");
        assert_eq!(
            server.ran.load(Ordering::SeqCst),
            before,
            "{endpoint}: it ran"
        );
        // Counted as a call of the endpoint that did not run.
        let snapshot = server.stats.snapshot();
        let add = snapshot
            .methods
            .iter()
            .find(|m| m.name == "calc/add")
            .unwrap();
        refused += 1;
        assert_eq!(add.calls, add.executions + refused, "{endpoint}");

        // A path the server does not serve stays an unknown method.
        let e = client
            .call_typed::<v2::Mul>(&v2::Add { a: 2, b: 3 }, WAIT)
            .unwrap_err();
        let TypedCallError::Call(call) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            call.rejection(),
            Some(RejectCode::UNKNOWN_METHOD),
            "{endpoint}"
        );
        assert_eq!(e.execution(), Execution::NotExecuted);

        // The same client still calls what matches.
        let sum = client
            .call_typed::<v1::AddEndpoint>(&v1::Add { a: 1, b: 1 }, WAIT)
            .unwrap();
        assert_eq!(sum, 2);
    }
}

#[test]
fn a_typed_body_that_does_not_decode_is_rejected_before_the_function_runs() {
    let server = start();
    for endpoint in &server.endpoints {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let before = server.ran.load(Ordering::SeqCst);
        // The right key, a body of one byte: not an `Add`.
        let e = client
            .call(v1::AddEndpoint::KEY, &[0x01], WAIT)
            .unwrap_err();
        assert_eq!(
            e.rejection(),
            Some(RejectCode::INVALID_REQUEST),
            "{endpoint}"
        );
        assert_eq!(e.execution(), Execution::NotExecuted);
        assert_eq!(server.ran.load(Ordering::SeqCst), before);
    }
}

#[test]
fn two_endpoints_at_one_path_are_refused_when_the_server_is_built() {
    let built = ServerBuilder::new(ServerConfig::default())
        .endpoint::<v1::AddEndpoint, _>(|req: v1::Add| Ok(req.a))
        .function("calc/add", |b| Ok(b.to_vec()))
        .build();
    assert!(
        matches!(built, Err(wirecall::Error::DuplicateFunction(ref name)) if name == "calc/add"),
        "{built:?}"
    );
}

wirecall::core::endpoints! {
    /// The endpoint of the discovery vector in `docs/PROTOCOL.md` section 12.
    pub(crate) Negate = "t/neg": i32 => i32, ();
}

/// What discovery says about one endpoint is byte for byte the vector of PROTOCOL.md, so
/// an implementation in another language can read a server's list from the document.
#[test]
fn the_discovery_vector_of_protocol_md_is_what_a_server_sends() {
    let info = wirecall::typed::EndpointSpec::of::<Negate>().info();
    let bytes = postcard::to_allocvec(&info).unwrap();
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hex = hex.join(" ");
    let doc = include_str!("../../docs/PROTOCOL.md");
    assert!(
        doc.lines().any(|line| line.trim() == hex),
        "the vector `{hex}` is not on a line of its own in docs/PROTOCOL.md"
    );
    // And a server's list holds it, after discovery itself.
    let server = ServerBuilder::new(ServerConfig::default())
        .endpoint::<Negate, _>(|n: i32| Ok(n.wrapping_neg()))
        .listen(Endpoint::Tcp("127.0.0.1".into(), 0))
        .build()
        .unwrap();
    let endpoint = server.endpoints()[0].clone();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.run());
    let mut client = Client::connect(&endpoint, ClientConfig::default()).unwrap();
    let list = client
        .call_typed::<wirecall::typed::ListEndpoints>(&(), WAIT)
        .unwrap();
    let paths: Vec<&str> = list.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["wirecall/endpoints", "t/neg"]);
    assert_eq!(list[1], info);
    assert_eq!(list[1].key(), Negate::KEY);
    stop.shutdown();
    thread.join().unwrap().unwrap();
}

/// A typed endpoint registered with a context sees who called, on every transport.
#[test]
fn a_typed_endpoint_with_a_context_sees_the_transport() {
    use wirecall::function::{CallContext, Peer};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerBuilder::new(ServerConfig::default())
        .endpoint_with_context::<v1::Transport, _>(|context: &CallContext<'_>, ()| {
            Ok(match context.peer() {
                Peer::Unix(Some(_)) => 1,
                Peer::Tcp(_) => 2,
                Peer::UnixDatagram { .. } => 3,
                Peer::Udp(_) => 4,
                _ => 0,
            })
        })
        .listen(Endpoint::Unix(dir.path().join("ctx.sock")))
        .listen(Endpoint::Tcp("127.0.0.1".into(), 0))
        .listen(Endpoint::UnixDatagram(dir.path().join("ctx-dgram.sock")))
        .listen(Endpoint::Udp("127.0.0.1".into(), 0))
        .build()
        .unwrap();
    let endpoints = server.endpoints().to_vec();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.run());
    for (endpoint, expected) in endpoints.iter().zip(1u8..) {
        let mut client = Client::connect(endpoint, ClientConfig::default()).unwrap();
        let seen = client.call_typed::<v1::Transport>(&(), WAIT).unwrap();
        assert_eq!(seen, expected, "{endpoint}");
    }
    stop.shutdown();
    thread.join().unwrap().unwrap();
}
