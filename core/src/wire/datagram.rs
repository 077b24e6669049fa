//! The datagram header: what opens every wirecall datagram, before one frame body.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "WCAL"
//! 4       1     protocol version: the lowest that defines the frame inside (1 for
//!               every frame but a typed request, which needs 2)
//! 5       8     epoch, big-endian: the client's incarnation; a server echoes the
//!               request's epoch in its answer
//! 13      8     floor, big-endian: from a client, the lowest request id it still waits
//!               for (every lower id has ended for good); 0 from a server
//! 21      8     acks, big-endian: from a client, bit i (least significant first) set
//!               when call floor + 1 + i has ended for good too; 0 from a server
//! 29      ...   one frame body (no length prefix: the datagram's length bounds it)
//! ```
//!
//! Follows the smoltcp view/`Repr` split: [`DatagramHeader::parse`] never panics and
//! returns [`HeaderError::Truncated`] on short input; [`DatagramHeader::emit`] writes
//! exactly [`DatagramHeader::LEN`] bytes or fails with [`WireError::BufferTooSmall`].

use super::{MAGIC, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, WireError};

mod field {
    use core::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..4;
    pub(super) const VERSION: usize = 4;
    pub(super) const EPOCH: Range<usize> = 5..13;
    pub(crate) const FLOOR: Range<usize> = 13..21;
    pub(crate) const ACKS: Range<usize> = 21..29;
}

/// Where the floor sits in a datagram, so a client can refresh it in a stored request
/// before each retransmission.
pub(crate) const FLOOR_FIELD: core::ops::Range<usize> = field::FLOOR;
/// Where the acks sit, refreshed with the floor.
pub(crate) const ACKS_FIELD: core::ops::Range<usize> = field::ACKS;

/// Calls above the floor that one datagram can acknowledge: the width of
/// [`DatagramHeader::acks`].
pub const ACK_SPAN: u64 = 64;

/// The fixed header of a datagram, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DatagramHeader {
    /// The protocol version the datagram is written in.
    pub version: u8,
    /// The client incarnation the datagram belongs to.
    pub epoch: u64,
    /// From a client: every call with a lower id has ended, so the server may forget it.
    /// From a server: 0.
    pub floor: u64,
    /// From a client: bit `i` (least significant first) is set when call `floor + 1 + i`
    /// has ended too (a selective acknowledgement), so a call that lags behind does not
    /// keep the server from forgetting the ones after it. From a server: 0.
    pub acks: u64,
}

/// Why a datagram's header is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HeaderError {
    /// Shorter than the header.
    Truncated,
    /// The first four bytes are not `"WCAL"`: not a wirecall datagram.
    BadMagic,
    /// A version this implementation does not speak.
    UnsupportedVersion(u8),
}

impl core::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("datagram shorter than the 29-byte header"),
            Self::BadMagic => f.write_str("not a wirecall datagram"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
        }
    }
}

impl core::error::Error for HeaderError {}

