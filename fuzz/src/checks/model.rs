//! What a receiver must do with a stream: the reference model of PROTOCOL.md sections 3,
//! 5 and 9, written from the spec, that both connection checks hold the core to.

#[allow(unused_imports)]
use super::*;

/// Which side receives the modelled stream (or sends the transmitted one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    Server,
    Client,
}

/// The frames a conforming receiver handles after the hello, and the reason it must close
/// on (a violation or the peer's close frame), if the stream has one.
#[derive(Debug)]
pub(crate) struct Model<'a> {
    pub(crate) frames: Vec<Frame<'a>>,
    pub(crate) terminal: Option<CloseReason>,
}

impl<'a> Model<'a> {
    pub(crate) fn of(stream: &'a [u8], max_frame_len: u32, receiver: Receiver) -> Self {
        use CloseReason::{NotWirecall, PeerClosed, Protocol};
        let mut frames = Vec::new();
        let mut hello = false;
        let mut last_id = 0u64;
        let mut client_goaway = false;
        let mut version = 0u8;
        let mut pos = 0;
        let terminal = loop {
            // Every run ends with the peer's end of stream: one that cuts a frame is a
            // protocol error (PROTOCOL.md section 9).
            let truncated = (pos < stream.len()).then_some(Protocol(ProtocolError::TruncatedFrame));
            let Some(prefix) = stream[pos..].first_chunk::<LEN_PREFIX>() else {
                break truncated;
            };
            let len = u32::from_be_bytes(*prefix);
            if !hello && len > MAX_HELLO_LEN {
                break Some(NotWirecall);
            }
            if len > max_frame_len {
                let e = DecodeError::TooLong {
                    len,
                    max: max_frame_len,
                };
                break Some(Protocol(ProtocolError::TooLong(e)));
            }
            let start = pos + LEN_PREFIX;
            let Some(body) = stream.get(start..start + len as usize) else {
                break truncated;
            };
            pos = start + body.len();
            let frame = match Frame::decode(body) {
                Ok(frame) => frame,
                Err(_) if !hello => break Some(NotWirecall),
                Err(e) => break Some(Protocol(ProtocolError::Malformed(e))),
            };
            if !hello {
                let Frame::Hello(h) = frame else {
                    break Some(NotWirecall);
                };
                if h.magic != MAGIC {
                    break Some(NotWirecall);
                }
                // Section 5.3: the highest version in both ranges.
                let agreed = h.max_version.min(PROTOCOL_VERSION);
                if agreed < h.min_version.max(MIN_PROTOCOL_VERSION) || h.min_version > h.max_version
                {
                    break Some(CloseReason::VersionMismatch {
                        local: (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION),
                        remote: (h.min_version, h.max_version),
                    });
                }
                version = agreed;
                hello = true;
                continue;
            }
            match (receiver, frame, frame.as_call()) {
                (_, Frame::Close { code, .. }, _) => break Some(PeerClosed(code)),
                (_, Frame::Hello(_), _)
                | (Receiver::Server, Frame::Response(_), _)
                | (Receiver::Client, Frame::Cancel { .. }, _)
                | (Receiver::Client, _, Some(_)) => {
                    break Some(Protocol(ProtocolError::UnexpectedFrame));
                }
                // PROTOCOL.md 7.2: a client sends no request after its go-away; section
                // 5.3: a typed request only once version 2 is agreed.
                (Receiver::Server, _, Some(_)) if client_goaway || frame.version() > version => {
                    break Some(Protocol(ProtocolError::UnexpectedFrame));
                }
                (Receiver::Server, _, Some(r)) => {
                    if r.id.0 == 0 {
                        break Some(Protocol(ProtocolError::ZeroId));
                    }
                    if r.id.0 <= last_id {
                        break Some(Protocol(ProtocolError::IdNotIncreasing));
                    }
                    last_id = r.id.0;
                    frames.push(frame);
                }
                (Receiver::Server, Frame::GoAway { .. }, _) => {
                    client_goaway = true;
                    frames.push(frame);
                }
                _ => frames.push(frame),
            }
        };
        Self { frames, terminal }
    }

    pub(crate) fn pings(&self) -> Vec<u64> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Ping { nonce } => Some(*nonce),
                _ => None,
            })
            .collect()
    }

    /// Checks the close reason against the stream: a reason that comes from the stream must
    /// be the first one in it; "the peer closed the transport" means the whole stream was
    /// handled, so it must hold no reason at all.
    pub(crate) fn check_close_reason(&self, reason: CloseReason, who: &str) {
        match reason {
            CloseReason::Protocol(_)
            | CloseReason::NotWirecall
            | CloseReason::VersionMismatch { .. }
            | CloseReason::PeerClosed(_) => assert_eq!(
                Some(reason),
                self.terminal,
                "{who} closed for a reason the stream does not give first"
            ),
            CloseReason::TransportClosed => assert_eq!(
                self.terminal, None,
                "{who} reached end of stream without closing for {:?}",
                self.terminal
            ),
            _ => {}
        }
    }
}

