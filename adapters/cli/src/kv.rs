//! The example key-value service of the reference server: the typed endpoints of
//! `wirecall-kv-interface` (`kv/get`, `kv/put`, `kv/delete`, `kv/scan`) over an in-memory
//! map, bounded so no client can make it grow past [`MAX_ENTRIES`] entries of at most
//! [`MAX_KEY`] + [`MAX_VALUE`] bytes (about 4.3 MB).
//!
//! Answers borrow from the map (a value, the keys of a page), so the endpoints answer
//! through their responders while the map's lock is held: the borrowed bytes are encoded
//! before it is let go.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wirecall::function::Register;
use wirecall_kv_interface::{
    Bytes, Delete, Entry, Get, KvError, MAX_KEY, MAX_SCAN, MAX_VALUE, Put, Scan, ScanKeys, ScanPage,
};

/// The most entries the store holds; a `kv/put` of a new key beyond is `KvError::Full`.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// The most key bytes one `kv/scan` page carries, so its answer fits one UDP datagram of
/// the default 1,232 bytes (with the header, the frame and a byte of length per key).
pub(crate) const SCAN_BYTES: usize = 1000;

type Map = BTreeMap<String, Vec<u8>>;

fn lock(map: &Mutex<Map>) -> MutexGuard<'_, Map> {
    // A panic elsewhere leaves the map as it was: every change below is one call.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY {
        Err(KvError::BadKey)
    } else {
        Ok(())
    }
}

/// Serves the key-value endpoints on `builder`, over a fresh empty store.
#[must_use]
pub(crate) fn register<B: Register>(builder: B) -> B {
    let map = Arc::new(Mutex::new(Map::new()));
    let (get, put, delete, scan) = (
        Arc::clone(&map),
        Arc::clone(&map),
        Arc::clone(&map),
        Arc::clone(&map),
    );
    builder
        .endpoint_deferred::<Get, _>(move |key: &str, responder| {
            if let Err(e) = check_key(key) {
                return responder.respond(&Err(e));
            }
            let map = lock(&get);
            responder.respond(&Ok(map.get(key).map(|v| Bytes(v.as_slice()))));
        })
        .endpoint_deferred::<Put, _>(move |entry: Entry<'_>, responder| {
            if let Err(e) = check_key(entry.key) {
                return responder.respond(&Err(e));
            }
            if entry.value.len() > MAX_VALUE {
                let limit = u32::try_from(MAX_VALUE).unwrap_or(u32::MAX);
                return responder.respond(&Err(KvError::ValueTooLarge { limit }));
            }
            let mut map = lock(&put);
            if map.len() >= MAX_ENTRIES && !map.contains_key(entry.key) {
                return responder.respond(&Err(KvError::Full));
            }
            let old = map.insert(entry.key.to_owned(), entry.value.to_vec());
            responder.respond(&Ok(old.as_deref().map(Bytes)));
        })
        .endpoint::<Delete, _>(move |key: &str| {
            check_key(key)?;
            Ok(lock(&delete).remove(key).is_some())
        })
        .endpoint_deferred::<ScanKeys, _>(move |scan_request: Scan<'_>, responder| {
            let map = lock(&scan);
            let limit = scan_request.limit.min(MAX_SCAN) as usize;
            let mut page = ScanPage {
                keys: Default::default(),
                next: None,
            };
            let mut bytes = 0usize;
            let from = (Bound::Included(scan_request.start), Bound::Unbounded);
            for key in map.range::<str, _>(from).map(|(k, _)| k.as_str()) {
                bytes = bytes.saturating_add(key.len() + 2);
                if page.keys.len() >= limit || bytes > SCAN_BYTES || page.keys.push(key).is_err() {
                    page.next = Some(key);
                    break;
                }
            }
            responder.respond(&Ok(page));
        })
}
