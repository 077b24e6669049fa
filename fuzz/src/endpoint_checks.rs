//! The check behind the `endpoint_parse` target: the adapter's endpoint parser.
//!
//! Unlike `checks/`, this file is not replayed by `core/tests/fuzz_corpus.rs`: it needs
//! the `wirecall` adapter crate, which the core's test build cannot depend on.

use std::str::FromStr;

use wirecall::Endpoint;

/// Any bytes, read as UTF-8 (lossily), into `Endpoint::from_str`.
///
/// Invariants: parsing never panics; an endpoint that parses displays as text that parses
/// back to an equal endpoint, and that text is a fixed point (displaying the re-parsed
/// endpoint gives the same text again); `transport()` names the scheme the text starts with.
pub fn check_endpoint_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(endpoint) = Endpoint::from_str(&text) else {
        return;
    };
    let shown = endpoint.to_string();
    let again = Endpoint::from_str(&shown).unwrap_or_else(|e| {
        panic!("display of {endpoint:?} is {shown:?}, which does not parse back: {e}")
    });
    assert_eq!(
        again, endpoint,
        "display of {endpoint:?} is {shown:?}, which parses back to {again:?}"
    );
    assert_eq!(
        again.to_string(),
        shown,
        "display is not a fixed point for {endpoint:?}"
    );
    assert!(
        text.starts_with(&format!("{}:", endpoint.transport())),
        "{text:?} parsed as a {} endpoint",
        endpoint.transport()
    );
}
