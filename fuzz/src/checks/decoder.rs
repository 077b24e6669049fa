//! `stream_decoder`: a byte stream through a `FrameDecoder`, split at arbitrary points.

#[allow(unused_imports)]
use super::*;

/// `stream_decoder`: a byte stream through a [`FrameDecoder`], split at arbitrary points.
///
/// Script: storage (`u16`: up to 4 + it % 1024 bytes), limit (`u16`), the storage's starting
/// size ([`initial_len`]: 0 = fixed, else growable), a piece count (`u8` % 16)
/// and that many pieces (tag `u8` % 4: 0 and 3 a valid frame from [`read_frame`] with its
/// prefix, 1 a raw [`Input::blob`], 2 a bare big-endian length prefix from
/// [`Input::int32`]); then the chunking: each byte feeds `(b & 63) + 1` bytes, bit 6 through
/// `space`/`commit` instead of `feed`, bit 7 takes frames out afterwards; once the script
/// ends, the rest goes in whole.
///
/// - The frames out, and the error if any, are those of a plain reference split of the
///   whole stream with the decoder's clamped limit; the same as feeding it whole.
/// - `buffered()` never exceeds `capacity()`; the decoder never gets stuck (it takes more
///   bytes or gives a frame or an error whenever bytes are offered), whatever size its
///   growable storage starts at.
/// - After `TooLong` every later call returns the same error.
/// - What stays buffered is exactly the incomplete tail of the stream.
pub fn check_stream_decoder(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = 4 + usize::from(input.u16() % 1024);
    let max = u32::from(input.u16());
    let initial = input.u8();
    let pieces = input.u8() % 16;
    let mut stream = Vec::new();
    for _ in 0..pieces {
        match input.u8() % 4 {
            1 => stream.extend_from_slice(input.blob()),
            2 => stream.extend_from_slice(&input.int32().to_be_bytes()),
            _ => push_frame(&mut stream, &read_frame(&mut input, Ids::NONE)),
        }
    }

    let storage = GrowBuf::new(initial_len(initial, capacity), capacity);
    let decoder = FrameDecoder::new(storage, max);
    let room = u32::try_from(capacity - LEN_PREFIX).unwrap_or(u32::MAX);
    assert_eq!(
        decoder.max_frame_len(),
        max.min(room),
        "limit not clamped to what the storage can hold"
    );
    let reference = split_stream(&stream, decoder.max_frame_len());

    // As the script says (growable storage, if so), then whole (fixed storage).
    run_decoder(decoder, &stream, &mut input, &reference);
    let whole = FrameDecoder::new(GrowBuf::new(capacity, capacity), max);
    run_decoder(whole, &stream, &mut Input::new(&[]), &reference);
}

/// The reference split: frames up to `limit`, the first over-limit prefix as the error.
#[derive(Debug)]
pub(crate) struct Split {
    pub(crate) frames: Vec<std::ops::Range<usize>>,
    pub(crate) error: Option<DecodeError>,
    /// Bytes up to the end of the last whole frame (or the bad prefix).
    pub(crate) consumed: usize,
}

pub(crate) fn split_stream(stream: &[u8], limit: u32) -> Split {
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut error = None;
    while let Some(prefix) = stream[pos..].first_chunk::<LEN_PREFIX>() {
        let len = u32::from_be_bytes(*prefix);
        if len > limit {
            error = Some(DecodeError::TooLong { len, max: limit });
            break;
        }
        let end = pos + LEN_PREFIX + len as usize;
        if end > stream.len() {
            break;
        }
        frames.push(pos + LEN_PREFIX..end);
        pos = end;
    }
    Split {
        frames,
        error,
        consumed: pos,
    }
}

pub(crate) struct DecoderRun<'s> {
    pub(crate) decoder: FrameDecoder<GrowBuf>,
    pub(crate) stream: &'s [u8],
    pub(crate) reference: &'s Split,
    pub(crate) got: usize,
    pub(crate) error: Option<DecodeError>,
}

impl DecoderRun<'_> {
    /// Takes every whole frame out; returns how many.
    pub(crate) fn drain(&mut self) -> usize {
        let mut taken = 0;
        while self.error.is_none() {
            match self.decoder.next_frame() {
                Ok(Some(body)) => {
                    let Some(want) = self.reference.frames.get(self.got) else {
                        panic!(
                            "decoder gave frame #{} of a stream that has fewer",
                            self.got
                        )
                    };
                    assert_eq!(
                        body,
                        &self.stream[want.clone()],
                        "frame #{} differs",
                        self.got
                    );
                    self.got += 1;
                    taken += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(Some(e), self.reference.error, "unexpected decoder error");
                    assert_eq!(
                        self.got,
                        self.reference.frames.len(),
                        "error came too early"
                    );
                    self.error = Some(e);
                }
            }
            assert!(self.decoder.buffered() <= self.decoder.capacity());
        }
        taken
    }

    /// Offers `bytes` until all are taken, taking frames out when the decoder is full.
    pub(crate) fn offer(&mut self, bytes: &[u8], via_space: bool) {
        let mut offset = 0;
        while offset < bytes.len() && self.error.is_none() {
            let rest = &bytes[offset..];
            let n = if via_space {
                let space = self.decoder.space();
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                self.decoder.commit(n);
                n
            } else {
                self.decoder.feed(rest)
            };
            assert!(n <= rest.len());
            assert!(
                self.decoder.buffered() <= self.decoder.capacity(),
                "over capacity"
            );
            offset += n;
            if offset < bytes.len() {
                let taken = self.drain();
                assert!(
                    n > 0 || taken > 0 || self.error.is_some(),
                    "decoder stuck: {} of {} bytes buffered, takes nothing, gives no frame",
                    self.decoder.buffered(),
                    self.decoder.capacity()
                );
            }
        }
    }
}

pub(crate) fn run_decoder(
    decoder: FrameDecoder<GrowBuf>,
    stream: &[u8],
    chunks: &mut Input<'_>,
    reference: &Split,
) {
    let mut run = DecoderRun {
        decoder,
        stream,
        reference,
        got: 0,
        error: None,
    };
    let mut pos = 0;
    while pos < stream.len() && run.error.is_none() {
        let (size, via_space, drain) = if chunks.is_empty() {
            (stream.len() - pos, false, true)
        } else {
            let c = chunks.u8();
            (usize::from(c & 63) + 1, c & 0x40 != 0, c & 0x80 != 0)
        };
        let end = (pos + size).min(stream.len());
        run.offer(&stream[pos..end], via_space);
        pos = end;
        if drain {
            run.drain();
        }
    }
    run.drain();

    assert_eq!(
        run.error, reference.error,
        "decoder and reference disagree on the error"
    );
    assert_eq!(
        run.got,
        reference.frames.len(),
        "decoder gave too few frames"
    );
    if let Some(e) = run.error {
        for _ in 0..3 {
            assert_eq!(run.decoder.next_frame(), Err(e), "error not sticky");
        }
        let _ = run.decoder.feed(&[0, 0, 0, 1, 0]);
        let space = run.decoder.space().len();
        run.decoder.commit(space.min(3));
        assert_eq!(
            run.decoder.next_frame(),
            Err(e),
            "error not sticky after more input"
        );
        assert!(run.decoder.buffered() <= run.decoder.capacity());
    } else {
        assert_eq!(
            run.decoder.buffered(),
            stream.len() - reference.consumed,
            "buffered bytes are not the stream's incomplete tail"
        );
    }
}