/// The close frame (code, message) PROTOCOL.md section 8 says goes with a reason.
pub(crate) fn close_frame_for(reason: &CloseReason) -> Option<(CloseCode, &'static str)> {
    Some(match reason {
        CloseReason::Protocol(ProtocolError::TooLong(_)) => {
            (CloseCode::FRAME_TOO_LARGE, "frame too large")
        }
        CloseReason::Protocol(ProtocolError::Malformed(_)) => {
            (CloseCode::PROTOCOL_VIOLATION, "malformed frame")
        }
        CloseReason::Protocol(ProtocolError::UnexpectedFrame) => {
            (CloseCode::PROTOCOL_VIOLATION, "unexpected frame")
        }
        CloseReason::Protocol(ProtocolError::IdNotIncreasing) => {
            (CloseCode::PROTOCOL_VIOLATION, "request id did not increase")
        }
        CloseReason::Protocol(ProtocolError::ZeroId) => {
            (CloseCode::PROTOCOL_VIOLATION, "request id 0")
        }
        // Section 9: "(none: the peer is gone)".
        CloseReason::Protocol(ProtocolError::TruncatedFrame) => return None,
        CloseReason::NotWirecall => (CloseCode::NOT_WIRECALL, "expected a wirecall hello"),
        CloseReason::VersionMismatch { .. } => {
            (CloseCode::UNSUPPORTED_VERSION, "no common protocol version")
        }
        CloseReason::HandshakeTimedOut => (CloseCode::HANDSHAKE_TIMEOUT, "no hello in time"),
        CloseReason::KeepaliveTimedOut => (CloseCode::KEEPALIVE_TIMEOUT, "no answer to keepalive"),
        CloseReason::DrainTimedOut => (CloseCode::DRAIN_TIMEOUT, "graceful close timed out"),
        CloseReason::FrameTimedOut => (CloseCode::FRAME_TIMEOUT, "frame not completed in time"),
        CloseReason::Refused => (CloseCode::REFUSED, "server takes no connection now"),
        _ => return None,
    })
}

/// Splits what a connection transmitted into frame bodies with a [`FrameDecoder`] as big as
/// its transmit buffer; the bytes must end on a frame boundary.
pub(crate) fn transmitted_frames(tx: &[u8], tx_cap: usize, who: &str) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(vec![0u8; tx_cap], u32::MAX);
    let mut bodies = Vec::new();
    let mut pos = 0;
    loop {
        let n = decoder.feed(&tx[pos..]);
        pos += n;
        let before = bodies.len();
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => bodies.push(body.to_vec()),
                Ok(None) => break,
                Err(e) => panic!("{who} transmitted a frame longer than its own buffer: {e}"),
            }
        }
        if pos == tx.len() {
            break;
        }
        assert!(
            n > 0 || bodies.len() > before,
            "transmitted stream does not split"
        );
    }
    assert_eq!(
        decoder.buffered(),
        0,
        "{who}'s transmitted bytes end inside a frame"
    );
    bodies
}

/// Decodes transmitted bodies: each must be a valid frame in canonical form.
pub(crate) fn decode_all<'b>(bodies: &'b [Vec<u8>], who: &str) -> Vec<Frame<'b>> {
    bodies
        .iter()
        .map(|body| {
            let frame = Frame::decode(body)
                .unwrap_or_else(|e| panic!("{who} transmitted an undecodable frame: {e}"));
            assert_eq!(
                &encode_body(&frame),
                body,
                "{who} transmitted a non-canonical frame"
            );
            frame
        })
        .collect()
}