fn be_u64(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

impl DatagramHeader {
    /// Bytes of the header.
    pub const LEN: usize = 29;

    /// A version-1 header with no acks. ([`encode_datagram`] raises the version to what
    /// the frame needs.)
    #[must_use]
    pub const fn new(epoch: u64, floor: u64) -> Self {
        Self {
            version: MIN_PROTOCOL_VERSION,
            epoch,
            floor,
            acks: 0,
        }
    }

    /// The same header with these acks.
    #[must_use]
    pub const fn with_acks(self, acks: u64) -> Self {
        Self { acks, ..self }
    }

    /// `true` when this header says call `id` has ended for good: below the floor, or
    /// acknowledged above it.
    #[must_use]
    pub fn has_ended(&self, id: u64) -> bool {
        ended(self.floor, self.acks, id)
    }

    /// Parses the header at the start of `datagram`, returning it and the frame body that
    /// follows.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when the datagram is short, foreign, or of another version.
    pub fn parse(datagram: &[u8]) -> Result<(Self, &[u8]), HeaderError> {
        let (head, body) = datagram
            .split_first_chunk::<{ Self::LEN }>()
            .ok_or(HeaderError::Truncated)?;
        if head.get(field::MAGIC) != Some(&MAGIC[..]) {
            return Err(HeaderError::BadMagic);
        }
        let version = head.get(field::VERSION).copied().unwrap_or(0);
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        let epoch = be_u64(head.get(field::EPOCH));
        let floor = be_u64(head.get(field::FLOOR));
        let acks = be_u64(head.get(field::ACKS));
        Ok((
            Self {
                version,
                epoch,
                floor,
                acks,
            },
            body,
        ))
    }

    /// Writes the header at the start of `out`.
    ///
    /// # Errors
    ///
    /// [`WireError::BufferTooSmall`] when `out` is shorter than [`Self::LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let head = out
            .first_chunk_mut::<{ Self::LEN }>()
            .ok_or(WireError::BufferTooSmall)?;
        let (magic, rest) = head.split_at_mut(4);
        magic.copy_from_slice(&MAGIC);
        let (version, rest) = rest.split_at_mut(1);
        version.fill(self.version);
        let (epoch, rest) = rest.split_at_mut(8);
        epoch.copy_from_slice(&self.epoch.to_be_bytes());
        let (floor, acks) = rest.split_at_mut(8);
        floor.copy_from_slice(&self.floor.to_be_bytes());
        acks.copy_from_slice(&self.acks.to_be_bytes());
        Ok(())
    }
}

/// Decodes the frame body of a datagram whose header said `version`: a frame that
/// version does not define (a typed request in a version-1 datagram) is
/// [`WireError::UnknownTag`], as it would be to a version-1 peer.
///
/// # Errors
///
/// [`WireError`] when the body is not one frame of that version.
pub fn decode_frame(version: u8, body: &[u8]) -> Result<super::Frame<'_>, WireError> {
    let frame = super::Frame::decode(body)?;
    if frame.version() > version {
        return Err(WireError::UnknownTag);
    }
    Ok(frame)
}

/// `true` when (`floor`, `acks`) say call `id` has ended: below the floor, or its bit set.
pub(crate) fn ended(floor: u64, acks: u64, id: u64) -> bool {
    if id < floor {
        return true;
    }
    id.checked_sub(floor)
        .and_then(|d| d.checked_sub(1))
        .filter(|bit| *bit < ACK_SPAN)
        .is_some_and(|bit| (acks >> bit) & 1 == 1)
}

/// Merges what one datagram says has ended (`floor`, `acks`) into what is known already
/// (`known_floor`, `known_acks`): the result is exactly the union of the two sets of ended
/// calls, so it only ever grows and the order datagrams come in does not matter. (A
/// client never says its floor has ended; should a peer contradict itself so, the floor
/// moves past every call said to have ended.)
pub(crate) fn merge_ended(known_floor: &mut u64, known_acks: &mut u64, floor: u64, acks: u64) {
    let ((high, high_acks), (low, low_acks)) = if floor >= *known_floor {
        ((floor, acks), (*known_floor, *known_acks))
    } else {
        ((*known_floor, *known_acks), (floor, acks))
    };
    // The lower side's bit `j` is call `low + 1 + j`: call `high` is bit `d - 1`, and the
    // calls above it are bits `d..`, which become bits `0..` above `high`.
    let d = high.saturating_sub(low);
    let bit = |bits: u64, j: u64| j < ACK_SPAN && (bits >> j) & 1 == 1;
    let mut floor_ended = d > 0 && bit(low_acks, d.saturating_sub(1));
    let mut floor = high;
    let mut acks = high_acks | if d >= ACK_SPAN { 0 } else { low_acks >> d };
    // While the floor itself has ended, it moves up past it.
    while floor_ended {
        floor = floor.saturating_add(1);
        floor_ended = acks & 1 == 1;
        acks >>= 1;
    }
    *known_floor = floor;
    *known_acks = acks;
}

