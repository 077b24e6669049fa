//! The script format: [`Input`] reads a fuzz input as a script, [`Script`] writes one
//! (for the seed corpus), and the readers of ids, bodies, replies and frames both use.

#[allow(unused_imports)]
use super::*;

/// Reads structured values from fuzz input. Reads past the end give zeros.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub(crate) data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// No bytes left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let taken = self.bytes(N);
        out[..taken.len()].copy_from_slice(taken);
        out
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// A length byte, then that many bytes.
    pub fn blob(&mut self) -> &'a [u8] {
        let n = self.u8();
        self.bytes(usize::from(n))
    }

    /// A blob cut to its longest UTF-8 prefix.
    pub fn text(&mut self) -> &'a str {
        utf8_prefix(self.blob())
    }

    /// A `u64` that is usually small: a selector byte whose low two bits say "the other six
    /// bits are the value" (0), "a u16 follows" (1), "a u32 follows" (2) or "a u64" (3).
    pub fn int(&mut self) -> u64 {
        let s = self.u8();
        match s & 3 {
            0 => u64::from(s >> 2),
            1 => u64::from(self.u16()),
            2 => u64::from(self.u32()),
            _ => self.u64(),
        }
    }

    /// A `u32` read like [`int`](Self::int) (selector 3 also means a u32).
    pub fn int32(&mut self) -> u32 {
        let s = self.u8();
        match s & 3 {
            0 => u32::from(s >> 2),
            1 => u32::from(self.u16()),
            _ => self.u32(),
        }
    }

    /// A `u16` read like [`int`](Self::int) (any selector but 0 means a u16).
    pub fn int16(&mut self) -> u16 {
        let s = self.u8();
        match s & 3 {
            0 => u16::from(s >> 2),
            _ => self.u16(),
        }
    }
}

pub(crate) fn utf8_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Writes what [`Input`] reads: the seed-corpus generator's pen.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The script so far.
    pub bytes: Vec<u8>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }

    /// Bytes as they are, no length.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// A length byte and the bytes (at most 255).
    pub fn blob(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u8::try_from(bytes.len()).unwrap_or_else(|_| panic!("blob over 255 bytes"));
        self.u8(len).raw(bytes)
    }

    /// See [`Input::int`].
    pub fn int(&mut self, v: u64) -> &mut Self {
        if v < 64 {
            self.u8((v as u8) << 2)
        } else if let Ok(v) = u16::try_from(v) {
            self.u8(1).u16(v)
        } else if let Ok(v) = u32::try_from(v) {
            self.u8(2).u32(v)
        } else {
            self.u8(3).u64(v)
        }
    }

    /// See [`Input::int32`].
    pub fn int32(&mut self, v: u32) -> &mut Self {
        if v < 64 {
            self.u8((v as u8) << 2)
        } else if let Ok(v) = u16::try_from(v) {
            self.u8(1).u16(v)
        } else {
            self.u8(2).u32(v)
        }
    }

    /// See [`Input::int16`].
    pub fn int16(&mut self, v: u16) -> &mut Self {
        if v < 64 {
            self.u8((v as u8) << 2)
        } else {
            self.u8(1).u16(v)
        }
    }

    /// An id as a plain number (see [`read_id`]).
    pub fn id(&mut self, id: u64) -> &mut Self {
        self.u8(0).int(id)
    }

    /// A body (see [`read_body`]): up to 249 bytes as they are, longer ones must be a
    /// prefix of [`BIG`].
    pub fn body(&mut self, body: &[u8]) -> &mut Self {
        if body.len() < usize::from(BIG_BODY) {
            return self.blob(body);
        }
        assert!(BIG.starts_with(body), "a long body must be a prefix of BIG");
        self.u8(BIG_BODY).u16(body.len() as u16)
    }

    /// A reply (see [`read_reply`]).
    pub fn reply(&mut self, reply: &Reply<'_>) -> &mut Self {
        match *reply {
            Reply::Ok(body) => self.u8(0).body(body),
            Reply::Error { code, message } => self.u8(1).int32(code).blob(message.as_bytes()),
            Reply::Rejected { code, message } => self.u8(2).int16(code.0).blob(message.as_bytes()),
            Reply::Busy { retry_after_ms } => self.u8(3).int32(retry_after_ms),
        }
    }

    /// A frame (see [`read_frame`]), ids as plain numbers.
    pub fn frame(&mut self, frame: &Frame<'_>) -> &mut Self {
        match *frame {
            Frame::Hello(h) => {
                self.u8(0);
                if h.magic == MAGIC {
                    self.u8(0);
                } else {
                    self.u8(1).raw(&h.magic);
                }
                self.u8(h.min_version)
                    .u8(h.max_version)
                    .int32(h.max_frame_len)
                    .int32(h.max_in_flight)
            }
            Frame::Request(r) => {
                self.u8(1).id(r.id.0).blob(r.method.as_bytes());
                match r.budget_ms {
                    None => self.u8(0),
                    Some(ms) => self.u8(1).int32(ms),
                };
                self.body(r.body)
            }
            Frame::TypedRequest(r) => {
                self.u8(1).id(r.id.0).blob(b"");
                match r.budget_ms {
                    None => self.u8(2).int(r.key.path).int(r.key.schema),
                    Some(ms) => self.u8(3).int(r.key.path).int(r.key.schema).int32(ms),
                };
                self.body(r.body)
            }
            Frame::Response(r) => self.u8(2).id(r.id.0).reply(&r.reply),
            Frame::Cancel { id } => self.u8(3).id(id.0),
            Frame::Ping { nonce } => self.u8(4).int(nonce),
            Frame::Pong { nonce } => self.u8(5).int(nonce),
            Frame::GoAway { last_id } => self.u8(6).id(last_id.0),
            Frame::Close { code, message } => self.u8(7).int16(code.0).blob(message.as_bytes()),
        }
    }
}

