//! Core bugs the checks once tolerated or avoided, each kept as a switch (all `false`:
//! fixed) with its story, so a regression can be tolerated again while it is fixed.

#[allow(unused_imports)]
use super::*;

/// KNOWN CORE BUG, tolerated so that fuzzing can go on finding others; set to `false` once
/// fixed (and un-ignore `regression_close_before_first_transmit_keeps_hello` in
/// `core/tests/fuzz_corpus.rs`).
///
/// Since 1ff4dfd, a close that is not graceful (`Conn::close` in core/src/conn.rs) calls
/// `TxQueue::discard_unsent`, which drops every queued frame not yet begun, *including the
/// connection's own hello* when nothing has been transmitted yet. The close frame then goes
/// out as the first frame of the stream, breaking PROTOCOL.md section 5.1 ("Neither side may
/// send anything before its hello"); a conforming peer closes with NOT_WIRECALL and never
/// learns the real reason (UNSUPPORTED_VERSION, HANDSHAKE_TIMEOUT, ...).
///
/// While `true`, the checks accept exactly that: a transmitted stream that is one close frame
/// (the right one for the close reason) and nothing else.
pub const KNOWN_BUG_CLOSE_WITHOUT_HELLO: bool = false;

/// KNOWN CORE BUG, tolerated like the one above; set to `false` once fixed (and un-ignore
/// `regression_truncated_frame_sends_no_close_frame` in `core/tests/fuzz_corpus.rs`).
///
/// Since 5c2cbab, an end of stream in the middle of a frame closes with
/// `Protocol(TruncatedFrame)`, and `CloseReason::close_code` (core/src/conn.rs) maps every
/// `Protocol(_)` to PROTOCOL_VIOLATION, so a `Close { 1, "truncated frame" }` is queued.
/// PROTOCOL.md says no close frame goes out then: section 9, "(none: the peer is gone)", and
/// section 8, "A local abort, an end of stream and a finished graceful close send no Close
/// frame" (its message list has no "truncated frame" either).
///
/// While `true`, the checks accept that one close frame for that one reason.
pub const KNOWN_BUG_TRUNCATED_FRAME_SENDS_CLOSE: bool = false;

/// KNOWN CORE BUG, avoided rather than tolerated; set to `false` once fixed (and un-ignore
/// `regression_tiny_growable_storage_still_receives` in `core/tests/fuzz_corpus.rs`).
///
/// Since cc62332, a growable [`Buffer`] holding fewer than 4 bytes (as it starts, or after
/// `shrink_buffers(keep)` with `keep < 4`) never grows again: `FrameDecoder::make_room`
/// (core/src/frame.rs) grows the storage only once the next frame's length prefix is known,
/// and the prefix cannot arrive in fewer than 4 bytes of room. `input_buffer()` stays empty
/// (or stops at 3 bytes) and the connection stalls without an event or an error, until
/// keepalive closes it, or forever without keepalive.
///
/// While `true`, scripts never make or shrink growable storage below 4 bytes
/// ([`smallest_storage`]).
pub const KNOWN_BUG_TINY_STORAGE_STALLS: bool = false;
