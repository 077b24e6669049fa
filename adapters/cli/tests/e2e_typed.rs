//! End-to-end: typed endpoints of the real `wirecall serve` (its key-value service) over
//! Unix stream, TCP, Unix datagram and UDP: `wirecall list` shows them with their types,
//! `wirecall call --json` calls them from the shell (JSON encoded from the schema the server
//! publishes), bad JSON is a usage error naming the field; a typed Rust client shares the
//! interface crate, and one built from another version of it is refused as a schema
//! mismatch, not executed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wirecall::core::wire::RejectCode;
use wirecall::typed::Schema;
use wirecall::{Client, ClientConfig, Execution, TypedCallError};
use wirecall_kv_interface::{Bytes, Delete, Entry, Get, KvError, Put};
use wirecall_tests::{Output, ServerProcess, run};

const TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wirecall"))
}

fn wirecall(args: &[&str]) -> Output {
    run(bin(), args, b"", TIMEOUT).unwrap()
}

fn serve(dir: &Path) -> ServerProcess {
    let unix = format!("unix:{}", dir.join("s.sock").display());
    let dgram = format!("unix-dgram:{}", dir.join("d.sock").display());
    let args = [
        "--listen",
        unix.as_str(),
        "--listen",
        "tcp:127.0.0.1:0",
        "--listen",
        dgram.as_str(),
        "--listen",
        "udp:127.0.0.1:0",
    ];
    ServerProcess::start(bin(), &args, &[]).unwrap()
}

/// `call ENDPOINT PATH --json JSON`: (exit code, stdout, stderr).
fn json(endpoint: &str, path: &str, value: &str) -> (Option<i32>, String, String) {
    let out = wirecall(&["call", endpoint, path, "--json", value]);
    (out.code, out.stdout_text(), out.stderr.clone())
}

#[test]
fn list_and_call_json_work_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    for (n, ep) in server.endpoints.iter().enumerate() {
        let list = wirecall(&["list", ep]);
        assert_eq!(list.code, Some(0), "{ep}: {}", list.stderr);
        let text = list.stdout_text();
        for path in [
            "wirecall/endpoints",
            "kv/get",
            "kv/put",
            "kv/delete",
            "kv/scan",
        ] {
            assert!(text.contains(&format!("{path}  (key ")), "{ep}: {text}");
        }
        assert!(
            text.contains("request:  struct Entry { key: String, value: [u8] }"),
            "{ep}: {text}"
        );
        assert!(text.contains("enum KvError { BadKey"), "{ep}: {text}");

        // One store behind every endpoint: keys per transport.
        let key = format!("k{n}");
        let put = format!(r#"{{"key": "{key}", "value": "one"}}"#);
        assert_eq!(
            json(ep, "kv/put", &put),
            (Some(0), "null\n".into(), String::new())
        );
        let put = format!(r#"{{"key": "{key}", "value": [116, 119, 111]}}"#);
        assert_eq!(
            json(ep, "kv/put", &put).1,
            "\"one\"\n",
            "{ep}: the old value"
        );
        assert_eq!(
            json(ep, "kv/get", &format!("{key:?}")).1,
            "\"two\"\n",
            "{ep}"
        );
        let scan = json(
            ep,
            "kv/scan",
            &format!(r#"{{"start": "{key}", "limit": 1}}"#),
        );
        assert_eq!(scan.0, Some(0), "{ep}: {}", scan.2);
        assert!(
            scan.1.starts_with(&format!(r#"{{"keys":["{key}"]"#)),
            "{ep}: {}",
            scan.1
        );
        assert_eq!(
            json(ep, "kv/delete", &format!("{key:?}")).1,
            "true\n",
            "{ep}"
        );
        assert_eq!(json(ep, "kv/get", &format!("{key:?}")).1, "null\n", "{ep}");

        // The application's error, as JSON, exit 3 (executed).
        let (code, out, err) = json(ep, "kv/get", r#""""#);
        assert_eq!((code, out.as_str()), (Some(3), ""), "{ep}: {err}");
        assert_eq!(
            err, "wirecall: the function failed: \"BadKey\" [executed]\n",
            "{ep}"
        );

        // JSON that does not fit the request type: exit 2, naming the field.
        let (code, _, err) = json(ep, "kv/put", r#"{"key": "a", "value": 5}"#);
        assert_eq!(code, Some(2), "{ep}: {err}");
        assert!(err.contains("at value: expected"), "{ep}: {err}");
        let (code, _, err) = json(ep, "kv/put", r#"{"key": "a", "valeu": "x"}"#);
        assert_eq!(code, Some(2), "{ep}: {err}");
        assert!(
            err.contains("at valeu: no such field (the fields are: key, value)"),
            "{ep}: {err}"
        );
        let (code, _, err) = json(ep, "kv/put", r#"{"key": "a""#);
        assert_eq!(code, Some(2), "{ep}: {err}");
        assert!(err.contains("--json is not JSON"), "{ep}: {err}");
        assert_eq!(err.lines().count(), 1, "{ep}: one line: {err}");

        // A path the server does not serve: exit 4, not executed, with what it has.
        let (code, _, err) = json(ep, "kv/nope", "1");
        assert_eq!(code, Some(4), "{ep}: {err}");
        assert!(
            err.contains("kv/get") && err.ends_with("[not executed]\n"),
            "{ep}: {err}"
        );
    }
}

/// `kv/put` as a client built from another version of the interface crate declares it:
/// the value became a number.
mod other_version {
    use super::*;

    #[derive(Serialize, Deserialize, Schema, Debug)]
    pub(crate) struct Entry<'a> {
        pub(crate) key: &'a str,
        pub(crate) value: u64,
    }

    wirecall::core::endpoints! {
        pub(crate) Put = "kv/put": Entry<'a> => Option<u64>, super::KvError;
    }
}

#[test]
fn a_client_of_another_interface_version_is_refused_as_a_schema_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    for ep in &server.endpoints {
        let endpoint = ep.parse().unwrap();
        let mut client = Client::connect(&endpoint, ClientConfig::default()).unwrap();

        // The same interface crate: values back, errors as values.
        let entry = Entry {
            key: "shared",
            value: Bytes(b"v1"),
        };
        let mut answer = Vec::new();
        client
            .call_typed_in::<Put>(&entry, WAIT, &mut answer)
            .unwrap();
        let got = client
            .call_typed_in::<Get>(&"shared", WAIT, &mut answer)
            .unwrap();
        assert_eq!(got, Some(Bytes(b"v1")), "{ep}");
        let e = client.call_typed::<Delete>(&"", WAIT).unwrap_err();
        assert!(
            matches!(e, TypedCallError::Application(KvError::BadKey)),
            "{ep}: {e:?}"
        );

        // Another version: refused before anything ran.
        let wrong = other_version::Entry {
            key: "shared",
            value: 7,
        };
        let e = client
            .call_typed::<other_version::Put>(&wrong, WAIT)
            .unwrap_err();
        assert!(e.is_schema_mismatch(), "{ep}: {e:?}");
        assert_eq!(e.execution(), Execution::NotExecuted, "{ep}");
        let TypedCallError::Call(call) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(call.rejection(), Some(RejectCode::SCHEMA_MISMATCH));
        let got = client
            .call_typed_in::<Get>(&"shared", WAIT, &mut answer)
            .unwrap();
        assert_eq!(
            got,
            Some(Bytes(b"v1")),
            "{ep}: the mismatched put changed nothing"
        );
        assert!(client.call_typed::<Delete>(&"shared", WAIT).unwrap());
    }
}
