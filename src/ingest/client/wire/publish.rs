//! pushgate's own confirmed publisher on the tokio runtime: one connection,
//! one channel in confirm mode, for the result batches.
//!
//! Why not lapin here: lapin writes each publish and reads each confirm on
//! an OS thread of its own, so every result batch crosses threads twice
//! more. Where the runtime thread stays busy (and under SCHED_RR, where a
//! woken thread waits for an equal-priority one to block), the jobs of the
//! batch keep their prefetch slots until that thread gets a core: giving
//! lapin's thread a higher priority alone raised single-recipient jobs/s
//! by 9% (docs/benchmarks.md, round 8). Here the batcher's task writes the
//! frames, and a task on the same runtime reads the broker's acks.
//!
//! Scope: `basic.publish` (persistent JSON, the properties of
//! [`super::Props`]) on channel 1 after `confirm.select`; `basic.ack` and
//! `basic.nack`, single or `multiple`; heartbeats both ways (a broker
//! silent for two intervals ends the connection); the broker closing the
//! channel (an unknown exchange) or the connection. When the connection
//! ends, every publish still waiting gets the reason as an error and later
//! publishes are refused, so the jobs behind them are not acked: the
//! session ends and the broker redelivers them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use tokio::sync::{oneshot, watch};

use super::super::{Confirm, ConfirmRepr};
use super::*;

/// The broker's answer to one publish: `Ok(true)` ack, `Ok(false)` nack,
/// `Err` why the connection ended first.
pub(in crate::ingest::client) type Answer = Result<bool, String>;

/// Publishes waiting for the broker's answer, by sequence number.
struct Book {
    /// The number the next publish gets (confirm mode counts from 1).
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<Answer>>,
    /// Why the connection ended; no publish is taken after.
    failed: Option<String>,
}

fn lock(book: &StdMutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A confirmed publisher on its own connection.
pub struct WirePublisher {
    writer: Arc<Mutex<Writer>>,
    frame_max: u32,
    book: Arc<StdMutex<Book>>,
    /// Becomes true when the reader ended (the connection is gone).
    ended: watch::Receiver<bool>,
    reader: JoinHandle<()>,
}

impl Drop for WirePublisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl WirePublisher {
    /// Connects and opens a channel in confirm mode.
    pub async fn open(o: Open<'_>) -> Result<WirePublisher, OpenError> {
        let conn = WireConsumer::open_confirming(o).await?;
        let writer = Arc::clone(&conn.writer);
        let frame_max = conn.frame_max;
        let book = Arc::new(StdMutex::new(Book {
            next: 1,
            waiting: BTreeMap::new(),
            failed: None,
        }));
        let (ended_tx, ended) = watch::channel(false);
        let reader = tokio::spawn(read_answers(conn, Arc::clone(&book), ended_tx));
        Ok(WirePublisher {
            writer,
            frame_max,
            book,
            ended,
            reader,
        })
    }

    /// Publishes `body` (persistent JSON with `props`) to `exchange` with
    /// routing key `key`; the [`Confirm`] resolves when the broker answers.
    ///
    /// Not cancel-safe: a publish dropped midway may leave half a message
    /// on the connection (the batcher never drops one).
    pub async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: Props,
    ) -> Result<Confirm, Error> {
        Ok(Confirm(ConfirmRepr::Wire(
            self.send(exchange, key, body, props).await?,
        )))
    }

    async fn send(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        props: Props,
    ) -> Result<oneshot::Receiver<Answer>, WireError> {
        let frames = publish_frames(exchange, key, body, props, self.frame_max)?;
        let (tx, rx) = oneshot::channel();
        // The writer's lock orders the numbers as the broker counts them.
        let mut w = self.writer.lock().await;
        {
            let mut book = lock(&self.book);
            if let Some(why) = &book.failed {
                return Err(WireError::Lost(why.clone()));
            }
            let seq = book.next;
            book.next += 1;
            book.waiting.insert(seq, tx);
        }
        // A failed write breaks the socket for the reader too, which then
        // answers every waiting publish, this one included.
        w.write_all(&frames).await?;
        w.flush().await?;
        Ok(rx)
    }

    /// Closes the connection (200, `why`) and waits a little for the
    /// broker's close-ok; publishes still waiting get an error.
    pub async fn close(&self, why: &str) -> Result<(), Error> {
        let close = connection::Close {
            reply_code: 200,
            reply_text: why.into(),
            class_id: 0,
            method_id: 0,
        };
        let frame = method_frame(
            &AMQPClass::Connection(connection::AMQPMethod::Close(close)),
            0,
        )?;
        {
            let mut w = self.writer.lock().await;
            w.write_all(&frame).await.map_err(WireError::from)?;
            w.flush().await.map_err(WireError::from)?;
        }
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), ended.wait_for(|e| *e)).await;
        Ok(())
    }
}

