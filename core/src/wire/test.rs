//! Byte-exact test vectors for every frame (the same bytes as `docs/PROTOCOL.md`), the
//! decoder's error cases, and property tests.
//!
//! Values are chosen so that varints take more than one byte: request id 300 is
//! `ac 02`, a budget of 1500 ms is `dc 0b`, a frame limit of 65536 is `80 80 04`.

#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use super::*;
use crate::frame::{FrameDecoder, encode_frame};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Vectors. Each `*_BYTES` is one frame body (no length prefix); each `*_FRAME` its value.
// ---------------------------------------------------------------------------------------

/// Hello: "WCAL", versions 1..=2, frames up to 65536 bytes, 200 requests in flight.
static HELLO_BYTES: [u8; 12] = [
    0x00, // tag 0: Hello
    0x57, 0x43, 0x41, 0x4c, // magic "WCAL"
    0x01, // min_version 1
    0x02, // max_version 2
    0x80, 0x80, 0x04, // max_frame_len 65536
    0xc8, 0x01, // max_in_flight 200
];
const HELLO_FRAME: Frame<'static> = Frame::Hello(Hello {
    magic: MAGIC,
    min_version: 1,
    max_version: 2,
    max_frame_len: 65536,
    max_in_flight: 200,
});

/// Request #300 "echo" with a 1500 ms budget and body "hi".
static REQUEST_BYTES: [u8; 14] = [
    0x01, // tag 1: Request
    0xac, 0x02, // id 300
    0x04, 0x65, 0x63, 0x68, 0x6f, // method: length 4, "echo"
    0x01, 0xdc, 0x0b, // budget_ms: Some(1500)
    0x02, 0x68, 0x69, // body: length 2, "hi"
];
const REQUEST_FRAME: Frame<'static> = Frame::Request(Request {
    id: RequestId(300),
    method: "echo",
    budget_ms: Some(1500),
    body: b"hi",
});

/// Typed request #302 (version 2) for the endpoint at path "kv/get" (FNV-1a 64
/// `1ea0363be9671c13`) with schema key `0123456789abcdef`, a 1500 ms budget and body "hi".
static TYPED_REQUEST_BYTES: [u8; 25] = [
    0x08, // tag 8: TypedRequest
    0xae, 0x02, // id 302
    0x1e, 0xa0, 0x36, 0x3b, 0xe9, 0x67, 0x1c, 0x13, // key.path, 8 bytes big-endian
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, // key.schema, 8 bytes big-endian
    0x01, 0xdc, 0x0b, // budget_ms: Some(1500)
    0x02, 0x68, 0x69, // body: length 2, "hi"
];
const TYPED_REQUEST_FRAME: Frame<'static> = Frame::TypedRequest(TypedRequest {
    id: RequestId(302),
    key: EndpointKey {
        path: 0x1ea0_363b_e967_1c13,
        schema: 0x0123_4567_89ab_cdef,
    },
    budget_ms: Some(1500),
    body: b"hi",
});

/// Request #301 "echo" without a budget, body "hi".
static REQUEST_NO_BUDGET_BYTES: [u8; 12] = [
    0x01, // tag 1: Request
    0xad, 0x02, // id 301
    0x04, 0x65, 0x63, 0x68, 0x6f, // method: length 4, "echo"
    0x00, // budget_ms: None
    0x02, 0x68, 0x69, // body: length 2, "hi"
];
const REQUEST_NO_BUDGET_FRAME: Frame<'static> = Frame::Request(Request {
    id: RequestId(301),
    method: "echo",
    budget_ms: None,
    body: b"hi",
});

/// Response to #300: Ok, body "hi".
static RESPONSE_OK_BYTES: [u8; 7] = [
    0x02, // tag 2: Response
    0xac, 0x02, // id 300
    0x00, // reply tag 0: Ok
    0x02, 0x68, 0x69, // body: length 2, "hi"
];
const RESPONSE_OK_FRAME: Frame<'static> = Frame::Response(Response {
    id: RequestId(300),
    reply: Reply::Ok(b"hi"),
});

/// Response to #300: Error, application code 1000, message "oops".
static RESPONSE_ERROR_BYTES: [u8; 11] = [
    0x02, // tag 2: Response
    0xac, 0x02, // id 300
    0x01, // reply tag 1: Error
    0xe8, 0x07, // code 1000
    0x04, 0x6f, 0x6f, 0x70, 0x73, // message: length 4, "oops"
];
const RESPONSE_ERROR_FRAME: Frame<'static> = Frame::Response(Response {
    id: RequestId(300),
    reply: Reply::Error {
        code: 1000,
        message: "oops",
    },
});

