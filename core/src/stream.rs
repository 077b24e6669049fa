//! What the two stream connections share, written once: the verbs a runtime drives them
//! with (bytes in, bytes out, end of stream, buffer sizing) as inherent methods of both
//! [`ClientConnection`](crate::ClientConnection) and
//! [`ServerConnection`](crate::ServerConnection), and the [`StreamConnection`] trait over
//! both, so that one driver can pump either role. The reading prologue they share (the
//! handshake, keepalive, the peer's close) is `conn::read_frame`.

use crate::conn::PeerInfo;
use crate::time::Instant;

/// The driver contract of a stream connection, client or server (see the crate docs for
/// the call order). Both connection types have these as inherent methods too; the trait
/// is for runtimes that drive either role with the same code.
pub trait StreamConnection {
    /// What [`poll_event`](Self::poll_event) returns.
    type Event<'a>
    where
        Self: 'a;

    /// Copies received bytes in; returns how many were taken. Fewer than offered means the
    /// receive buffer is full of frames not yet handled: take events and send, then offer
    /// the rest again.
    #[must_use = "bytes not taken must be offered again"]
    fn handle_input(&mut self, now: Instant, data: &[u8]) -> usize;

    /// Free receive storage to read the transport into directly; then
    /// [`commit_input`](Self::commit_input). Empty means: take events first (and do not
    /// read into it: a read into an empty slice returns 0, which is not an end of stream).
    fn input_buffer(&mut self) -> &mut [u8];

    /// Marks `n` bytes read into [`input_buffer`](Self::input_buffer) as received.
    fn commit_input(&mut self, now: Instant, n: usize);

    /// The peer closed its end of the transport (a read returned 0). Frames already
    /// received are still handled; then the connection reports its end.
    fn handle_eof(&mut self);

    /// The next event, firing due timers first. Call it until it returns `None`.
    #[must_use = "events must be acted on"]
    fn poll_event(&mut self, now: Instant) -> Option<Self::Event<'_>>;

    /// Bytes to send now, in order; empty when there is nothing to send.
    #[must_use]
    fn transmit(&self) -> &[u8];

    /// The first `n` bytes of [`transmit`](Self::transmit) were sent.
    fn advance_transmit(&mut self, n: usize);

    /// When the connection next needs [`poll_event`](Self::poll_event) without new input;
    /// `None`: no timer.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// Fires due timers without taking events (`poll_event` does this itself).
    fn handle_timeout(&mut self, now: Instant);

    /// Begins a graceful close; its go-away is queued at once.
    fn close(&mut self, now: Instant);

    /// Closes at once; the closed event follows.
    fn abort(&mut self);

    /// `false` once the connection has closed (or is closing).
    #[must_use]
    fn is_open(&self) -> bool;

    /// What the peer announced, once its hello has arrived.
    #[must_use]
    fn peer(&self) -> Option<PeerInfo>;

    /// Asks a growable receive buffer for room to read `additional` more bytes at once.
    fn reserve_input(&mut self, additional: usize);

    /// Gives idle buffer storage back down to `keep` bytes each, and an idle table's
    /// slots; returns whether the buffers shrank.
    fn shrink_buffers(&mut self, keep: usize) -> bool;
}

