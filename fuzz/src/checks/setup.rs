//! A connection's set-up from a script (buffer and table sizes, storage that grows, every
//! timer) and how a script moves time.

#[allow(unused_imports)]
use super::*;

/// A growable storage's starting size from one script byte: 0 = all of `max` now (fixed
/// storage); else `b - 1` bytes for `b` up to 32, and `(b - 1) * 8` above (never under
/// [`smallest_storage`]).
pub fn initial_len(b: u8, max: usize) -> usize {
    let v = usize::from(b.saturating_sub(1));
    let len = match b {
        0 => max,
        1..=32 => v,
        _ => v * 8,
    };
    len.max(smallest_storage()).min(max)
}

/// The smallest growable storage the scripts use: any size, once
/// [`KNOWN_BUG_TINY_STORAGE_STALLS`] is fixed.
pub fn smallest_storage() -> usize {
    if KNOWN_BUG_TINY_STORAGE_STALLS {
        LEN_PREFIX
    } else {
        0
    }
}

/// Connection set-up: buffer and table sizes and every timer, eleven bytes at the start of a
/// connection script. Buffers are small (1028..=2048 bytes) so that limits are hit often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Receive buffer: 1028 + 4 * this.
    pub rx: u8,
    /// Transmit buffer: 1028 + 4 * this.
    pub tx: u8,
    /// Table slots: server 4 + this % 5, client 1 + this % 8.
    pub slots: u8,
    /// `max_frame_len`: 1024 + this % 4096 (then clamped to the receive buffer).
    pub max_frame_len: u16,
    /// `max_in_flight`: server 4 + this % 8, client 1 + this % 8.
    pub max_in_flight: u8,
    /// `handshake_timeout` (see [`setup_duration`]).
    pub handshake: u8,
    /// `keepalive_interval`: 0 = none, else [`setup_duration`].
    pub keepalive_interval: u8,
    /// `keepalive_timeout` (see [`setup_duration`]).
    pub keepalive_timeout: u8,
    /// `drain_timeout` (see [`setup_duration`]).
    pub drain: u8,
    /// `busy_retry_after`: this * 100 us.
    pub busy_retry_after: u16,
    /// Both buffers' storage now ([`initial_len`]): 0 = fixed at full size, else growable.
    pub initial: u8,
}

/// A setup timer: (b + 1) * 50 ms, so 50 ms to 12.8 s.
pub fn setup_duration(b: u8) -> Duration {
    Duration::from_millis((u64::from(b) + 1) * 50)
}

impl Setup {
    /// 2048-byte buffers, a 1024-byte frame limit, the smallest tables (server: 4 slots;
    /// client: 1) and timers of a few seconds.
    pub const TYPICAL: Self = Self {
        rx: 255,
        tx: 255,
        slots: 0,
        max_frame_len: 0,
        max_in_flight: 0,
        handshake: 199,          // 10 s
        keepalive_interval: 199, // 10 s
        keepalive_timeout: 39,   // 2 s
        drain: 99,               // 5 s
        busy_retry_after: 500,   // 50 ms
        initial: 0,              // fixed storage
    };

    /// Reads a setup.
    pub fn read(input: &mut Input<'_>) -> Self {
        Self {
            rx: input.u8(),
            tx: input.u8(),
            slots: input.u8(),
            max_frame_len: input.u16(),
            max_in_flight: input.u8(),
            handshake: input.u8(),
            keepalive_interval: input.u8(),
            keepalive_timeout: input.u8(),
            drain: input.u8(),
            busy_retry_after: input.u16(),
            initial: input.u8(),
        }
    }

    /// Writes it.
    pub fn write(&self, s: &mut Script) {
        s.u8(self.rx)
            .u8(self.tx)
            .u8(self.slots)
            .u16(self.max_frame_len)
            .u8(self.max_in_flight)
            .u8(self.handshake)
            .u8(self.keepalive_interval)
            .u8(self.keepalive_timeout)
            .u8(self.drain)
            .u16(self.busy_retry_after)
            .u8(self.initial);
    }

    pub(crate) fn rx_len(&self) -> usize {
        1028 + usize::from(self.rx) * 4
    }

    pub(crate) fn storage(&self, max: usize) -> GrowBuf {
        GrowBuf::new(initial_len(self.initial, max), max)
    }

    pub(crate) fn tx_len(&self) -> usize {
        1028 + usize::from(self.tx) * 4
    }

    pub(crate) fn slot_count(&self, server: bool) -> usize {
        if server {
            4 + usize::from(self.slots % 5)
        } else {
            1 + usize::from(self.slots % 8)
        }
    }

    // Field by field from the default, so this compiles still if `Config` gains fields or
    // becomes `#[non_exhaustive]`.
    #[allow(clippy::field_reassign_with_default)]
    pub(crate) fn config(&self, server: bool) -> Config {
        let mut config = Config::default();
        config.max_frame_len = BASELINE_MAX_FRAME_LEN + u32::from(self.max_frame_len % 4096);
        config.max_in_flight = if server {
            4 + u32::from(self.max_in_flight % 8)
        } else {
            1 + u32::from(self.max_in_flight % 8)
        };
        config.handshake_timeout = setup_duration(self.handshake);
        config.keepalive_interval =
            (self.keepalive_interval != 0).then(|| setup_duration(self.keepalive_interval));
        config.keepalive_timeout = setup_duration(self.keepalive_timeout);
        config.drain_timeout = setup_duration(self.drain);
        config.busy_retry_after = Duration::from_micros(u64::from(self.busy_retry_after) * 100);
        config
    }

    /// The frame limit the connection's decoder enforces (and its hello announces).
    pub(crate) fn rx_limit(&self, server: bool) -> u32 {
        let room = u32::try_from(self.rx_len() - LEN_PREFIX).unwrap_or(u32::MAX);
        self.config(server).max_frame_len.min(room)
    }
}

/// How a time step is chosen: one byte, top two bits the unit (0: ms, 1: 100 ms, 2: s) of the
/// low six; 3: jump to the connection's next timer (low bit set: one microsecond before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// 0..=63 ms.
    Millis(u8),
    /// 0..=63 tenths of a second.
    Tenths(u8),
    /// 0..=63 s.
    Secs(u8),
    /// To `poll_timeout()`.
    NextTimer,
    /// To one microsecond before `poll_timeout()`.
    JustBeforeNextTimer,
}

impl Advance {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Self::Millis(v) => v & 63,
            Self::Tenths(v) => 0x40 | (v & 63),
            Self::Secs(v) => 0x80 | (v & 63),
            Self::NextTimer => 0xc0,
            Self::JustBeforeNextTimer => 0xc1,
        }
    }
}

pub(crate) fn read_advance(
    input: &mut Input<'_>,
    now: Instant,
    next_timer: Option<Instant>,
) -> Instant {
    let b = input.u8();
    let v = u64::from(b & 63);
    let step = match b >> 6 {
        0 => Duration::from_millis(v),
        1 => Duration::from_millis(v * 100),
        2 => Duration::from_secs(v),
        _ => {
            return match next_timer {
                Some(t) if t > now && b & 1 == 0 => t,
                Some(t) if t > now => Instant::from_micros(t.as_micros() - 1).max(now),
                _ => now.saturating_add(Duration::from_millis(1)),
            };
        }
    };
    now.saturating_add(step)
}
