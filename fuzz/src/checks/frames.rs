//! `frame_decode`: any bytes into `Frame::decode`.

#[allow(unused_imports)]
use super::*;

/// `frame_decode`: any bytes into [`Frame::decode`].
///
/// - Decoding never panics and never reports `BufferTooSmall`.
/// - A frame that decodes re-encodes to its canonical (shortest-varint) form: no longer than
///   the input, identical to it when as long, `encoded_len` bytes, one byte short does not
///   fit, and it decodes to an equal frame. (postcard accepts padded varints, so a
///   non-canonical input decodes but does not come back byte for byte.)
/// - postcard's own decoder and encoder agree with the core's (which reads and writes the
///   call frames by hand) on every input.
/// - Borrowed fields (method, body, messages) point into the input (zero-copy: the
///   connections find them again in their receive buffers by address).
/// - The frame survives `encode_frame` and a [`FrameDecoder`].
/// - The same bytes read as a structured frame script ([`read_frame`]) encode to bytes that
///   decode to that frame.
pub fn check_frame_decode(data: &[u8]) {
    // The core decodes and encodes the call frames by hand: postcard, the wire format's
    // definition, must read and write the same (on failures the core defers to it).
    let by_postcard = match postcard::take_from_bytes::<Frame<'_>>(data) {
        Ok((frame, [])) => Some(frame),
        _ => None,
    };
    assert_eq!(
        Frame::decode(data).ok(),
        by_postcard,
        "postcard decodes otherwise"
    );
    match Frame::decode(data) {
        Ok(frame) => {
            check_borrows_from(&frame, data);
            let body = encode_body(&frame);
            let mut theirs = vec![0u8; body.len().saturating_add(16)];
            let n = postcard::to_slice(&frame, &mut theirs).map(|w| w.len());
            assert_eq!(n, Ok(body.len()), "postcard encodes {frame:?} otherwise");
            assert_eq!(
                theirs.get(..body.len()),
                Some(&body[..]),
                "postcard encodes {frame:?} otherwise"
            );
            assert!(
                body.len() <= data.len(),
                "re-encoding {frame:?} gave {} bytes, more than the {} decoded",
                body.len(),
                data.len()
            );
            if body.len() == data.len() {
                assert_eq!(body, data, "same length but different bytes for {frame:?}");
            }
            assert_eq!(
                Frame::decode(&body),
                Ok(frame),
                "canonical form decodes differently"
            );
            let mut short = vec![0; body.len().saturating_sub(1)];
            assert_eq!(
                frame.encode(&mut short),
                Err(WireError::BufferTooSmall),
                "{frame:?} encoded into a buffer one byte short"
            );
            check_stream_round_trip(&frame, &body);
        }
        Err(e) => {
            assert_ne!(
                e,
                WireError::BufferTooSmall,
                "decode reported BufferTooSmall"
            );
            let _ = e.to_string();
        }
    }

    let mut input = Input::new(data);
    let frame = read_frame(&mut input, Ids::NONE);
    let body = encode_body(&frame);
    assert_eq!(
        Frame::decode(&body),
        Ok(frame),
        "a built frame does not round-trip"
    );
}

pub(crate) fn check_borrows_from(frame: &Frame<'_>, data: &[u8]) {
    let inside = |part: &[u8]| {
        let range = data.as_ptr_range();
        part.is_empty() || (range.contains(&part.as_ptr()) && part.as_ptr_range().end <= range.end)
    };
    let parts: [&[u8]; 2] = match frame {
        Frame::Request(r) => [r.method.as_bytes(), r.body],
        Frame::TypedRequest(r) => [r.body, &[]],
        Frame::Response(r) => match r.reply {
            Reply::Ok(body) => [body, &[]],
            Reply::Error { message, .. } | Reply::Rejected { message, .. } => {
                [message.as_bytes(), &[]]
            }
            Reply::Busy { .. } => [&[], &[]],
        },
        Frame::Close { message, .. } => [message.as_bytes(), &[]],
        _ => [&[], &[]],
    };
    for part in parts {
        assert!(
            inside(part),
            "{frame:?}: a borrowed field is not inside the input"
        );
    }
}

pub(crate) fn check_stream_round_trip(frame: &Frame<'_>, body: &[u8]) {
    let mut wire = vec![0; body.len() + LEN_PREFIX];
    assert_eq!(encode_frame(frame, &mut wire), Ok(wire.len()));
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    assert_eq!(wire[..LEN_PREFIX], len.to_be_bytes(), "length prefix");
    let mut decoder = FrameDecoder::new(vec![0u8; wire.len()], u32::MAX);
    assert_eq!(decoder.feed(&wire), wire.len());
    assert_eq!(decoder.next_frame(), Ok(Some(body)));
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered(), 0);
}
