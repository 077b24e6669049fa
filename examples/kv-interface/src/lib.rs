//! The interface of wirecall's example key-value service: its endpoints as Rust types, in
//! a crate the server and every client share. It is `no_std` and allocates nothing, so a
//! microcontroller can call the service with the same types a Rust server serves it with.
//!
//! Keys and values are borrowed (`&str`, [`Bytes`]): a server decodes a request in place
//! from the bytes it received, and a client decodes an answer in place the same way.
#![no_std]
#![forbid(unsafe_code)]

use postcard_schema::Schema;
use serde::{Deserialize, Serialize};
pub use wirecall_core::typed::Bytes;

/// The longest key the service stores, in bytes.
pub const MAX_KEY: usize = 256;
/// The longest value the service stores, in bytes.
pub const MAX_VALUE: usize = 4096;
/// The most entries one `kv/scan` answer holds.
pub const MAX_SCAN: u32 = 64;

/// A key and its value, both borrowed from the bytes they were decoded from.
#[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key (UTF-8, at most [`MAX_KEY`] bytes).
    pub key: &'a str,
    /// The value (at most [`MAX_VALUE`] bytes).
    pub value: Bytes<'a>,
}

/// Which entries a `kv/scan` wants: keys from `start` on, in order, at most `limit` (and
/// at most [`MAX_SCAN`]).
#[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The first key wanted (inclusive); `""` starts at the beginning.
    pub start: &'a str,
    /// The most entries wanted.
    pub limit: u32,
}

/// Why a key-value call failed: values of the application's, decoded by the caller.
#[derive(Serialize, Deserialize, Schema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// The key is empty or longer than [`MAX_KEY`].
    BadKey,
    /// The value is longer than [`MAX_VALUE`].
    ValueTooLarge {
        /// The largest value taken, in bytes.
        limit: u32,
    },
    /// The store holds as many entries as it may.
    Full,
}

wirecall_core::endpoints! {
    /// Reads the value of a key: `None` when the key is not there.
    pub Get = "kv/get": &'a str => Option<Bytes<'a>>, KvError;
    /// Stores a value under a key; answers the value it replaced, if any.
    pub Put = "kv/put": Entry<'a> => Option<Bytes<'a>>, KvError;
    /// Removes a key; answers whether it was there.
    pub Delete = "kv/delete": &'a str => bool, KvError;
    /// Lists entries in key order from a start key. Answers the keys found; a key's value
    /// is one `kv/get` away (an answer must fit one datagram).
    pub ScanKeys = "kv/scan": Scan<'a> => ScanPage<'a>, KvError;
}

/// One page of `kv/scan`: the keys found, in order, and where the next page starts.
#[derive(Serialize, Deserialize, Schema, Debug, Clone, PartialEq, Eq)]
pub struct ScanPage<'a> {
    /// The keys found (borrowed from the answer), at most [`MAX_SCAN`].
    #[serde(borrow)]
    pub keys: heapless::Vec<&'a str, { MAX_SCAN as usize }>,
    /// The first key after this page, when there is more.
    pub next: Option<&'a str>,
}