/// Writes a whole datagram: `header`, then `frame`; returns its length. The header's
/// version is raised to the lowest version that defines `frame` (2 for a typed request),
/// so a datagram a version-1 peer could read is always written as version 1.
///
/// # Errors
///
/// [`WireError::BufferTooSmall`] when `out` cannot hold it.
pub fn encode_datagram(
    header: DatagramHeader,
    frame: &super::Frame<'_>,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let header = DatagramHeader {
        version: header.version.max(frame.version()),
        ..header
    };
    header.emit(out)?;
    let body = out
        .get_mut(DatagramHeader::LEN..)
        .ok_or(WireError::BufferTooSmall)?;
    let n = frame.encode(body)?;
    n.checked_add(DatagramHeader::LEN)
        .ok_or(WireError::BufferTooSmall)
}

#[cfg(test)]
mod test {
    extern crate std;
    use super::*;
    use crate::wire::{Frame, Reply, Request, RequestId, Response};
    use std::string::String;
    use std::vec::Vec;

    const EPOCH: u64 = 0x0123_4567_89ab_cdef;

    /// A client header: epoch as above, floor 300, calls 301 and 303 acknowledged.
    static HEADER_BYTES: [u8; 29] = [
        0x57, 0x43, 0x41, 0x4c, 0x01, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,
    ];

    fn hex(bytes: &[u8]) -> String {
        let parts: Vec<String> = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        parts.join(" ")
    }

    #[test]
    fn test_parse() {
        let (h, body) = DatagramHeader::parse(&HEADER_BYTES).unwrap();
        assert_eq!(
            h,
            DatagramHeader {
                version: 1,
                epoch: EPOCH,
                floor: 300,
                acks: 5,
            }
        );
        assert!(body.is_empty());
        assert!(h.has_ended(299) && h.has_ended(301) && h.has_ended(303));
        assert!(!h.has_ended(300) && !h.has_ended(302) && !h.has_ended(365));
    }

    #[test]
    fn test_merge_ended_is_a_union_in_any_order() {
        // Call i has ended in `truth` when its bit is set; a datagram tells a prefix of it.
        let says = |floor: u64, acks: u64| (floor, acks);
        let a = says(10, 0b1010); // 10 open; 12, 14 ended
        let b = says(13, 0b0001); // 13 open; 14 ended (10..13 ended)
        for (first, second) in [(a, b), (b, a)] {
            let (mut floor, mut acks) = first;
            merge_ended(&mut floor, &mut acks, second.0, second.1);
            assert_eq!((floor, acks), (13, 0b0001));
        }
        let (mut floor, mut acks) = (5, 0);
        merge_ended(&mut floor, &mut acks, 500, 1);
        assert_eq!((floor, acks), (500, 1));
        merge_ended(&mut floor, &mut acks, 5, u64::MAX);
        assert_eq!(
            (floor, acks),
            (500, 1),
            "an old datagram adds nothing past its span"
        );
        assert!(ended(500, 1, 501) && !ended(500, 1, 502) && !ended(500, 1, 500));
        // A contradiction (an older datagram acknowledged call 1, a newer one says 1 is
        // the floor): the union wins, and the floor moves past 1 and the 2 after it.
        for (first, second) in [((0, 0b011), (1, 0)), ((1, 0), (0, 0b011))] {
            let (mut floor, mut acks) = first;
            merge_ended(&mut floor, &mut acks, second.0, second.1);
            assert_eq!((floor, acks), (3, 0), "{first:?} then {second:?}");
        }
        let (mut floor, mut acks) = (1, 0b100);
        merge_ended(&mut floor, &mut acks, 0, 0b1);
        assert_eq!(
            (floor, acks),
            (2, 0b10),
            "call 1 ended: floor 2, call 4 still acked"
        );
        assert!(!ended(0, u64::MAX, u64::MAX), "no overflow at the top");
    }

