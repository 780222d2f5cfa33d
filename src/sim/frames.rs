//! An IO adapter that rewrites the server's outgoing HTTP/2 SETTINGS and GOAWAY frames.
//!
//! h2 0.4 cannot change `SETTINGS_MAX_CONCURRENT_STREAMS` after the handshake
//! nor put debug data in a GOAWAY. The simulators configure h2 with the high
//! stream limit and let this adapter (a) lower the limit in h2's first SETTINGS
//! frame to 1 when asked, (b) add the high limit to the next SETTINGS frame h2
//! sends (the simulator provokes one with `set_initial_window_size` of the
//! unchanged window, so h2 itself expects and consumes the client's ACK), and
//! (c) append debug data to GOAWAY frames. Incoming bytes pass unchanged.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// Above this much buffered output, writes wait for the socket.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Shared switches between a connection's task and its adapter.
#[derive(Debug, Default)]
pub(crate) struct FrameCtl {
    /// Value written into the first SETTINGS frame (0 = leave it as h2 wrote it).
    pub initial_streams: AtomicU32,
    /// Value added to the next non-initial SETTINGS frame (0 = none asked).
    pub raise_to: AtomicU32,
    /// Debug data appended to outgoing GOAWAY frames.
    pub goaway_debug: Mutex<Option<Bytes>>,
}

#[derive(Debug)]
enum Phase {
    Header,
    Pass,
    Collect,
}

/// Wraps the TLS stream under h2's server connection.
pub(crate) struct FrameRewriter<T> {
    inner: T,
    ctl: Arc<FrameCtl>,
    out: Vec<u8>,
    flushed: usize,
    hdr: [u8; 9],
    hdr_len: usize,
    remaining: usize,
    phase: Phase,
    payload: Vec<u8>,
    settings_seen: u32,
}

impl<T> FrameRewriter<T> {
    pub(crate) fn new(inner: T, ctl: Arc<FrameCtl>) -> Self {
        FrameRewriter {
            inner,
            ctl,
            out: Vec::with_capacity(16 * 1024),
            flushed: 0,
            hdr: [0; 9],
            hdr_len: 0,
            remaining: 0,
            phase: Phase::Header,
            payload: Vec::new(),
            settings_seen: 0,
        }
    }

    /// Feeds bytes h2 wrote through the frame tracker into `out`.
    fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match self.phase {
                Phase::Header => {
                    let take = (9 - self.hdr_len).min(buf.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&buf[..take]);
                    self.hdr_len += take;
                    buf = &buf[take..];
                    if self.hdr_len == 9 {
                        self.start_frame();
                    }
                }
                Phase::Pass => {
                    let take = self.remaining.min(buf.len());
                    self.out.extend_from_slice(&buf[..take]);
                    self.remaining -= take;
                    buf = &buf[take..];
                    if self.remaining == 0 {
                        self.phase = Phase::Header;
                    }
                }
                Phase::Collect => {
                    let take = self.remaining.min(buf.len());
                    self.payload.extend_from_slice(&buf[..take]);
                    self.remaining -= take;
                    buf = &buf[take..];
                    if self.remaining == 0 {
                        self.finish_frame();
                    }
                }
            }
        }
    }

    fn start_frame(&mut self) {
        self.hdr_len = 0;
        let len = u32::from_be_bytes([0, self.hdr[0], self.hdr[1], self.hdr[2]]) as usize;
        let kind = self.hdr[3];
        let flags = self.hdr[4];
        self.remaining = len;
        let interesting = (kind == FRAME_SETTINGS && flags & FLAG_ACK == 0) || kind == FRAME_GOAWAY;
        if interesting {
            self.payload.clear();
            self.phase = Phase::Collect;
            if len == 0 {
                self.finish_frame();
            }
        } else {
            self.out.extend_from_slice(&self.hdr);
            self.phase = if len == 0 { Phase::Header } else { Phase::Pass };
        }
    }

    fn finish_frame(&mut self) {
        self.phase = Phase::Header;
        let mut payload = std::mem::take(&mut self.payload);
        if self.hdr[3] == FRAME_SETTINGS {
            let value = if self.settings_seen == 0 {
                self.ctl.initial_streams.load(Ordering::Acquire)
            } else {
                self.ctl.raise_to.load(Ordering::Acquire)
            };
            self.settings_seen += 1;
            if value != 0 {
                set_max_streams(&mut payload, value);
            }
        } else if let Ok(guard) = self.ctl.goaway_debug.lock() {
            if let Some(debug) = guard.as_ref() {
                payload.truncate(8);
                payload.extend_from_slice(debug);
            }
        }
        let len = (payload.len() as u32).to_be_bytes();
        self.hdr[0..3].copy_from_slice(&len[1..4]);
        self.out.extend_from_slice(&self.hdr);
        self.out.extend_from_slice(&payload);
        self.payload = payload;
        self.payload.clear();
    }
}

/// Replaces (or appends) SETTINGS_MAX_CONCURRENT_STREAMS in a SETTINGS payload.
fn set_max_streams(payload: &mut Vec<u8>, value: u32) {
    for entry in payload.chunks_exact_mut(6) {
        if u16::from_be_bytes([entry[0], entry[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
            entry[2..6].copy_from_slice(&value.to_be_bytes());
            return;
        }
    }
    payload.extend_from_slice(&SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes());
    payload.extend_from_slice(&value.to_be_bytes());
}

impl<T: AsyncWrite + Unpin> FrameRewriter<T> {
    /// Writes buffered output to the inner stream until done or pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.flushed < self.out.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.flushed..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.flushed += n;
        }
        self.out.clear();
        self.flushed = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameRewriter<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameRewriter<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.out.len() - this.flushed >= OUT_HIGH_WATER {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.feed(buf);
        // Push what we can now; anything left goes out on the next flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut p = Vec::new();
        for (id, v) in entries {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        frame(FRAME_SETTINGS, 0, &p)
    }

    #[test]
    fn lowers_first_settings_raises_later_and_adds_goaway_debug() {
        let ctl = Arc::new(FrameCtl::default());
        ctl.initial_streams.store(1, Ordering::Release);
        let mut rw = FrameRewriter::new(Vec::<u8>::new(), ctl.clone());
        let mut input = settings(&[(1, 4096), (3, 1000), (4, 65535)]);
        input.extend(frame(0x8, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE passes through
        input.extend(frame(FRAME_SETTINGS, FLAG_ACK, &[]));
        // Feed one byte at a time: frame boundaries must not matter.
        for b in &input {
            rw.feed(std::slice::from_ref(b));
        }
        let mut expected = settings(&[(1, 4096), (3, 1), (4, 65535)]);
        expected.extend(frame(0x8, 0, &[0, 0, 1, 0]));
        expected.extend(frame(FRAME_SETTINGS, FLAG_ACK, &[]));
        assert_eq!(rw.out, expected);

        rw.out.clear();
        ctl.raise_to.store(1000, Ordering::Release);
        *ctl.goaway_debug.lock().unwrap() = Some(Bytes::from_static(b"{}"));
        rw.feed(&settings(&[(4, 65535)]));
        rw.feed(&frame(FRAME_GOAWAY, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        let mut expected = settings(&[(4, 65535), (3, 1000)]);
        expected.extend(frame(
            FRAME_GOAWAY,
            0,
            &[0, 0, 0, 5, 0, 0, 0, 0, b'{', b'}'],
        ));
        assert_eq!(rw.out, expected);
    }
}