/// The inherent methods both stream connections share (bodies over their `rx: FrameDecoder`
/// and `conn: Conn` fields), expanded inside each `impl` block.
macro_rules! shared_stream_verbs {
    () => {
        /// Copies received bytes in; returns how many were taken. Fewer than offered means
        /// the receive buffer is full of frames not yet handled: call `poll_event` and
        /// send what `transmit` holds, then offer the rest again.
        #[must_use = "bytes not taken must be offered again"]
        pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> usize {
            if !self.conn.is_open() {
                return data.len();
            }
            let n = self.rx.feed(data);
            if n > 0 {
                self.conn.on_input(now);
            }
            n
        }

        /// Free receive storage to read the transport into directly; then call
        /// `commit_input`. Empty means: take events first (and do not read into it: a read
        /// into an empty slice returns 0, which is not an end of stream).
        pub fn input_buffer(&mut self) -> &mut [u8] {
            self.rx.space()
        }

        /// Marks `n` bytes read into `input_buffer` as received.
        pub fn commit_input(&mut self, now: Instant, n: usize) {
            self.rx.commit(n);
            if n > 0 {
                self.conn.on_input(now);
            }
        }

        /// The peer closed its end of the transport (a read returned 0). Frames already
        /// received are still handled; then the connection reports its end.
        pub fn handle_eof(&mut self) {
            self.conn.eof = true;
        }

        /// Bytes to send now, in order. Empty when there is nothing to send.
        #[must_use]
        pub fn transmit(&self) -> &[u8] {
            self.conn.tx.pending()
        }

        /// Reports that the first `n` bytes of `transmit` were sent.
        pub fn advance_transmit(&mut self, n: usize) {
            self.conn.tx.advance(n);
        }

        /// Closes at once, sending nothing more that was not begun; the closed event
        /// follows, and every call or request still open ends with it.
        pub fn abort(&mut self) {
            self.conn.close(CloseReason::Aborted);
        }

        /// Asks a growable receive buffer for room to read `additional` more bytes at
        /// once; see [`FrameDecoder::reserve`](crate::frame::FrameDecoder::reserve).
        pub fn reserve_input(&mut self, additional: usize) {
            self.rx.reserve(additional);
        }

        /// Gives buffer storage back down to `keep` bytes each, when nothing is buffered
        /// in either direction (only a growable [`Buffer`] actually shrinks; it grows
        /// again when a large frame comes), and the table's slots too when nothing is in
        /// flight (only a growable [`Table`](crate::table::Table) gives them back). Call
        /// it on an idle connection. Returns whether the buffers shrank.
        pub fn shrink_buffers(&mut self, keep: usize) -> bool {
            $crate::table::release_if_empty(&mut self.slots, self.in_flight);
            if self.rx.buffered() > 0 || !self.conn.tx.pending().is_empty() {
                return false;
            }
            self.rx.shrink(keep) && self.conn.tx.shrink(keep)
        }

        /// What the peer announced, once its hello has arrived.
        #[must_use]
        pub fn peer(&self) -> Option<PeerInfo> {
            self.conn.peer
        }

        /// `false` once the connection has closed (or is closing).
        #[must_use]
        pub fn is_open(&self) -> bool {
            self.conn.is_open()
        }
    };
}

/// `impl StreamConnection` for a connection type, delegating to its inherent methods.
macro_rules! impl_stream_connection {
    ($ty:ident, $slot:ty, $event:ident) => {
        impl<B, S> $crate::stream::StreamConnection for $ty<B, S>
        where
            B: Buffer,
            S: $crate::table::Table<$slot>,
        {
            type Event<'a>
                = $event<'a>
            where
                Self: 'a;

            fn handle_input(&mut self, now: Instant, data: &[u8]) -> usize {
                Self::handle_input(self, now, data)
            }
            fn input_buffer(&mut self) -> &mut [u8] {
                Self::input_buffer(self)
            }
            fn commit_input(&mut self, now: Instant, n: usize) {
                Self::commit_input(self, now, n);
            }
            fn handle_eof(&mut self) {
                Self::handle_eof(self);
            }
            fn poll_event(&mut self, now: Instant) -> Option<$event<'_>> {
                Self::poll_event(self, now)
            }
            fn transmit(&self) -> &[u8] {
                Self::transmit(self)
            }
            fn advance_transmit(&mut self, n: usize) {
                Self::advance_transmit(self, n);
            }
            fn poll_timeout(&self) -> Option<Instant> {
                Self::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                Self::handle_timeout(self, now);
            }
            fn close(&mut self, now: Instant) {
                Self::close(self, now);
            }
            fn abort(&mut self) {
                Self::abort(self);
            }
            fn is_open(&self) -> bool {
                Self::is_open(self)
            }
            fn peer(&self) -> Option<PeerInfo> {
                Self::peer(self)
            }
            fn reserve_input(&mut self, additional: usize) {
                Self::reserve_input(self, additional);
            }
            fn shrink_buffers(&mut self, keep: usize) -> bool {
                Self::shrink_buffers(self, keep)
            }
        }
    };
}

pub(crate) use {impl_stream_connection, shared_stream_verbs};