    #[test]
    fn test_emit() {
        let mut out = [0u8; 29];
        DatagramHeader::new(EPOCH, 300)
            .with_acks(5)
            .emit(&mut out)
            .unwrap();
        assert_eq!(out, HEADER_BYTES);
        assert_eq!(
            DatagramHeader::new(1, 0).emit(&mut out[..28]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn test_truncated() {
        for n in 0..HEADER_BYTES.len() {
            assert_eq!(
                DatagramHeader::parse(&HEADER_BYTES[..n]),
                Err(HeaderError::Truncated)
            );
        }
    }

    #[test]
    fn test_foreign_and_version() {
        let mut b = HEADER_BYTES;
        b[0] = b'X';
        assert_eq!(DatagramHeader::parse(&b), Err(HeaderError::BadMagic));
        for v in [0, 3, 255] {
            let mut b = HEADER_BYTES;
            b[4] = v;
            assert_eq!(
                DatagramHeader::parse(&b),
                Err(HeaderError::UnsupportedVersion(v))
            );
        }
        let mut b = HEADER_BYTES;
        b[4] = 2;
        assert_eq!(DatagramHeader::parse(&b).map(|(h, _)| h.version), Ok(2));
    }

    /// A datagram's version is the lowest that defines its frame, and a frame its header's
    /// version does not define is refused.
    #[test]
    fn test_version_follows_the_frame() {
        use crate::wire::{EndpointKey, Target};
        let key = EndpointKey { path: 1, schema: 2 };
        let typed = Frame::request(RequestId(1), Target::Endpoint(key), Some(100), b"x");
        let untyped = Frame::request(RequestId(1), Target::Method("echo"), Some(100), b"x");
        let mut out = [0u8; 128];
        for (frame, version) in [(typed, 2), (untyped, 1)] {
            let n = encode_datagram(DatagramHeader::new(EPOCH, 0), &frame, &mut out).unwrap();
            let (header, body) = DatagramHeader::parse(&out[..n]).unwrap();
            assert_eq!(header.version, version);
            assert_eq!(decode_frame(header.version, body), Ok(frame));
        }
        let n = encode_datagram(DatagramHeader::new(EPOCH, 0), &typed, &mut out).unwrap();
        out[4] = 1;
        let (header, body) = DatagramHeader::parse(&out[..n]).unwrap();
        assert_eq!(
            decode_frame(header.version, body),
            Err(WireError::UnknownTag)
        );
    }

    /// The datagram vectors of `docs/PROTOCOL.md` section 11: (header, frame, bytes).
    fn vectors() -> [(DatagramHeader, Frame<'static>, &'static str); 4] {
        let id = RequestId(300);
        let client = DatagramHeader::new(EPOCH, 300).with_acks(5);
        let server = DatagramHeader::new(EPOCH, 0);
        [
            (
                client,
                Frame::Request(Request {
                    id,
                    method: "echo",
                    budget_ms: Some(1500),
                    body: b"hi",
                }),
                "57 43 41 4c 01 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 01 2c \
                 00 00 00 00 00 00 00 05 01 ac 02 04 65 63 68 6f 01 dc 0b 02 68 69",
            ),
            (
                server,
                Frame::Response(Response {
                    id,
                    reply: Reply::Ok(b"hi"),
                }),
                "57 43 41 4c 01 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 00 \
                 00 00 00 00 00 00 00 00 02 ac 02 00 02 68 69",
            ),
            (
                server,
                Frame::Response(Response {
                    id,
                    reply: Reply::Busy {
                        retry_after_ms: 200,
                    },
                }),
                "57 43 41 4c 01 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 00 \
                 00 00 00 00 00 00 00 00 02 ac 02 03 c8 01",
            ),
            (
                client,
                Frame::Cancel { id },
                "57 43 41 4c 01 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 01 2c \
                 00 00 00 00 00 00 00 05 03 ac 02",
            ),
        ]
    }

    #[test]
    fn test_protocol_md_datagram_vectors() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let mut all = std::vec![hex(&HEADER_BYTES)];
        for (header, frame, want) in vectors() {
            let want: String = want.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut out = [0u8; 64];
            let n = encode_datagram(header, &frame, &mut out).unwrap();
            assert_eq!(hex(&out[..n]), want, "{frame:?}");
            let (h, body) = DatagramHeader::parse(&out[..n]).unwrap();
            assert_eq!(h, header);
            assert_eq!(Frame::decode(body).unwrap(), frame);
            all.push(want);
        }
        for want in all {
            assert!(
                doc.lines().any(|l| l.trim() == want),
                "`{want}` missing from PROTOCOL.md"
            );
        }
    }
}
