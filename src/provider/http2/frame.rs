//! HTTP/2 frames (RFC 9113 §4, §6) for the client: reading them from a
//! connection's input buffer and writing the ones a client sends.
//!
//! Reading checks what §6 says makes a frame malformed (sizes, padding,
//! stream ids where one is required or forbidden) and reports it as a
//! connection error with its code; the connection's state machine checks
//! the rest (which stream may receive what).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The frame header's size.
pub const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, the least a peer may allow.
pub const DEFAULT_MAX_FRAME: usize = 16_384;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// HTTP/2 error codes (RFC 9113 §7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
}

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A malformed frame: a connection error with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/2 {what} (error code {code})")]
pub struct FrameError {
    pub code: u32,
    pub what: &'static str,
}

fn protocol(what: &'static str) -> FrameError {
    FrameError {
        code: code::PROTOCOL_ERROR,
        what,
    }
}

fn size(what: &'static str) -> FrameError {
    FrameError {
        code: code::FRAME_SIZE_ERROR,
        what,
    }
}

/// A frame a client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `flow` is the length that counts against flow control (padding included).
    Data {
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow: usize,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        block: Bytes,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        block: Bytes,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    Settings {
        ack: bool,
        params: Vec<(u16, u32)>,
    },
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: Bytes,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    /// PRIORITY and frames of unknown types: ignored (RFC 9113 §4.1, §5.3.2).
    Ignored,
}

/// Takes the next whole frame off the front of `buf`: `Ok(None)` until one
/// has arrived. `max_frame` is the SETTINGS_MAX_FRAME_SIZE we announced.
pub fn read(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEAD_LEN {
        return Ok(None);
    }
    let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
    if len > max_frame {
        return Err(size("frame larger than SETTINGS_MAX_FRAME_SIZE"));
    }
    if buf.len() < HEAD_LEN + len {
        return Ok(None);
    }
    let (kind, flags) = (buf[3], buf[4]);
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    buf.advance(HEAD_LEN);
    let mut payload = buf.split_to(len).freeze();
    let frame = match kind {
        DATA => {
            if stream == 0 {
                return Err(protocol("DATA on stream 0"));
            }
            unpad(&mut payload, flags)?;
            Frame::Data {
                stream,
                end_stream: flags & END_STREAM != 0,
                data: payload,
                flow: len,
            }
        }
        HEADERS => {
            if stream == 0 {
                return Err(protocol("HEADERS on stream 0"));
            }
            unpad(&mut payload, flags)?;
            if flags & PRIORITY_FLAG != 0 {
                if payload.len() < 5 {
                    return Err(size("HEADERS too short for its priority"));
                }
                payload.advance(5);
            }
            Frame::Headers {
                stream,
                end_stream: flags & END_STREAM != 0,
                end_headers: flags & END_HEADERS != 0,
                block: payload,
            }
        }
        CONTINUATION => {
            if stream == 0 {
                return Err(protocol("CONTINUATION on stream 0"));
            }
            Frame::Continuation {
                stream,
                end_headers: flags & END_HEADERS != 0,
                block: payload,
            }
        }
        RST_STREAM => {
            if stream == 0 {
                return Err(protocol("RST_STREAM on stream 0"));
            }
            if len != 4 {
                return Err(size("RST_STREAM not 4 bytes"));
            }
            Frame::RstStream {
                stream,
                code: payload.get_u32(),
            }
        }
        SETTINGS => {
            if stream != 0 {
                return Err(protocol("SETTINGS on a stream"));
            }
            let ack = flags & ACK != 0;
            if ack && len != 0 {
                return Err(size("SETTINGS ack with a payload"));
            }
            if len % 6 != 0 {
                return Err(size("SETTINGS not a multiple of 6 bytes"));
            }
            let mut params = Vec::with_capacity(len / 6);
            while payload.has_remaining() {
                params.push((payload.get_u16(), payload.get_u32()));
            }
            Frame::Settings { ack, params }
        }
        PUSH_PROMISE => Frame::PushPromise { stream },
        PING => {
            if stream != 0 {
                return Err(protocol("PING on a stream"));
            }
            if len != 8 {
                return Err(size("PING not 8 bytes"));
            }
            let mut data = [0u8; 8];
            payload.copy_to_slice(&mut data);
            Frame::Ping {
                ack: flags & ACK != 0,
                payload: data,
            }
        }
        GOAWAY => {
            if stream != 0 {
                return Err(protocol("GOAWAY on a stream"));
            }
            if len < 8 {
                return Err(size("GOAWAY shorter than 8 bytes"));
            }
            let last_stream = payload.get_u32() & 0x7fff_ffff;
            let code = payload.get_u32();
            Frame::GoAway {
                last_stream,
                code,
                debug: payload,
            }
        }
        WINDOW_UPDATE => {
            if len != 4 {
                return Err(size("WINDOW_UPDATE not 4 bytes"));
            }
            let increment = payload.get_u32() & 0x7fff_ffff;
            Frame::WindowUpdate { stream, increment }
        }
        PRIORITY => {
            if stream == 0 {
                return Err(protocol("PRIORITY on stream 0"));
            }
            if len != 5 {
                return Err(size("PRIORITY not 5 bytes"));
            }
            Frame::Ignored
        }
        _ => Frame::Ignored,
    };
    Ok(Some(frame))
}

