//! Typed endpoints on the tokio driver over real sockets of all four transports: served as
//! Rust functions of their types, called with `.await`ed typed calls (many at once on one
//! client), and a client of another interface version refused as a schema mismatch.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wirecall::typed::Schema;
use wirecall::{ClientConfig, Endpoint, Execution, ServerConfig, TypedCallError};
use wirecall_tokio::{Client, ServerBuilder};

const BOUND: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Add {
    a: u32,
    b: u32,
}

/// The same struct as a later interface version has it: one field's type changed.
#[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddV2 {
    a: u64,
    b: u32,
}

#[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CalcError {
    Overflow,
}

wirecall::core::endpoints! {
    pub(crate) AddEndpoint = "calc/add": Add => u32, CalcError;
    pub(crate) Shout = "calc/shout": &'a str => &'a str, CalcError;
}

mod later {
    wirecall::core::endpoints! {
        pub(crate) AddEndpoint = "calc/add": super::AddV2 => u32, super::CalcError;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_endpoints_answer_awaited_calls_and_refuse_another_schema() {
    let dir = tempfile::tempdir().unwrap();
    let ran = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&ran);
    let server = ServerBuilder::new(ServerConfig::default())
        .endpoint::<AddEndpoint, _>(move |req: Add| {
            counted.fetch_add(1, Ordering::SeqCst);
            req.a.checked_add(req.b).ok_or(CalcError::Overflow)
        })
        .endpoint_deferred::<Shout, _>(|text: &str, responder| {
            let loud = text.to_uppercase();
            responder.respond(&Ok(loud.as_str()));
        })
        .listen(Endpoint::Unix(dir.path().join("t.sock")))
        .listen("tcp:127.0.0.1:0".parse().unwrap())
        .listen(Endpoint::UnixDatagram(dir.path().join("t.dgram")))
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
        // Many typed calls at once, pipelined on the one client.
        let calls: Vec<_> = (0..50u32)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let add = Add { a: i, b: 7 };
                    client.call_typed::<AddEndpoint>(&add, Some(BOUND)).await
                })
            })
            .collect();
        for (i, call) in (0u32..).zip(calls) {
            let sum = tokio::time::timeout(BOUND, call).await.unwrap().unwrap();
            assert_eq!(sum.unwrap(), i + 7, "{endpoint}");
        }
        let overflow = client
            .call_typed::<AddEndpoint>(&Add { a: u32::MAX, b: 1 }, Some(BOUND))
            .await
            .unwrap_err();
        assert!(matches!(
            overflow,
            TypedCallError::Application(CalcError::Overflow)
        ));

        let mut answer = Vec::new();
        let loud = client
            .call_typed_in::<Shout>(&"quiet", Some(BOUND), &mut answer)
            .await
            .unwrap();
        assert_eq!(loud, "QUIET");

        let before = ran.load(Ordering::SeqCst);
        let e = client
            .call_typed::<later::AddEndpoint>(&AddV2 { a: 1, b: 2 }, Some(BOUND))
            .await
            .unwrap_err();
        assert!(e.is_schema_mismatch(), "{endpoint}: {e:?}");
        assert_eq!(e.execution(), Execution::NotExecuted);
        assert_eq!(ran.load(Ordering::SeqCst), before, "{endpoint}: it ran");
        client.close().await;
    }
    stop.shutdown();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}
