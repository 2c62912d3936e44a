//! A connection's outbound queue, bounded in bytes.
//!
//! Fanout pushes shared, already-encoded frames here and never waits: a
//! client that does not read fills its own queue, gets closed with 4000 and
//! is forgotten, while everyone else's delivery goes on. The connection's
//! task drains the queue in batches.
//!
//! Catch-up (a resume's missed messages, a gap fill) is paced instead: it
//! is queued only while the queue is under half its bound
//! ([`Outbox::has_room`]), and otherwise waits for the writer to take what
//! is queued ([`Outbox::wait_room`]). A client is never closed for its own
//! recovery, and live traffic keeps the other half.
//!
//! The outbox also carries the backend's [`Order`]s to the connection's
//! task, which the same wake-up reaches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use proto::client::close::Close;
use tokio::sync::Notify;

use crate::session::orders::Order;

/// A frame waiting to be written.
#[derive(Debug, Clone)]
pub enum Out {
    /// A protocol frame (text or binary, by the connection's encoding).
    Data(Bytes),
    /// A pong answering the client's ping.
    Pong(Bytes),
    /// A data frame whose type is given, whatever the connection's encoding:
    /// what `--conformance-echo` sends back ([`crate::websocket::echo`]).
    Echo { binary: bool, data: Bytes },
}

impl Out {
    /// The payload's length in bytes.
    pub fn size(&self) -> usize {
        match self {
            Out::Data(b) | Out::Pong(b) | Out::Echo { data: b, .. } => b.len(),
        }
    }
}

#[derive(Default)]
struct State {
    frames: VecDeque<Out>,
    bytes: usize,
    closing: Option<Close>,
    /// A paced producer waits on `drained`: only then does a take notify
    /// it (a notification on every take costs the hot path measurably).
    paced: bool,
    /// The backend's orders, for the connection's task.
    orders: Vec<Order>,
    /// Frames in the last batch taken (at most [`MAX_HINT`]): the next
    /// batch's first push reserves that much, rather than growing the
    /// queue a doubling at a time; an idle queue keeps no allocation.
    hint: usize,
}

/// Most frames reserved up front for a batch.
const MAX_HINT: usize = 64;

/// Most orders waiting for one connection: the server API waits for each,
/// so only concurrent calls for the same user queue up.
const MAX_ORDERS: usize = 64;

/// The queue between a connection's producers and its writer.
pub struct Outbox {
    state: Mutex<State>,
    limit: usize,
    /// Wakes the connection's task: something to write, or a close.
    wake: Notify,
    /// Wakes paced producers: the writer took what was queued.
    drained: Notify,
    /// `orders` is not empty: checked on every wake-up without the lock.
    ordered: AtomicBool,
}

/// What [`Outbox::push_quiet`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued behind frames whose push already woke the writer.
    Woken,
    /// Queued first: the writer needs [`Outbox::wake`].
    Wake,
    /// Not queued: the connection is closing, or the frame overflowed it.
    Refused,
}

/// What the writer takes in one go.
pub struct Batch {
    pub frames: Vec<Out>,
    /// Set once the connection is closing: write it after `frames`.
    pub closing: Option<Close>,
}