/// Where ids for frames come from: a script picks one of these rather than a raw number
/// most of the time, so that ids match the ones in play (see [`read_id`]).
#[derive(Debug, Clone, Copy)]
pub struct Ids<'c> {
    /// Ids in play (requests sent, calls made).
    pub known: &'c [u64],
    /// The next fresh id.
    pub next: u64,
}

impl Ids<'_> {
    /// No ids in play; fresh ids start at 1.
    pub const NONE: Ids<'static> = Ids {
        known: &[],
        next: 1,
    };
}

/// An id: a selector byte, low two bits: 0 = a number follows ([`Input::int`]); 1 = the next
/// fresh id plus the other six bits; 2 = a known id, indexed by the other six bits; 3 = the
/// next fresh id minus one minus the other six bits (an old id).
pub fn read_id(input: &mut Input<'_>, ids: Ids<'_>) -> u64 {
    let s = input.u8();
    let small = u64::from(s >> 2);
    match s & 3 {
        0 => input.int(),
        1 => ids.next.saturating_add(small),
        2 => match ids.known.len() {
            0 => ids.next,
            n => ids.known[usize::from(s >> 2) % n],
        },
        _ => ids.next.saturating_sub(small.saturating_add(1)),
    }
}

/// Length bytes at or above this mean "a big body": a `u16` length follows, and the body is
/// that many bytes of [`BIG`] (so bodies over the frame limits cost no input).
pub const BIG_BODY: u8 = 250;

/// Filler for big bodies.
pub static BIG: [u8; 4096] = [0x5a; 4096];

/// A body: a length byte and the bytes, or a big body (see [`BIG_BODY`]).
pub fn read_body<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let n = input.u8();
    if n < BIG_BODY {
        input.bytes(usize::from(n))
    } else {
        let len = usize::from(input.u16()) % (BIG.len() + 1);
        &BIG[..len]
    }
}

/// A reply: a tag byte (mod 4: Ok, Error, Rejected, Busy), then its fields.
pub fn read_reply<'a>(input: &mut Input<'a>) -> Reply<'a> {
    match input.u8() % 4 {
        0 => Reply::Ok(read_body(input)),
        1 => {
            let code = input.int32();
            Reply::Error {
                code,
                message: input.text(),
            }
        }
        2 => {
            let code = RejectCode(input.int16());
            Reply::Rejected {
                code,
                message: input.text(),
            }
        }
        _ => Reply::Busy {
            retry_after_ms: input.int32(),
        },
    }
}

/// A frame from its fields: a tag byte (mod 8, the wire tags), then the fields in wire
/// order. A hello's magic is one byte (even: `"WCAL"`; odd: four bytes follow).
pub fn read_frame<'a>(input: &mut Input<'a>, ids: Ids<'_>) -> Frame<'a> {
    match input.u8() % 8 {
        0 => {
            let magic = if input.u8() & 1 == 0 {
                MAGIC
            } else {
                input.array()
            };
            let min_version = input.u8();
            let max_version = input.u8();
            let max_frame_len = input.int32();
            let max_in_flight = input.int32();
            Frame::Hello(Hello {
                magic,
                min_version,
                max_version,
                max_frame_len,
                max_in_flight,
            })
        }
        1 => {
            let id = RequestId(read_id(input, ids));
            let method = input.text();
            // Flag bit 1: a typed request, its key's two halves next (the text unused).
            let flags = input.u8();
            let key = (flags & 2 != 0).then(|| EndpointKey {
                path: input.int(),
                schema: input.int(),
            });
            let budget_ms = if flags & 1 == 0 {
                None
            } else {
                Some(input.int32())
            };
            let body = read_body(input);
            let target = key.map_or(Target::Method(method), Target::Endpoint);
            Frame::request(id, target, budget_ms, body)
        }
        2 => {
            let id = RequestId(read_id(input, ids));
            Frame::Response(Response {
                id,
                reply: read_reply(input),
            })
        }
        3 => Frame::Cancel {
            id: RequestId(read_id(input, ids)),
        },
        4 => Frame::Ping { nonce: input.int() },
        5 => Frame::Pong { nonce: input.int() },
        6 => Frame::GoAway {
            last_id: RequestId(read_id(input, ids)),
        },
        _ => {
            let code = CloseCode(input.int16());
            Frame::Close {
                code,
                message: input.text(),
            }
        }
    }
}

/// Appends `frame` with its length prefix.
pub fn push_frame(stream: &mut Vec<u8>, frame: &Frame<'_>) {
    let start = stream.len();
    stream.resize(start + LEN_PREFIX + frame.encoded_len(), 0);
    let n = encode_frame(frame, &mut stream[start..])
        .unwrap_or_else(|e| panic!("encode_frame into its encoded_len: {e}"));
    assert_eq!(
        start + n,
        stream.len(),
        "encoded_len disagrees with encode_frame"
    );
}
