//! Static storage of one connection: its receive and transmit buffers and its table of
//! calls or requests, in one value with a `const fn new()`, so it can live in a `static`
//! (e.g. a `static_cell::StaticCell`) and the connection needs no allocator.
//!
//! `BUF` is the size of each buffer: at least 1028 bytes (the baseline 1024-byte frame and
//! its 4-byte prefix), and [`Config::buffer_len`](wirecall_core::Config::buffer_len) to
//! take frames up to `max_frame_len`; a smaller receive buffer lowers the frame limit the
//! connection announces. `SLOTS` is the calls (client) or requests (server) in flight at
//! once; a server needs at least 4.

use wirecall_core::client::CallSlot;
use wirecall_core::server::RequestSlot;

/// Storage of one server connection: `2 * BUF` bytes of buffers and `SLOTS` request slots.
#[derive(Debug, Clone)]
pub struct ServerStorage<const BUF: usize, const SLOTS: usize> {
    rx: [u8; BUF],
    tx: [u8; BUF],
    slots: [RequestSlot; SLOTS],
}

impl<const BUF: usize, const SLOTS: usize> ServerStorage<BUF, SLOTS> {
    /// Zeroed storage, usable in a `static` initialiser.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rx: [0; BUF],
            tx: [0; BUF],
            slots: [RequestSlot::EMPTY; SLOTS],
        }
    }

    /// The parts, borrowed for one connection; the connection resets them itself.
    pub(crate) fn parts(&mut self) -> (&mut [u8], &mut [u8], &mut [RequestSlot]) {
        (&mut self.rx, &mut self.tx, &mut self.slots)
    }
}

impl<const BUF: usize, const SLOTS: usize> Default for ServerStorage<BUF, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

/// Storage of one client connection: `2 * BUF` bytes of buffers and `SLOTS` call slots.
#[derive(Debug, Clone)]
pub struct ClientStorage<const BUF: usize, const SLOTS: usize> {
    rx: [u8; BUF],
    tx: [u8; BUF],
    slots: [CallSlot; SLOTS],
}

impl<const BUF: usize, const SLOTS: usize> ClientStorage<BUF, SLOTS> {
    /// Zeroed storage, usable in a `static` initialiser.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            rx: [0; BUF],
            tx: [0; BUF],
            slots: [CallSlot::EMPTY; SLOTS],
        }
    }

    /// The parts, borrowed for one connection; the connection resets them itself.
    pub(crate) fn parts(&mut self) -> (&mut [u8], &mut [u8], &mut [CallSlot]) {
        (&mut self.rx, &mut self.tx, &mut self.slots)
    }
}

impl<const BUF: usize, const SLOTS: usize> Default for ClientStorage<BUF, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}