impl Outbox {
    /// An empty queue holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::default(),
            limit,
            wake: Notify::new(),
            drained: Notify::new(),
            ordered: AtomicBool::new(false),
        }
    }

    /// Queues an order for the connection's task; gives it back when the
    /// connection is closing or has too many waiting.
    pub fn order(&self, order: Order) -> Result<(), Order> {
        let mut s = self.state.lock().unwrap();
        if s.closing.is_some() || s.orders.len() >= MAX_ORDERS {
            return Err(order);
        }
        s.orders.push(order);
        self.ordered.store(true, Ordering::Release);
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Whether orders wait.
    pub fn has_orders(&self) -> bool {
        self.ordered.load(Ordering::Acquire)
    }

    /// Takes the waiting orders, oldest first.
    pub fn take_orders(&self) -> Vec<Order> {
        let mut s = self.state.lock().unwrap();
        self.ordered.store(false, Ordering::Release);
        std::mem::take(&mut s.orders)
    }

    /// Whether a paced frame of `len` bytes may be queued now: the queue
    /// stays under half its bound (a lone frame may use it all), and the
    /// connection is not closing.
    pub fn has_room(&self, len: usize) -> bool {
        let s = self.state.lock().unwrap();
        s.closing.is_none() && self.fits(&s, len)
    }

    fn fits(&self, s: &State, len: usize) -> bool {
        s.bytes + len <= self.limit / 2 || (s.bytes == 0 && len <= self.limit)
    }

    /// Waits until [`Self::has_room`] for `len` bytes, or the connection is
    /// closing.
    pub async fn wait_room(&self, len: usize) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a take in between is not missed.
            drained.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap();
                if s.closing.is_some() || self.fits(&s, len) {
                    return;
                }
                s.paced = true;
            }
            drained.await;
        }
    }

    /// Queues a frame. Returns false if the connection is closing or the
    /// frame overflowed the queue (which closes it with 4000).
    pub fn push(&self, out: Out) -> bool {
        match self.push_quiet(out) {
            Pushed::Woken => true,
            Pushed::Wake => {
                self.wake();
                true
            }
            Pushed::Refused => false,
        }
    }

    /// Queues a frame like [`Self::push`] but leaves waking the writer to
    /// the caller ([`Pushed::Wake`]), who may queue more first.
    pub fn push_quiet(&self, out: Out) -> Pushed {
        let len = out.size();
        let mut s = self.state.lock().unwrap();
        if s.closing.is_some() {
            return Pushed::Refused;
        }
        if s.bytes + len > self.limit {
            // Nothing more reaches a client that cannot keep up.
            s.frames.clear();
            s.bytes = 0;
            s.closing = Some(Close::SLOW_CONSUMER);
            let paced = std::mem::take(&mut s.paced);
            drop(s);
            crate::metrics::dropped("slow_consumer");
            self.wake.notify_one();
            if paced {
                self.drained.notify_waiters();
            }
            return Pushed::Refused;
        }
        s.bytes += len;
        // Only the first frame after a take asks for a wake-up: frames
        // already waiting mean their push woke the writer (or will), which
        // has not taken them yet (a take empties the queue under this lock).
        let pushed = if s.frames.is_empty() {
            let hint = s.hint;
            s.frames.reserve(hint);
            Pushed::Wake
        } else {
            Pushed::Woken
        };
        s.frames.push_back(out);
        pushed
    }

    /// Wakes the writer: frames queued by [`Self::push_quiet`] wait.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Begins closing with `code` after the frames already queued. The first
    /// close wins.
    pub fn close(&self, close: Close) {
        let mut s = self.state.lock().unwrap();
        if s.closing.is_none() {
            s.closing = Some(close);
        }
        let paced = std::mem::take(&mut s.paced);
        drop(s);
        self.wake.notify_one();
        if paced {
            self.drained.notify_waiters();
        }
    }

    /// The close in progress, if any.
    pub fn closing(&self) -> Option<Close> {
        self.state.lock().unwrap().closing
    }

    /// Waits until there is something to take.
    pub async fn ready(&self) {
        self.wake.notified().await
    }

    /// Takes everything queued.
    pub fn take(&self) -> Batch {
        let mut s = self.state.lock().unwrap();
        s.bytes = 0;
        s.hint = s.frames.len().min(MAX_HINT);
        let paced = std::mem::take(&mut s.paced);
        let batch = Batch { frames: std::mem::take(&mut s.frames).into(), closing: s.closing };
        drop(s);
        if paced {
            self.drained.notify_waiters();
        }
        batch
    }
}

