//! Typed endpoints: keys computed at compile time from the path and the schemas, and typed
//! bodies that round-trip over caller buffers, borrowing in place, and refuse bytes that
//! are not a whole value of the type.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use serde::{Deserialize, Serialize};
use wirecall_core::typed::{
    self, Endpoint, EndpointKey, Schema, TypedError, decode_answer, decode_request, encode_answer,
    encode_request, path_hash,
};

#[derive(Serialize, Deserialize, Schema, Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
}

#[derive(Serialize, Deserialize, Schema, Debug, Clone, PartialEq)]
pub enum KvError {
    NotFound,
    TooLarge { limit: u32 },
}

/// The same request as `Entry`, with one field's type changed.
#[derive(Serialize, Deserialize, Schema, Debug, Clone, PartialEq)]
pub struct EntryV2<'a> {
    pub key: &'a str,
    pub value: u64,
}

wirecall_core::endpoints! {
    /// Stores an entry.
    pub Put = "kv/put": Entry<'a> => (), KvError;
    /// Reads a value.
    pub Get = "kv/get": &'a str => Option<&'a [u8]>, KvError;
    /// `kv/put` as a caller with another version of the types sees it.
    pub PutV2 = "kv/put": EntryV2<'a> => (), KvError;
}

/// Computed at compile time.
const PUT: EndpointKey = Put::KEY;

#[test]
fn the_path_hash_is_fnv1a_64() {
    // The published FNV-1a test vectors.
    assert_eq!(path_hash(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(path_hash("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(path_hash("foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn keys_tell_the_path_and_the_types_apart() {
    assert_eq!(PUT.path, path_hash("kv/put"));
    assert_eq!(PutV2::KEY.path, PUT.path, "same path");
    assert_ne!(PutV2::KEY.schema, PUT.schema, "a field's type changed");
    assert_ne!(Get::KEY.path, PUT.path);
    assert_eq!(EndpointKey::of::<Put>(), PUT);
    assert_eq!(
        EndpointKey::new::<Entry<'static>, (), KvError>("kv/put"),
        PUT
    );
    // The path takes part in the schema key too.
    assert_ne!(
        EndpointKey::new::<Entry<'static>, (), KvError>("kv/set").schema,
        PUT.schema
    );
}

/// Keys are part of the protocol: a client and a server built at different times (or with
/// another postcard-schema release) must compute the same ones, so they are pinned: the
/// path hash against an independent FNV-1a, the schema key as first computed (a change
/// here breaks every deployed peer and must be a new protocol version).
#[test]
fn keys_are_stable() {
    assert_eq!(PUT.path, 0x7c64_fb3c_1e15_bc62);
    assert_eq!(Get::KEY.path, 0x1ea0_363b_e967_1c13);
    assert_eq!(PUT.schema, 0xe773_b4c1_fd5a_5e77);
}

#[test]
fn requests_and_answers_round_trip_and_borrow_in_place() {
    let mut buf = [0u8; 64];
    let entry = Entry {
        key: "colour",
        value: b"blue",
    };
    let body = encode_request::<Put>(&entry, &mut buf).unwrap();
    let body = body.to_vec();
    let decoded = decode_request::<Put>(&body).unwrap();
    assert_eq!(decoded, entry);
    // No copy: the decoded fields point into the body.
    let range = body.as_ptr_range();
    assert!(range.contains(&decoded.key.as_ptr()));
    assert!(range.contains(&decoded.value.as_ptr()));

    let mut out = [0u8; 64];
    let found: Result<Option<&[u8]>, KvError> = Ok(Some(b"blue"));
    let answer = encode_answer::<Get>(&found, &mut out).unwrap().to_vec();
    assert_eq!(decode_answer::<Get>(&answer).unwrap(), found);
}

#[test]
fn an_application_error_comes_back_as_a_typed_value() {
    let mut out = [0u8; 32];
    let failed: Result<(), KvError> = Err(KvError::TooLarge { limit: 4096 });
    let answer = encode_answer::<Put>(&failed, &mut out).unwrap();
    assert_eq!(
        decode_answer::<Put>(answer).unwrap(),
        Err(KvError::TooLarge { limit: 4096 })
    );
}

#[test]
fn bytes_that_are_not_a_whole_value_are_refused() {
    let mut buf = [0u8; 64];
    let body = encode_request::<Get>(&"colour", &mut buf).unwrap().to_vec();
    // Truncated.
    assert_eq!(
        decode_request::<Get>(&body[..body.len() - 1]),
        Err(TypedError::Malformed)
    );
    // Followed by bytes the value does not account for.
    let mut longer = body.clone();
    longer.push(0);
    assert_eq!(decode_request::<Get>(&longer), Err(TypedError::Malformed));
    // Not UTF-8 where a string is due.
    assert_eq!(
        decode_request::<Get>(&[2, 0xff, 0xfe]),
        Err(TypedError::Malformed)
    );
    // A buffer too small to encode into.
    let mut tiny = [0u8; 3];
    assert_eq!(
        encode_request::<Get>(&"colour", &mut tiny),
        Err(TypedError::BufferTooSmall)
    );
}

#[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
pub struct Count {
    pub n: u32,
}

#[derive(Serialize, Deserialize, Schema, Debug, PartialEq)]
pub struct SignedCount {
    pub n: i32,
}

wirecall_core::endpoints! {
    pub Add = "calc/add": Count => u32, ();
    pub AddSigned = "calc/add": SignedCount => u32, ();
}

/// Why the key, not the decoder, must catch a mismatch: a body of another version's types
/// can decode without error to another value.
#[test]
fn a_mismatched_body_can_decode_to_the_wrong_value_but_the_keys_differ() {
    let mut buf = [0u8; 16];
    let body = encode_request::<AddSigned>(&SignedCount { n: -1 }, &mut buf)
        .unwrap()
        .to_vec();
    assert_eq!(
        decode_request::<Add>(&body),
        Ok(Count { n: 1 }),
        "garbled, silently"
    );
    assert_eq!(Add::KEY.path, AddSigned::KEY.path);
    assert_ne!(Add::KEY.schema, AddSigned::KEY.schema);
}

#[test]
fn the_module_path_is_reexported() {
    // An interface crate can name everything through wirecall-core.
    let _: fn(&str) -> u64 = typed::path_hash;
    assert_eq!(Put::PATH, "kv/put");
}