/// Strips a PADDED frame's pad length and padding.
fn unpad(payload: &mut Bytes, flags: u8) -> Result<(), FrameError> {
    if flags & PADDED == 0 {
        return Ok(());
    }
    let pad = usize::from(
        *payload
            .first()
            .ok_or(size("padded frame without pad length"))?,
    );
    if pad >= payload.len() {
        return Err(protocol("padding longer than the frame"));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(())
}

fn head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    dst.reserve(HEAD_LEN + len);
    dst.put_uint(len as u64, 3);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// A SETTINGS frame with `params`.
pub fn write_settings(dst: &mut BytesMut, params: &[(u16, u32)]) {
    head(dst, params.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in params {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// The acknowledgement of the peer's SETTINGS.
pub fn write_settings_ack(dst: &mut BytesMut) {
    head(dst, 0, SETTINGS, ACK, 0);
}

/// A header block as HEADERS and, past `max_frame` bytes, CONTINUATION frames.
pub fn write_headers(
    dst: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let more = chunks.peek().is_some();
    let flags = if end_stream { END_STREAM } else { 0 } | if more { 0 } else { END_HEADERS };
    head(dst, first.len(), HEADERS, flags, stream);
    dst.put_slice(first);
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        head(
            dst,
            chunk.len(),
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            stream,
        );
        dst.put_slice(chunk);
    }
}

/// `data` as DATA frames of at most `max_frame` bytes; END_STREAM on the last.
pub fn write_data(
    dst: &mut BytesMut,
    stream: u32,
    data: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    if data.is_empty() {
        head(
            dst,
            0,
            DATA,
            if end_stream { END_STREAM } else { 0 },
            stream,
        );
        return;
    }
    let mut chunks = data.chunks(max_frame).peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last && end_stream { END_STREAM } else { 0 };
        head(dst, chunk.len(), DATA, flags, stream);
        dst.put_slice(chunk);
    }
}

/// A WINDOW_UPDATE (stream 0: the connection's window).
pub fn write_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & 0x7fff_ffff);
}

/// A PING, or the answer to one (`ack`).
pub fn write_ping(dst: &mut BytesMut, payload: [u8; 8], ack: bool) {
    head(dst, 8, PING, if ack { ACK } else { 0 }, 0);
    dst.put_slice(&payload);
}

/// An RST_STREAM.
pub fn write_rst_stream(dst: &mut BytesMut, stream: u32, code: u32) {
    head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(code);
}