/// The method, header and body frames of one publish on channel 1.
fn publish_frames(
    exchange: &str,
    key: &str,
    body: &[u8],
    props: Props,
    frame_max: u32,
) -> Result<Vec<u8>, WireError> {
    let publish = basic::Publish {
        exchange: exchange.into(),
        routing_key: key.into(),
        mandatory: false,
        immediate: false,
    };
    let mut out = method_frame(
        &AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
        CHANNEL,
    )?;
    let header = header_payload(props, None, body.len() as u64)?;
    push_frame(&mut out, FRAME_HEADER, &header)?;
    // frame_max counts the head (7 bytes) and the end octet too.
    let chunk = (frame_max as usize).saturating_sub(FRAME_HEAD + 1).max(1);
    out.reserve(body.len() + body.len() / chunk * (FRAME_HEAD + 1) + FRAME_HEAD + 1);
    for part in body.chunks(chunk) {
        push_frame(&mut out, FRAME_BODY, part)?;
    }
    Ok(out)
}

fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> Result<(), WireError> {
    let size = u32::try_from(payload.len())
        .map_err(|_| WireError::Protocol("a frame over 4 GiB".into()))?;
    out.push(kind);
    out.extend_from_slice(&CHANNEL.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
    Ok(())
}

/// Reads the connection until it ends: answers publishes as the broker
/// acks or nacks them, then fails the rest with the reason.
async fn read_answers(
    mut conn: WireConsumer,
    book: Arc<StdMutex<Book>>,
    ended: watch::Sender<bool>,
) {
    let why = loop {
        let class = match next_method(&mut conn).await {
            Ok(class) => class,
            Err(e) => break e.to_string(),
        };
        match class {
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                answer(&book, a.delivery_tag, a.multiple, true);
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                answer(&book, n.delivery_tag, n.multiple, false);
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => {
                break "the result publisher's connection was closed".to_owned();
            }
            other => {
                if let Some(closed) = closed_by_broker(&other) {
                    let (close_ok, on) = close_ok_for(&other);
                    conn.reply_in_background(close_ok, on);
                    break closed.to_string();
                }
                // connection.blocked / unblocked, and anything else the
                // broker may tell a publisher: nothing waits on it.
            }
        }
    };
    let waiting = {
        let mut b = lock(&book);
        b.failed = Some(why.clone());
        std::mem::take(&mut b.waiting)
    };
    for (_, tx) in waiting {
        let _ = tx.send(Err(why.clone()));
    }
    let _ = ended.send(true);
}

/// Answers the publish numbered `tag`, or with `multiple` every one up to it.
fn answer(book: &StdMutex<Book>, tag: u64, multiple: bool, ack: bool) {
    let done = {
        let mut b = lock(book);
        if multiple {
            let rest = b.waiting.split_off(&tag.saturating_add(1));
            std::mem::replace(&mut b.waiting, rest)
        } else {
            b.waiting
                .remove(&tag)
                .map(|tx| (tag, tx))
                .into_iter()
                .collect()
        }
    };
    for (_, tx) in done {
        let _ = tx.send(Ok(ack));
    }
}

/// The next method frame (heartbeats skipped; a returned message's header
/// and body, which no publish here asks for, too).
async fn next_method(conn: &mut WireConsumer) -> Result<AMQPClass, WireError> {
    loop {
        while let Some((kind, frame)) = cut_frame(&mut conn.rbuf, conn.frame_max)? {
            if kind == FRAME_METHOD {
                return parse_method(&frame);
            }
        }
        conn.fill().await?;
    }
}