/// Response to #300: Error, the reserved `ERROR_ANSWER_TOO_LARGE`, with the message a
/// stream server sends.
static RESPONSE_TOO_LARGE_BYTES: [u8; 47] = [
    0x02, // tag 2: Response
    0xac, 0x02, // id 300
    0x01, // reply tag 1: Error
    0x80, 0xfe, 0xff, 0xff, 0x0f, // code 0xffffff00
    0x25, // message: length 37, "answer larger than the client accepts"
    0x61, 0x6e, 0x73, 0x77, 0x65, 0x72, 0x20, 0x6c, 0x61, 0x72, 0x67, 0x65, 0x72, 0x20, 0x74, 0x68,
    0x61, 0x6e, 0x20, 0x74, 0x68, 0x65, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x20, 0x61, 0x63,
    0x63, 0x65, 0x70, 0x74, 0x73,
];
const RESPONSE_TOO_LARGE_FRAME: Frame<'static> = Frame::Response(Response {
    id: RequestId(300),
    reply: Reply::Error {
        code: super::ERROR_ANSWER_TOO_LARGE,
        message: "answer larger than the client accepts",
    },
});

/// Response to #300: Rejected, `DEADLINE_EXCEEDED` (2), message "late".
static RESPONSE_REJECTED_BYTES: [u8; 10] = [
    0x02, // tag 2: Response
    0xac, 0x02, // id 300
    0x02, // reply tag 2: Rejected
    0x02, // code 2 (DEADLINE_EXCEEDED)
    0x04, 0x6c, 0x61, 0x74, 0x65, // message: length 4, "late"
];
const RESPONSE_REJECTED_FRAME: Frame<'static> = Frame::Response(Response {
    id: RequestId(300),
    reply: Reply::Rejected {
        code: RejectCode::DEADLINE_EXCEEDED,
        message: "late",
    },
});

/// Response to #300: Busy, retry after 200 ms.
static RESPONSE_BUSY_BYTES: [u8; 6] = [
    0x02, // tag 2: Response
    0xac, 0x02, // id 300
    0x03, // reply tag 3: Busy
    0xc8, 0x01, // retry_after_ms 200
];
const RESPONSE_BUSY_FRAME: Frame<'static> = Frame::Response(Response {
    id: RequestId(300),
    reply: Reply::Busy {
        retry_after_ms: 200,
    },
});

/// Cancel #300.
static CANCEL_BYTES: [u8; 3] = [
    0x03, // tag 3: Cancel
    0xac, 0x02, // id 300
];
const CANCEL_FRAME: Frame<'static> = Frame::Cancel { id: RequestId(300) };

/// Ping with nonce 2^64 - 1: the longest u64 varint, ten bytes.
static PING_BYTES: [u8; 11] = [
    0x04, // tag 4: Ping
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, // nonce u64::MAX
];
const PING_FRAME: Frame<'static> = Frame::Ping { nonce: u64::MAX };

/// Pong with nonce 1000000.
static PONG_BYTES: [u8; 4] = [
    0x05, // tag 5: Pong
    0xc0, 0x84, 0x3d, // nonce 1000000
];
const PONG_FRAME: Frame<'static> = Frame::Pong { nonce: 1_000_000 };

/// `GoAway`, last id 300.
static GOAWAY_BYTES: [u8; 3] = [
    0x06, // tag 6: GoAway
    0xac, 0x02, // last_id 300
];
const GOAWAY_FRAME: Frame<'static> = Frame::GoAway {
    last_id: RequestId(300),
};

/// Close, `PROTOCOL_VIOLATION` (1), message "malformed frame".
static CLOSE_BYTES: [u8; 18] = [
    0x07, // tag 7: Close
    0x01, // code 1 (PROTOCOL_VIOLATION)
    0x0f, // message length 15
    0x6d, 0x61, 0x6c, 0x66, 0x6f, 0x72, 0x6d, 0x65, 0x64, // "malformed"
    0x20, 0x66, 0x72, 0x61, 0x6d, 0x65, // " frame"
];
const CLOSE_FRAME: Frame<'static> = Frame::Close {
    code: CloseCode::PROTOCOL_VIOLATION,
    message: "malformed frame",
};

