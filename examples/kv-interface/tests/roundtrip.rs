//! The key-value interface's types round-trip through the core's typed helpers, borrowing
//! in place, and every endpoint has its own path.
#![allow(clippy::unwrap_used, missing_docs)]

use wirecall_core::typed::{
    Endpoint, decode_answer, decode_request, encode_answer, encode_request,
};
use wirecall_kv_interface::{
    Bytes, Delete, Entry, Get, KvError, MAX_VALUE, Put, Scan, ScanKeys, ScanPage,
};

#[test]
fn a_scan_page_borrows_its_keys_from_the_answer() {
    let mut keys = heapless::Vec::new();
    keys.push("apple").unwrap();
    keys.push("banana").unwrap();
    let page: Result<ScanPage<'_>, KvError> = Ok(ScanPage {
        keys,
        next: Some("cherry"),
    });
    let mut out = [0u8; 128];
    let answer = encode_answer::<ScanKeys>(&page, &mut out).unwrap().to_vec();
    let decoded = decode_answer::<ScanKeys>(&answer).unwrap().unwrap();
    assert_eq!(decoded.keys.as_slice(), ["apple", "banana"]);
    assert!(answer.as_ptr_range().contains(&decoded.keys[0].as_ptr()));
    assert_eq!(decoded.next, Some("cherry"));

    let mut buf = [0u8; 32];
    let scan = Scan {
        start: "a",
        limit: 10,
    };
    let body = encode_request::<ScanKeys>(&scan, &mut buf)
        .unwrap()
        .to_vec();
    assert_eq!(decode_request::<ScanKeys>(&body).unwrap(), scan);
}

#[test]
fn put_and_its_error_round_trip() {
    let mut buf = [0u8; 64];
    let entry = Entry {
        key: "k",
        value: Bytes(b"v"),
    };
    let body = encode_request::<Put>(&entry, &mut buf).unwrap().to_vec();
    assert_eq!(decode_request::<Put>(&body).unwrap(), entry);
    // Written in one piece, the same bytes as a `&[u8]` gets: the key, then the value.
    assert_eq!(body, [1, b'k', 1, b'v']);
    let value = decode_request::<Put>(&body).unwrap().value;
    assert!(
        body.as_ptr_range().contains(&value.as_ptr()),
        "borrowed in place"
    );
    let refused: Result<Option<Bytes<'_>>, KvError> = Err(KvError::ValueTooLarge {
        limit: MAX_VALUE as u32,
    });
    let answer = encode_answer::<Put>(&refused, &mut buf).unwrap().to_vec();
    assert_eq!(decode_answer::<Put>(&answer).unwrap(), refused);
}

#[test]
fn every_endpoint_has_its_own_path_and_key() {
    let keys = [Get::KEY, Put::KEY, Delete::KEY, ScanKeys::KEY];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a.path, b.path);
            assert_ne!(a.schema, b.schema);
        }
    }
    assert_eq!(ScanKeys::PATH, "kv/scan");
}