/// Checks the frames common to both sides' transmit streams: the hello first, pings
/// numbered upwards from 1, pongs only for pings received, nothing after a close frame, and
/// the close frame that goes with the reason. Returns the frames between hello and close.
pub(crate) fn check_common_frames<'f>(
    frames: &'f [Frame<'f>],
    hello: Hello,
    pings_received: &[u64],
    reason: CloseReason,
    sender: Receiver,
) -> &'f [Frame<'f>] {
    let who = match sender {
        Receiver::Server => "server",
        Receiver::Client => "client",
    };
    let Some((first, rest)) = frames.split_first() else {
        // A close that is not graceful drops every frame not yet begun (conn.rs,
        // `discard_unsent`): with no close frame to send, nothing at all may go out.
        assert!(
            !keeps_unsent(reason, sender) && close_frame_for(&reason).is_none(),
            "{who} transmitted nothing, not even its hello, and closed {reason:?}"
        );
        return &[];
    };
    if *first != Frame::Hello(hello)
        && KNOWN_BUG_CLOSE_WITHOUT_HELLO
        && frames.len() == 1
        && matches!(first, Frame::Close { .. })
    {
        // The known bug: the close frame alone, without the hello it discarded. Still
        // check that it is the right close frame.
        if let Frame::Close { code, message } = *first {
            check_close_frame(code, message, reason, who);
        }
        return &[];
    }
    assert_eq!(*first, Frame::Hello(hello), "{who}'s first frame");
    let mut next_ping = 1;
    let mut pongs = 0;
    for (i, frame) in rest.iter().enumerate() {
        match *frame {
            Frame::Ping { nonce } => {
                // Increasing from 1; a ping still owed when input arrives is never sent.
                assert!(nonce >= next_ping, "{who}'s ping nonces do not increase");
                next_ping = nonce + 1;
            }
            Frame::Pong { nonce } => {
                assert!(
                    pings_received.contains(&nonce),
                    "{who} sent pong {nonce} unasked"
                );
                pongs += 1;
            }
            Frame::Close { code, message } => {
                assert_eq!(i + 1, rest.len(), "{who} sent frames after its close frame");
                check_close_frame(code, message, reason, who);
            }
            Frame::Hello(_) => panic!("{who} sent a second hello"),
            _ => {}
        }
    }
    assert!(
        pongs <= pings_received.len(),
        "{who} sent more pongs than it got pings"
    );
    rest
}

/// Checks a transmitted close frame against the close reason (see [`close_frame_for`]).
pub(crate) fn check_close_frame(code: CloseCode, message: &str, reason: CloseReason, who: &str) {
    let sent = Some((code, message));
    if KNOWN_BUG_TRUNCATED_FRAME_SENDS_CLOSE
        && reason == CloseReason::Protocol(ProtocolError::TruncatedFrame)
        && sent == Some((CloseCode::PROTOCOL_VIOLATION, "truncated frame"))
    {
        return;
    }
    assert_eq!(
        sent,
        close_frame_for(&reason),
        "{who}'s close frame does not match its close reason {reason:?}"
    );
}

/// Whether a close keeps what was queued and not yet sent: a graceful close, a refusal,
/// and a server's close after its client ended the stream (PROTOCOL.md 7.2: the answers it
/// owes still go out) do; any other drops every frame not yet begun (conn.rs,
/// `discard_unsent`).
pub(crate) fn keeps_unsent(reason: CloseReason, sender: Receiver) -> bool {
    matches!(reason, CloseReason::Graceful | CloseReason::Refused)
        || (sender == Receiver::Server && reason == CloseReason::TransportClosed)
}

pub(crate) fn budget_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis_ceil()).unwrap_or(u32::MAX)
}

/// The model of the server's rule for an answer over the client's limit (PROTOCOL.md
/// section 6.3), written from the spec: the answer itself when its frame fits `limit`;
/// else a rejection without its message; else (the function ran) `ERROR_ANSWER_TOO_LARGE`
/// with `message`, then without it. The answer itself when nothing fits.
pub(crate) fn expected_answer<'a>(
    id: u64,
    reply: Reply<'a>,
    limit: usize,
    message: &'static str,
) -> Reply<'a> {
    let fits = |reply: Reply<'_>| {
        let frame = Frame::Response(Response {
            id: RequestId(id),
            reply,
        });
        frame.encoded_len() <= limit
    };
    if fits(reply) {
        return reply;
    }
    let code = ERROR_ANSWER_TOO_LARGE;
    let candidates = match reply {
        Reply::Rejected { code, .. } => vec![Reply::Rejected { code, message: "" }],
        Reply::Busy { .. } => vec![],
        Reply::Ok(_) | Reply::Error { .. } => vec![
            Reply::Error { code, message },
            Reply::Error { code, message: "" },
        ],
    };
    candidates.into_iter().find(|r| fits(*r)).unwrap_or(reply)
}

/// A frame body, encoded.
pub(crate) fn encode_body(frame: &Frame<'_>) -> Vec<u8> {
    let mut body = vec![0; frame.encoded_len()];
    let n = frame
        .encode(&mut body)
        .unwrap_or_else(|e| panic!("encode into its encoded_len: {e}"));
    assert_eq!(n, body.len(), "encoded_len disagrees with encode");
    body
}