/// Every vector: name, bytes, value.
fn vectors() -> [(&'static str, &'static [u8], Frame<'static>); 15] {
    [
        ("hello", &HELLO_BYTES, HELLO_FRAME),
        ("request", &REQUEST_BYTES, REQUEST_FRAME),
        (
            "request_no_budget",
            &REQUEST_NO_BUDGET_BYTES,
            REQUEST_NO_BUDGET_FRAME,
        ),
        ("response_ok", &RESPONSE_OK_BYTES, RESPONSE_OK_FRAME),
        (
            "response_error",
            &RESPONSE_ERROR_BYTES,
            RESPONSE_ERROR_FRAME,
        ),
        (
            "response_too_large",
            &RESPONSE_TOO_LARGE_BYTES,
            RESPONSE_TOO_LARGE_FRAME,
        ),
        (
            "response_rejected",
            &RESPONSE_REJECTED_BYTES,
            RESPONSE_REJECTED_FRAME,
        ),
        ("response_busy", &RESPONSE_BUSY_BYTES, RESPONSE_BUSY_FRAME),
        ("cancel", &CANCEL_BYTES, CANCEL_FRAME),
        ("ping", &PING_BYTES, PING_FRAME),
        ("pong", &PONG_BYTES, PONG_FRAME),
        ("goaway", &GOAWAY_BYTES, GOAWAY_FRAME),
        ("close", &CLOSE_BYTES, CLOSE_FRAME),
        ("typed_request", &TYPED_REQUEST_BYTES, TYPED_REQUEST_FRAME),
        // The stream form of the request, checked separately in `test_stream_encode`.
        ("request_stream", &REQUEST_STREAM_BYTES, REQUEST_FRAME),
    ]
}

/// The body vectors only (without the stream form).
fn body_vectors() -> impl Iterator<Item = (&'static str, &'static [u8], Frame<'static>)> {
    vectors()
        .into_iter()
        .filter(|(name, _, _)| *name != "request_stream")
}

/// Encodes `frame` into a fresh buffer and returns exactly the bytes written.
fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = frame.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn check_encode(bytes: &[u8], frame: Frame<'_>) {
    assert_eq!(encode(&frame), bytes);
}

fn check_decode(bytes: &[u8], frame: Frame<'_>) {
    assert_eq!(Frame::decode(bytes), Ok(frame));
}

// ---------------------------------------------------------------------------------------
// Encode / decode, one pair per vector.
// ---------------------------------------------------------------------------------------

#[test]
fn test_hello_encode() {
    check_encode(&HELLO_BYTES, HELLO_FRAME);
}

#[test]
fn test_hello_decode() {
    check_decode(&HELLO_BYTES, HELLO_FRAME);
}

#[test]
fn test_request_encode() {
    check_encode(&REQUEST_BYTES, REQUEST_FRAME);
}

#[test]
fn test_request_decode() {
    check_decode(&REQUEST_BYTES, REQUEST_FRAME);
    // The decoded frame borrows its method and body from the input.
    let Ok(Frame::Request(req)) = Frame::decode(&REQUEST_BYTES) else {
        panic!("not a request")
    };
    assert!(core::ptr::eq(
        req.body.as_ptr(),
        REQUEST_BYTES[12..].as_ptr()
    ));
    assert!(core::ptr::eq(
        req.method.as_ptr(),
        REQUEST_BYTES[4..].as_ptr()
    ));
}

#[test]
fn test_request_no_budget_encode() {
    check_encode(&REQUEST_NO_BUDGET_BYTES, REQUEST_NO_BUDGET_FRAME);
}

#[test]
fn test_request_no_budget_decode() {
    check_decode(&REQUEST_NO_BUDGET_BYTES, REQUEST_NO_BUDGET_FRAME);
}

#[test]
fn test_response_ok_encode() {
    check_encode(&RESPONSE_OK_BYTES, RESPONSE_OK_FRAME);
}

#[test]
fn test_response_ok_decode() {
    check_decode(&RESPONSE_OK_BYTES, RESPONSE_OK_FRAME);
}

#[test]
fn test_response_error_encode() {
    check_encode(&RESPONSE_ERROR_BYTES, RESPONSE_ERROR_FRAME);
}

#[test]
fn test_response_error_decode() {
    check_decode(&RESPONSE_ERROR_BYTES, RESPONSE_ERROR_FRAME);
}

#[test]
fn test_response_rejected_encode() {
    check_encode(&RESPONSE_REJECTED_BYTES, RESPONSE_REJECTED_FRAME);
}

#[test]
fn test_response_rejected_decode() {
    check_decode(&RESPONSE_REJECTED_BYTES, RESPONSE_REJECTED_FRAME);
}

#[test]
fn test_response_busy_encode() {
    check_encode(&RESPONSE_BUSY_BYTES, RESPONSE_BUSY_FRAME);
}

#[test]
fn test_response_busy_decode() {
    check_decode(&RESPONSE_BUSY_BYTES, RESPONSE_BUSY_FRAME);
}

#[test]
fn test_cancel_encode() {
    check_encode(&CANCEL_BYTES, CANCEL_FRAME);
}

#[test]
fn test_cancel_decode() {
    check_decode(&CANCEL_BYTES, CANCEL_FRAME);
}

#[test]
fn test_ping_encode() {
    check_encode(&PING_BYTES, PING_FRAME);
}

#[test]
fn test_ping_decode() {
    check_decode(&PING_BYTES, PING_FRAME);
}

#[test]
fn test_pong_encode() {
    check_encode(&PONG_BYTES, PONG_FRAME);
}

#[test]
fn test_pong_decode() {
    check_decode(&PONG_BYTES, PONG_FRAME);
}

#[test]
fn test_goaway_encode() {
    check_encode(&GOAWAY_BYTES, GOAWAY_FRAME);
}

#[test]
fn test_goaway_decode() {
    check_decode(&GOAWAY_BYTES, GOAWAY_FRAME);
}

#[test]
fn test_close_encode() {
    check_encode(&CLOSE_BYTES, CLOSE_FRAME);
}

#[test]
fn test_close_decode() {
    check_decode(&CLOSE_BYTES, CLOSE_FRAME);
}

// ---------------------------------------------------------------------------------------
// Stream form: 4-byte big-endian length prefix, then the body.
// ---------------------------------------------------------------------------------------

/// `REQUEST_BYTES` as it travels on a stream.
static REQUEST_STREAM_BYTES: [u8; 18] = [
    0x00, 0x00, 0x00, 0x0e, // body length 14, big-endian u32
    0x01, 0xac, 0x02, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x01, 0xdc, 0x0b, 0x02, 0x68, 0x69,
];

#[test]
fn test_stream_encode() {
    let mut buf = [0u8; 64];
    let n = encode_frame(&REQUEST_FRAME, &mut buf).unwrap();
    assert_eq!(&buf[..n], &REQUEST_STREAM_BYTES[..]);
    assert_eq!(&REQUEST_STREAM_BYTES[LEN_PREFIX..], &REQUEST_BYTES[..]);
}

#[test]
fn test_stream_decode() {
    // Two frames back to back, fed one byte at a time.
    let mut stream = REQUEST_STREAM_BYTES.to_vec();
    let mut buf = [0u8; 64];
    let n = encode_frame(&CLOSE_FRAME, &mut buf).unwrap();
    assert_eq!(&buf[..LEN_PREFIX], &[0, 0, 0, 18]);
    stream.extend_from_slice(&buf[..n]);

    let mut decoder = FrameDecoder::new([0u8; 64], 32);
    let mut frames = Vec::new();
    for byte in &stream {
        assert_eq!(decoder.feed(core::slice::from_ref(byte)), 1);
        if let Some(body) = decoder.next_frame().unwrap() {
            frames.push(body.to_vec());
        }
    }
    assert_eq!(frames, [REQUEST_BYTES.to_vec(), CLOSE_BYTES.to_vec()]);
    assert_eq!(Frame::decode(&frames[0]), Ok(REQUEST_FRAME));
    assert_eq!(Frame::decode(&frames[1]), Ok(CLOSE_FRAME));
}

#[test]
fn test_stream_encode_buffer_too_small() {
    for len in 0..REQUEST_STREAM_BYTES.len() {
        let mut buf = vec![0u8; len];
        assert_eq!(
            encode_frame(&REQUEST_FRAME, &mut buf),
            Err(WireError::BufferTooSmall),
            "{len}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Decoding errors.
// ---------------------------------------------------------------------------------------

#[test]
fn test_truncated() {
    for (name, bytes, _) in body_vectors() {
        for len in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&bytes[..len]),
                Err(WireError::Truncated),
                "{name} cut to {len} bytes"
            );
        }
    }
}

#[test]
fn test_trailing_bytes() {
    for (name, bytes, _) in body_vectors() {
        for extra in [0x00, 0x01, 0xff] {
            let mut long = bytes.to_vec();
            long.push(extra);
            assert_eq!(
                Frame::decode(&long),
                Err(WireError::TrailingBytes),
                "{name} + {extra}"
            );
        }
    }
}

#[test]
fn test_empty() {
    assert_eq!(Frame::decode(&[]), Err(WireError::Truncated));
}

#[test]
fn test_unknown_tag() {
    // Frame tag 9 and beyond (tag 8 is version 2's typed request).
    assert_eq!(Frame::decode(&[0x09]), Err(WireError::UnknownTag));
    assert_eq!(
        Frame::decode(&[0x09, 0xac, 0x02]),
        Err(WireError::UnknownTag)
    );
    assert_eq!(Frame::decode(&[0x08]), Err(WireError::Truncated));
    assert_eq!(Frame::decode(&[0x7f]), Err(WireError::UnknownTag));
    assert_eq!(Frame::decode(&[0x80, 0x01]), Err(WireError::UnknownTag)); // tag 128
    // Reply tag 4 in a response to #300.
    assert_eq!(
        Frame::decode(&[0x02, 0xac, 0x02, 0x04, 0x00]),
        Err(WireError::UnknownTag)
    );
    assert_eq!(
        Frame::decode(&[0x02, 0xac, 0x02, 0x04]),
        Err(WireError::UnknownTag)
    );
    // A tag is a u32 varint: one over u32::MAX is a bad varint, not an unknown tag.
    assert_eq!(
        Frame::decode(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
        Err(WireError::BadVarint)
    );
    assert_eq!(
        Frame::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(WireError::UnknownTag)
    );
}

#[test]
fn test_bad_option_flag() {
    let mut bytes = REQUEST_BYTES;
    assert_eq!(bytes[8], 0x01); // the budget's Option byte
    for flag in [0x02, 0x80, 0xff] {
        bytes[8] = flag;
        assert_eq!(
            Frame::decode(&bytes),
            Err(WireError::BadFlag),
            "flag {flag:#x}"
        );
    }
}

#[test]
fn test_bad_utf8_method() {
    // "ech" + 0xff: not UTF-8.
    let mut bytes = REQUEST_BYTES;
    bytes[7] = 0xff;
    assert_eq!(Frame::decode(&bytes), Err(WireError::BadUtf8));
    // A lone continuation byte in the error message, and a truncated sequence in a close.
    let mut error = RESPONSE_ERROR_BYTES;
    error[7] = 0x80;
    assert_eq!(Frame::decode(&error), Err(WireError::BadUtf8));
    assert_eq!(
        Frame::decode(&[0x07, 0x01, 0x01, 0xc3]),
        Err(WireError::BadUtf8)
    );
    // The body is opaque: any bytes.
    let mut body = REQUEST_BYTES;
    body[12] = 0xff;
    assert!(Frame::decode(&body).is_ok());
}

#[test]
fn test_overlong_varint() {
    // u64 (request id, nonce): at most 10 bytes, the 10th at most 0x01.
    let mut eleven = vec![0x03];
    eleven.extend_from_slice(&[0x80; 10]);
    eleven.push(0x00);
    assert_eq!(Frame::decode(&eleven), Err(WireError::BadVarint));
    let mut too_big = PING_BYTES;
    too_big[10] = 0x02; // 2^64
    assert_eq!(Frame::decode(&too_big), Err(WireError::BadVarint));

    // u32 (budget, code, limits): at most 5 bytes, the 5th at most 0x0f.
    let budget = |tail: &[u8]| {
        let mut b = vec![0x01, 0xac, 0x02, 0x00, 0x01];
        b.extend_from_slice(tail);
        b.push(0x00); // empty body
        match Frame::decode(&b) {
            Ok(Frame::Request(req)) => Ok(req.budget_ms),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(budget(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(Some(u32::MAX)));
    assert_eq!(
        budget(&[0xff, 0xff, 0xff, 0xff, 0x10]),
        Err(WireError::BadVarint)
    ); // 2^32
    assert_eq!(
        budget(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Err(WireError::BadVarint)
    );

    // u16 (reject and close codes): at most 3 bytes, the 3rd at most 0x03.
    let close = |code: &[u8]| {
        let mut b = vec![0x07];
        b.extend_from_slice(code);
        b.push(0x00); // empty message
        match Frame::decode(&b) {
            Ok(Frame::Close { code, .. }) => Ok(code),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(close(&[0xff, 0xff, 0x03]), Ok(CloseCode(u16::MAX)));
    assert_eq!(close(&[0xff, 0xff, 0x04]), Err(WireError::BadVarint)); // 2^16
    assert_eq!(close(&[0x80, 0x80, 0x80, 0x00]), Err(WireError::BadVarint));
}

/// What the decoder actually does with a varint that has redundant zero groups but fits
/// its type's byte limit: it accepts it. Encoders always write the shortest form, so such
/// bytes do not survive a decode/encode round trip.
#[test]
fn test_noncanonical_varint_accepted() {
    // Cancel #0 as 0x80 0x00, and #300 as ac 82 80 00.
    assert_eq!(
        Frame::decode(&[0x03, 0x80, 0x00]),
        Ok(Frame::Cancel { id: RequestId(0) })
    );
    let padded = [0x03, 0xac, 0x82, 0x80, 0x00];
    assert_eq!(Frame::decode(&padded), Ok(CANCEL_FRAME));
    assert_eq!(encode(&CANCEL_FRAME), CANCEL_BYTES);
    // The same for a u16 code (3 bytes max): 1 as 81 80 00.
    assert_eq!(
        Frame::decode(&[0x07, 0x81, 0x80, 0x00, 0x00]),
        Ok(Frame::Close {
            code: CloseCode(1),
            message: ""
        })
    );
    // And for the frame tag itself: Ping as 84 00.
    assert_eq!(
        Frame::decode(&[0x84, 0x00, 0x07]),
        Ok(Frame::Ping { nonce: 7 })
    );
}

#[test]
fn test_length_past_end() {
    // A method length of 200 with 4 bytes behind it.
    let bytes = [0x01, 0xac, 0x02, 0xc8, 0x01, 0x65, 0x63, 0x68, 0x6f];
    assert_eq!(Frame::decode(&bytes), Err(WireError::Truncated));
    // A body length of 2^63.
    let mut huge = vec![0x01, 0x01, 0x00, 0x00];
    huge.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(Frame::decode(&huge).is_err());
}

// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------

#[test]
fn test_encode_buffer_too_small() {
    for (name, bytes, frame) in body_vectors() {
        for len in 0..bytes.len() {
            let mut buf = vec![0u8; len];
            assert_eq!(
                frame.encode(&mut buf),
                Err(WireError::BufferTooSmall),
                "{name} in {len}"
            );
        }
        // Exactly enough is enough.
        let mut buf = vec![0u8; bytes.len()];
        assert_eq!(frame.encode(&mut buf), Ok(bytes.len()), "{name}");
        assert_eq!(buf, bytes);
    }
}

#[test]
fn test_encoded_len_matches() {
    for (name, bytes, frame) in body_vectors() {
        assert_eq!(frame.encoded_len(), bytes.len(), "{name}");
    }
    assert_eq!(
        REQUEST_FRAME.encoded_len() + LEN_PREFIX,
        REQUEST_STREAM_BYTES.len()
    );
}

/// The largest hello fits in `MAX_HELLO_LEN`, so the "first frame longer than that is not
/// wirecall" rule never refuses a real hello.
#[test]
fn test_max_hello_len() {
    let largest = Frame::Hello(Hello {
        magic: MAGIC,
        min_version: u8::MAX,
        max_version: u8::MAX,
        max_frame_len: u32::MAX,
        max_in_flight: u32::MAX,
    });
    assert_eq!(largest.encoded_len(), 17);
    assert!(largest.encoded_len() <= MAX_HELLO_LEN as usize);
}

/// The numbers `docs/PROTOCOL.md` gives for constants and codes.
#[test]
fn test_constants_and_codes() {
    assert_eq!(&MAGIC, b"WCAL");
    assert_eq!(PROTOCOL_VERSION, 2);
    assert_eq!(MIN_PROTOCOL_VERSION, 1);
    assert_eq!(TYPED_VERSION, 2);
    assert_eq!(TYPED_REQUEST_FRAME.version(), 2);
    assert_eq!(REQUEST_FRAME.version(), 1);
    assert_eq!(LEN_PREFIX, 4);
    assert_eq!(BASELINE_MAX_FRAME_LEN, 1024);
    assert_eq!(BASELINE_MAX_IN_FLIGHT, 4);
    assert_eq!(MAX_HELLO_LEN, 32);

    let reject = [
        (RejectCode::UNKNOWN_METHOD, 1),
        (RejectCode::DEADLINE_EXCEEDED, 2),
        (RejectCode::SHUTTING_DOWN, 3),
        (RejectCode::INVALID_REQUEST, 4),
        (RejectCode::TOO_LARGE, 5),
        (RejectCode::SCHEMA_MISMATCH, 6),
    ];
    for (code, n) in reject {
        assert_eq!(code.0, n);
        assert!(code.name().is_some());
    }
    assert_eq!(RejectCode(256).name(), None);

    let close = [
        (CloseCode::PROTOCOL_VIOLATION, 1),
        (CloseCode::UNSUPPORTED_VERSION, 2),
        (CloseCode::FRAME_TOO_LARGE, 3),
        (CloseCode::NOT_WIRECALL, 4),
        (CloseCode::HANDSHAKE_TIMEOUT, 5),
        (CloseCode::KEEPALIVE_TIMEOUT, 6),
        (CloseCode::DRAIN_TIMEOUT, 7),
        (CloseCode::REFUSED, 8),
        (CloseCode::FRAME_TIMEOUT, 9),
        (CloseCode::NOT_ALLOWED, 10),
    ];
    for (code, n) in close {
        assert_eq!(code.0, n);
        assert!(code.name().is_some());
    }
    let reserved = [
        (super::ERROR_ANSWER_TOO_LARGE, 0xffff_ff00),
        (super::ERROR_FUNCTION_PANICKED, 0xffff_ff01),
        (super::ERROR_NO_ANSWER, 0xffff_ff02),
        (super::ERROR_ANSWER_NOT_ENCODABLE, 0xffff_ff03),
    ];
    for (code, n) in reserved {
        assert_eq!(code, n);
        assert!(super::RESERVED_ERROR_CODES.contains(&code));
        assert!(super::reserved_error_name(code).is_some());
    }
    assert_eq!(*super::RESERVED_ERROR_CODES.start(), 0xffff_ff00);
    assert_eq!(super::reserved_error_name(1000), None);
    // An unknown code is still a valid frame.
    assert_eq!(
        Frame::decode(&[0x07, 0x80, 0x02, 0x00]),
        Ok(Frame::Close {
            code: CloseCode(256),
            message: ""
        })
    );
}

/// Every vector appears, byte for byte, in `docs/PROTOCOL.md` (lowercase hex, one space
/// between bytes, on one line).
#[test]
fn test_protocol_md_vectors() {
    let doc = include_str!("../../../docs/PROTOCOL.md");
    for (name, bytes, _) in vectors() {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let hex = hex.join(" ");
        assert!(
            doc.lines().any(|line| line.trim() == hex),
            "vector {name} (`{hex}`) is not on a line of its own in docs/PROTOCOL.md"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------

/// A frame's fields with owned storage, so proptest can generate them.
#[derive(Debug, Clone)]
enum OwnedFrame {
    Hello(Hello),
    Request {
        id: u64,
        method: String,
        budget_ms: Option<u32>,
        body: Vec<u8>,
    },
    Typed {
        id: u64,
        key: (u64, u64),
        budget_ms: Option<u32>,
        body: Vec<u8>,
    },
    Ok {
        id: u64,
        body: Vec<u8>,
    },
    Error {
        id: u64,
        code: u32,
        message: String,
    },
    Rejected {
        id: u64,
        code: u16,
        message: String,
    },
    Busy {
        id: u64,
        retry_after_ms: u32,
    },
    Cancel(u64),
    Ping(u64),
    Pong(u64),
    GoAway(u64),
    Close {
        code: u16,
        message: String,
    },
}

impl OwnedFrame {
    fn frame(&self) -> Frame<'_> {
        let response = |id: &u64, reply| {
            Frame::Response(Response {
                id: RequestId(*id),
                reply,
            })
        };
        match self {
            Self::Hello(hello) => Frame::Hello(*hello),
            Self::Request {
                id,
                method,
                budget_ms,
                body,
            } => Frame::Request(Request {
                id: RequestId(*id),
                method,
                budget_ms: *budget_ms,
                body,
            }),
            Self::Typed {
                id,
                key,
                budget_ms,
                body,
            } => Frame::TypedRequest(TypedRequest {
                id: RequestId(*id),
                key: EndpointKey {
                    path: key.0,
                    schema: key.1,
                },
                budget_ms: *budget_ms,
                body,
            }),
            Self::Ok { id, body } => response(id, Reply::Ok(body)),
            Self::Error { id, code, message } => response(
                id,
                Reply::Error {
                    code: *code,
                    message,
                },
            ),
            Self::Rejected { id, code, message } => response(
                id,
                Reply::Rejected {
                    code: RejectCode(*code),
                    message,
                },
            ),
            Self::Busy { id, retry_after_ms } => response(
                id,
                Reply::Busy {
                    retry_after_ms: *retry_after_ms,
                },
            ),
            Self::Cancel(id) => Frame::Cancel { id: RequestId(*id) },
            Self::Ping(nonce) => Frame::Ping { nonce: *nonce },
            Self::Pong(nonce) => Frame::Pong { nonce: *nonce },
            Self::GoAway(id) => Frame::GoAway {
                last_id: RequestId(*id),
            },
            Self::Close { code, message } => Frame::Close {
                code: CloseCode(*code),
                message,
            },
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

/// An id: as often short (one to three varint bytes) as of any size, so both the short
/// and the long forms are tried.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![0..128u64, 0..1u64 << 21, any::<u64>()]
}

/// A budget: none, short, or any.
fn budget() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        (0..1u32 << 14).prop_map(Some),
        any::<Option<u32>>()
    ]
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..300)
}

fn owned_frame() -> impl Strategy<Value = OwnedFrame> {
    let hello = (
        any::<[u8; 4]>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(magic, min_version, max_version, max_frame_len, max_in_flight)| {
                OwnedFrame::Hello(Hello {
                    magic,
                    min_version,
                    max_version,
                    max_frame_len,
                    max_in_flight,
                })
            },
        );
    prop_oneof![
        hello,
        (id(), text(), budget(), blob()).prop_map(|(id, method, budget_ms, body)| {
            OwnedFrame::Request {
                id,
                method,
                budget_ms,
                body,
            }
        }),
        (id(), any::<(u64, u64)>(), budget(), blob()).prop_map(|(id, key, budget_ms, body)| {
            OwnedFrame::Typed {
                id,
                key,
                budget_ms,
                body,
            }
        }),
        (id(), blob()).prop_map(|(id, body)| OwnedFrame::Ok { id, body }),
        (any::<u64>(), any::<u32>(), text()).prop_map(|(id, code, message)| OwnedFrame::Error {
            id,
            code,
            message
        }),
        (any::<u64>(), any::<u16>(), text()).prop_map(|(id, code, message)| OwnedFrame::Rejected {
            id,
            code,
            message
        }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(id, retry_after_ms)| OwnedFrame::Busy { id, retry_after_ms }),
        any::<u64>().prop_map(OwnedFrame::Cancel),
        any::<u64>().prop_map(OwnedFrame::Ping),
        any::<u64>().prop_map(OwnedFrame::Pong),
        any::<u64>().prop_map(OwnedFrame::GoAway),
        (any::<u16>(), text()).prop_map(|(code, message)| OwnedFrame::Close { code, message }),
    ]
}

proptest! {
    /// Any frame encodes to `encoded_len` bytes that decode to the same frame, as a body
    /// and through the stream framing.
    #[test]
    fn prop_round_trip(owned in owned_frame()) {
        let frame = owned.frame();
        let mut buf = [0u8; 1024];
        let n = frame.encode(&mut buf).unwrap();
        prop_assert_eq!(n, frame.encoded_len());
        prop_assert_eq!(Frame::decode(&buf[..n]), Ok(frame));
        // One byte short never fits.
        prop_assert_eq!(frame.encode(&mut buf[..n - 1]), Err(WireError::BufferTooSmall));

        let mut wire = [0u8; 1024];
        let m = encode_frame(&frame, &mut wire).unwrap();
        prop_assert_eq!(m, n + LEN_PREFIX);
        let len = u32::try_from(n).unwrap();
        prop_assert_eq!(&wire[..LEN_PREFIX], &len.to_be_bytes()[..]);
        let mut decoder = FrameDecoder::new([0u8; 1024], 1020);
        prop_assert_eq!(decoder.feed(&wire[..m]), m);
        let body = decoder.next_frame().unwrap().unwrap();
        prop_assert_eq!(Frame::decode(body), Ok(frame));
    }

    /// The hand-written encoders of the call frames write what postcard writes, byte for
    /// byte, and fail alike (too small) for every buffer size short of the frame.
    #[test]
    fn prop_hand_encoders_match_postcard(owned in owned_frame()) {
        let frame = owned.frame();
        let mut ours = [0u8; 1024];
        let mut theirs = [0u8; 1024];
        let n = frame.encode_serde(&mut theirs).unwrap();
        prop_assert_eq!(frame.encode(&mut ours), Ok(n));
        prop_assert_eq!(&ours[..n], &theirs[..n]);
        for short in 0..n {
            prop_assert_eq!(frame.encode(&mut ours[..short]), Err(WireError::BufferTooSmall));
        }
    }

    /// Whatever the hand-written decoder takes, postcard decodes to the same frame: on
    /// valid call frames (which it takes), and on them with a byte changed, cut short or
    /// extended.
    #[test]
    fn prop_hand_decoder_agrees_with_postcard(
        owned in owned_frame(),
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let frame = owned.frame();
        let body = encode(&frame);
        // The plain form it takes: ids below 2^63, budgets below 2^28.
        let plain_budget = |b: Option<u32>| b.is_none_or(|b| b < 1 << 28);
        let taken = match frame {
            Frame::Request(r) => r.id.0 < 1 << 63 && plain_budget(r.budget_ms),
            Frame::TypedRequest(r) => r.id.0 < 1 << 63 && plain_budget(r.budget_ms),
            Frame::Response(Response { id, reply: Reply::Ok(_) }) => id.0 < 1 << 63,
            _ => false,
        };
        if taken {
            prop_assert_eq!(super::decode::call_frame(&body), Some(frame));
        }
        let mut mutated = body.clone();
        let i = at.index(mutated.len());
        if let Some(b) = mutated.get_mut(i) {
            *b = byte;
        }
        if cut {
            mutated.truncate(i);
        } else {
            mutated.push(byte);
        }
        for bytes in [&body[..], &mutated[..]] {
            if let Some(ours) = super::decode::call_frame(bytes) {
                prop_assert_eq!(Frame::decode_serde(bytes), Ok(ours));
            }
        }
    }

    /// Arbitrary bytes never make the decoder panic; whatever decodes re-encodes to a
    /// body no longer than the input that decodes to the same frame.
    #[test]
    fn prop_decode_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Some(ours) = super::decode::call_frame(&bytes) {
            prop_assert_eq!(Frame::decode_serde(&bytes), Ok(ours));
        }
        if let Ok(frame) = Frame::decode(&bytes) {
            let again = encode(&frame);
            prop_assert!(again.len() <= bytes.len());
            prop_assert_eq!(Frame::decode(&again), Ok(frame));
        }
    }

    /// Vectors with one byte changed, cut short or extended never make the decoder panic.
    #[test]
    fn prop_decode_mutated_vectors(
        which in 0usize..12,
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let (_, bytes, _) = body_vectors().nth(which).unwrap();
        let mut bytes = bytes.to_vec();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Frame::decode(&bytes);
        let _ = Frame::decode(&bytes[..cut.index(bytes.len())]);
        bytes.push(byte);
        let _ = Frame::decode(&bytes);
    }
}