/// A GOAWAY naming the last stream we processed (none: 0), with `debug`
/// data after the code (APNs puts its JSON reason there).
pub fn write_goaway(dst: &mut BytesMut, last_stream: u32, code: u32, debug: &[u8]) {
    head(dst, 8 + debug.len(), GOAWAY, 0, 0);
    dst.put_u32(last_stream & 0x7fff_ffff);
    dst.put_u32(code);
    dst.put_slice(debug);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        head(&mut b, payload.len(), kind, flags, stream);
        b.put_slice(payload);
        b
    }

    fn one(mut b: BytesMut) -> Result<Option<Frame>, FrameError> {
        read(&mut b, DEFAULT_MAX_FRAME)
    }

    #[test]
    fn written_frames_read_back() {
        let mut b = BytesMut::new();
        write_settings(
            &mut b,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
            ],
        );
        write_settings_ack(&mut b);
        write_window_update(&mut b, 0, 1_000_000);
        write_ping(&mut b, *b"pushgate", false);
        write_rst_stream(&mut b, 3, code::CANCEL);
        write_goaway(&mut b, 7, code::NO_ERROR, b"");
        write_data(&mut b, 5, b"{}", true, DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        while let Some(f) = read(&mut b, DEFAULT_MAX_FRAME).unwrap() {
            got.push(f);
        }
        assert!(b.is_empty());
        assert_eq!(
            got,
            [
                Frame::Settings {
                    ack: false,
                    params: vec![
                        (setting::ENABLE_PUSH, 0),
                        (setting::INITIAL_WINDOW_SIZE, 1 << 20)
                    ]
                },
                Frame::Settings {
                    ack: true,
                    params: vec![]
                },
                Frame::WindowUpdate {
                    stream: 0,
                    increment: 1_000_000
                },
                Frame::Ping {
                    ack: false,
                    payload: *b"pushgate"
                },
                Frame::RstStream {
                    stream: 3,
                    code: code::CANCEL
                },
                Frame::GoAway {
                    last_stream: 7,
                    code: code::NO_ERROR,
                    debug: Bytes::new()
                },
                Frame::Data {
                    stream: 5,
                    end_stream: true,
                    data: Bytes::from_static(b"{}"),
                    flow: 2
                },
            ]
        );
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let whole = raw(PING, 0, 0, b"12345678");
        let mut b = BytesMut::from(&whole[..12]);
        assert_eq!(read(&mut b, DEFAULT_MAX_FRAME), Ok(None));
        assert_eq!(b.len(), 12, "nothing consumed");
        b.extend_from_slice(&whole[12..]);
        assert!(matches!(
            read(&mut b, DEFAULT_MAX_FRAME),
            Ok(Some(Frame::Ping { .. }))
        ));
    }

    #[test]
    fn long_blocks_and_bodies_are_split() {
        let block: Vec<u8> = (0..40u8).collect();
        let mut b = BytesMut::new();
        write_headers(&mut b, 1, &block, false, 16);
        let mut parts = Vec::new();
        while let Some(f) = read(&mut b, DEFAULT_MAX_FRAME).unwrap() {
            parts.push(f);
        }
        assert_eq!(parts.len(), 3);
        assert!(
            matches!(&parts[0], Frame::Headers { end_headers: false, end_stream: false, block, .. } if block.len() == 16)
        );
        assert!(matches!(
            &parts[1],
            Frame::Continuation {
                end_headers: false,
                ..
            }
        ));
        assert!(
            matches!(&parts[2], Frame::Continuation { end_headers: true, block, .. } if block.len() == 8)
        );
        write_data(&mut b, 1, &[7u8; 33], true, 16);
        let mut ends = Vec::new();
        while let Some(Frame::Data {
            data, end_stream, ..
        }) = read(&mut b, DEFAULT_MAX_FRAME).unwrap()
        {
            ends.push((data.len(), end_stream));
        }
        assert_eq!(ends, [(16, false), (16, false), (1, true)]);
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        // HEADERS, padded (2 bytes) with priority (5 bytes), block "ab".
        let payload = [2, 0, 0, 0, 0, 16, b'a', b'b', 0, 0];
        let f = one(raw(
            HEADERS,
            PADDED | PRIORITY_FLAG | END_HEADERS,
            1,
            &payload,
        ))
        .unwrap();
        assert_eq!(
            f,
            Some(Frame::Headers {
                stream: 1,
                end_stream: false,
                end_headers: true,
                block: Bytes::from_static(b"ab")
            })
        );
        let f = one(raw(DATA, PADDED, 1, &[3, b'x', 0, 0, 0])).unwrap();
        assert_eq!(
            f,
            Some(Frame::Data {
                stream: 1,
                end_stream: false,
                data: Bytes::from_static(b"x"),
                flow: 5
            })
        );
    }

    #[test]
    fn malformed_frames_are_connection_errors() {
        let cases = [
            (raw(DATA, 0, 0, b"x"), code::PROTOCOL_ERROR),
            (raw(DATA, PADDED, 1, &[5, b'x']), code::PROTOCOL_ERROR),
            (raw(SETTINGS, 0, 0, &[0, 1, 0]), code::FRAME_SIZE_ERROR),
            (
                raw(SETTINGS, ACK, 0, &[0, 1, 0, 0, 0, 0]),
                code::FRAME_SIZE_ERROR,
            ),
            (raw(SETTINGS, 0, 1, &[]), code::PROTOCOL_ERROR),
            (raw(PING, 0, 0, b"1234"), code::FRAME_SIZE_ERROR),
            (raw(WINDOW_UPDATE, 0, 0, b"123"), code::FRAME_SIZE_ERROR),
            (raw(RST_STREAM, 0, 0, &[0, 0, 0, 8]), code::PROTOCOL_ERROR),
            (raw(GOAWAY, 0, 0, &[0, 0, 0, 1]), code::FRAME_SIZE_ERROR),
            (
                raw(HEADERS, PRIORITY_FLAG, 1, &[0, 0]),
                code::FRAME_SIZE_ERROR,
            ),
        ];
        for (bytes, want) in cases {
            let got = one(bytes.clone()).expect_err("malformed");
            assert_eq!(got.code, want, "{bytes:?}: {got}");
        }
        let mut big = BytesMut::new();
        head(&mut big, DEFAULT_MAX_FRAME + 1, DATA, 0, 1);
        assert_eq!(one(big).unwrap_err().code, code::FRAME_SIZE_ERROR);
        assert_eq!(one(raw(0x42, 0, 3, b"whatever")), Ok(Some(Frame::Ignored)));
    }
}