/// Before a write takes the queue: lets the tasks that are ready now run
/// first, so that a fanout under way adds its frames to this write rather
/// than to the next. Under a broadcast to thousands that is a third more
/// frames per socket write and a quarter less CPU per delivery; under light
/// load the chat benchmark's latency did not move. Two yields measured best
/// (`loadtest/ab.sh`, 5,000 members: one yield -17%, two -25%, four and
/// eight fewer frames per write than two, as their wake-ups start to
/// spread the writes out again).
pub async fn gather() {
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_4000_and_discards() {
        let o = Outbox::new(10);
        assert!(o.push(Out::Data(Bytes::from_static(b"12345"))));
        assert!(o.push(Out::Data(Bytes::from_static(b"12345"))));
        assert!(!o.push(Out::Data(Bytes::from_static(b"1"))));
        let b = o.take();
        assert!(b.frames.is_empty());
        assert_eq!(b.closing, Some(Close::SLOW_CONSUMER));
        assert!(!o.push(Out::Data(Bytes::from_static(b"1"))), "closed for good");
    }

    #[test]
    fn paced_frames_use_half_the_queue_and_wait_for_the_writer() {
        let o = Outbox::new(100);
        assert!(o.has_room(100), "a lone frame may use it all");
        assert!(!o.has_room(101));
        o.push(Out::Data(Bytes::from_static(&[0; 40])));
        assert!(o.has_room(10) && !o.has_room(11), "half the bound");
        let o = std::sync::Arc::new(o);
        let waiter = {
            let o = o.clone();
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async move {
                let wait = o.wait_room(30);
                tokio::pin!(wait);
                assert!(futures::poll!(wait.as_mut()).is_pending());
                o.take();
                assert!(futures::poll!(wait.as_mut()).is_ready(), "woken by the take");
                o.push(Out::Data(Bytes::from_static(&[0; 50])));
                let wait = o.wait_room(1);
                tokio::pin!(wait);
                assert!(futures::poll!(wait.as_mut()).is_pending());
                o.close(Close::BYE);
                o.wait_room(1).await;
                true
            })
        };
        assert!(waiter, "a closing outbox never keeps a producer waiting");
        assert!(!o.has_room(1), "no room once closing");
    }

    #[test]
    fn only_the_first_push_after_a_take_wakes_the_writer() {
        let o = Outbox::new(100);
        let frame = || Out::Data(Bytes::from_static(b"f"));
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
            assert!(o.push(frame()));
            o.ready().await;
            let ready = o.ready();
            tokio::pin!(ready);
            assert!(futures::poll!(ready.as_mut()).is_pending());
            assert!(o.push(frame()));
            assert!(futures::poll!(ready.as_mut()).is_pending(), "frames were waiting: no second wake-up");
            assert_eq!(o.take().frames.len(), 2);
            assert!(o.push(frame()));
            assert!(futures::poll!(ready.as_mut()).is_ready(), "the first push after a take wakes");
            // Nobody waiting (an SSE stream detached): the wake-up is kept.
            o.take();
            assert!(o.push(frame()) && o.push(frame()));
            assert!(futures::poll!(std::pin::pin!(o.ready())).is_ready());
        });
    }

    #[test]
    fn a_quiet_push_leaves_the_wake_up_to_its_caller() {
        let o = Outbox::new(4);
        let frame = || Out::Data(Bytes::from_static(b"f"));
        let ready = || futures::executor::block_on(async { futures::poll!(std::pin::pin!(o.ready())).is_ready() });
        assert_eq!(o.push_quiet(frame()), Pushed::Wake, "the first frame asks for a wake-up");
        assert!(!ready(), "and does not wake by itself");
        assert_eq!(o.push_quiet(frame()), Pushed::Woken);
        o.wake();
        assert!(ready());
        assert_eq!(o.take().frames.len(), 2);
        assert_eq!(o.push_quiet(frame()), Pushed::Wake);
        assert_eq!(o.push_quiet(Out::Data(Bytes::from_static(b"1234"))), Pushed::Refused, "overflow");
        assert!(ready(), "an overflow closes and wakes at once");
        assert_eq!(o.push_quiet(frame()), Pushed::Refused, "closing");
    }

    #[test]
    fn close_keeps_queued_frames_and_first_close_wins() {
        let o = Outbox::new(100);
        o.push(Out::Data(Bytes::from_static(b"a")));
        o.close(Close::DRAINING);
        o.close(Close::BYE);
        let b = o.take();
        assert_eq!(b.frames.len(), 1);
        assert_eq!(b.closing, Some(Close::DRAINING));
    }
}
