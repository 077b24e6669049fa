//! A `no_std`, no-alloc client of wirecall's example key-value service, as firmware would
//! write it: the endpoints of `wirecall-kv-interface` called through a `wirecall-embedded`
//! [`Client`] over any `embedded-io-async` transport (an embassy-net `TcpSocket`, a UART
//! bridge), with the request encoded into a scratch buffer and the answer decoded in place
//! from the caller's. It is built for `thumbv7em-none-eabihf` in CI; a server built from
//! the same interface crate (`wirecall serve`) answers it.
#![no_std]
#![forbid(unsafe_code)]

use embedded_io_async::{Read, Write};
use wirecall_core::Duration;
use wirecall_embedded::{Client, Timer, TypedCallError};
use wirecall_kv_interface::{Bytes, Delete, Entry, Get, KvError, Put, Scan, ScanKeys, ScanPage};

/// Calls wait at most this long (a key-value call is quick; a lost answer should not hold
/// the device).
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// What a key-value call can end in, its application errors as [`KvError`] values.
pub type KvCallError<'o, E> = TypedCallError<'o, KvError, E>;

/// The buffers of one call: the encoded request, then the answer (keys and values borrow
/// it). 64 bytes of scratch take a key of up to about 60 bytes; `put` needs the value too.
pub struct Buffers<'b> {
    /// Where the request is encoded.
    pub scratch: &'b mut [u8],
    /// Where the answer is copied and decoded from.
    pub answer: &'b mut [u8],
}

/// The value of `key`, borrowed from `buffers.answer`; `None` when the key is not stored.
///
/// # Errors
///
/// [`KvCallError`].
pub async fn get<'o, T: Read + Write, C: Timer>(
    client: &mut Client<'_, T, C>,
    key: &str,
    buffers: Buffers<'o>,
) -> Result<Option<Bytes<'o>>, KvCallError<'o, T::Error>> {
    client
        .call_typed::<Get>(&key, Some(TIMEOUT), buffers.scratch, buffers.answer)
        .await
}

/// Stores `value` under `key`; answers the value it replaced, if any.
///
/// # Errors
///
/// [`KvCallError`].
pub async fn put<'o, T: Read + Write, C: Timer>(
    client: &mut Client<'_, T, C>,
    key: &str,
    value: &[u8],
    buffers: Buffers<'o>,
) -> Result<Option<Bytes<'o>>, KvCallError<'o, T::Error>> {
    let entry = Entry {
        key,
        value: Bytes(value),
    };
    client
        .call_typed::<Put>(&entry, Some(TIMEOUT), buffers.scratch, buffers.answer)
        .await
}

/// Removes `key`; answers whether it was there.
///
/// # Errors
///
/// [`KvCallError`].
pub async fn delete<'o, T: Read + Write, C: Timer>(
    client: &mut Client<'_, T, C>,
    key: &str,
    buffers: Buffers<'o>,
) -> Result<bool, KvCallError<'o, T::Error>> {
    client
        .call_typed::<Delete>(&key, Some(TIMEOUT), buffers.scratch, buffers.answer)
        .await
}

/// One page of keys from `start` on, borrowed from `buffers.answer`.
///
/// # Errors
///
/// [`KvCallError`].
pub async fn scan<'o, T: Read + Write, C: Timer>(
    client: &mut Client<'_, T, C>,
    start: &str,
    limit: u32,
    buffers: Buffers<'o>,
) -> Result<ScanPage<'o>, KvCallError<'o, T::Error>> {
    let scan = Scan { start, limit };
    client
        .call_typed::<ScanKeys>(&scan, Some(TIMEOUT), buffers.scratch, buffers.answer)
        .await
}
