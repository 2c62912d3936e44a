//! One room's delivery to its local members: one task per locally joined
//! room, holding the gateway's subscription to `sb.room.<room>`.
//!
//! The task feeds the [`room::Room`] state machine with room events,
//! members attaching and detaching, ring changes and the answers of the
//! calls it makes for it (gap fills, syncs with a new owner, catch-up pages,
//! waits for a member's queue). The delivery rules themselves, and why, are
//! in [`room`].
//!
//! Messages that are already waiting on the subscription are taken in one
//! go (up to [`BURST`]), and the members' writers are woken once after it
//! ([`Room::wake_writers`]), not at their first frame: a writer woken in the
//! middle of a 5,000-member pass runs on the other core at once, writes one
//! frame, and contends with the pass for its queue. Under a broadcast to
//! 5,000 that was a quarter of the gateway's CPU per delivery
//! (`docs/benchmarks.md`); when nothing waits, the wake-up is as immediate
//! as before.

mod buffer;
mod catch_up;
mod changes;
mod encoded;
mod joins;
pub mod room;

use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use futures::channel::mpsc;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use prost::Message as _;
use proto::internal::{self, router_reply, router_request};
use proto::{pb, subject};
use router::client::{CallError, RouterClient};
use tokio::task::JoinHandle;

pub use buffer::Budget;
pub use encoded::Encoded;
pub use joins::{Joining, Joins};
pub use room::{Action, Attach, Bounds, Room};

use crate::delivery::rooms::SaysReady;

/// Attempts of a call to the owner before giving up.
const ATTEMPTS: u32 = 5;
/// Most room events taken in one go before their writers are woken.
const BURST: usize = 64;
/// Members re-registered per sync request.
const SYNC_PAGE: usize = 1000;

/// Commands from sessions. Small, and `Attach` boxed: the room's channel
/// allocates a node per command (tokio's, before, allocated 32 slots at a
/// time: an inline `Attach` cost each followed room ~5.9 KiB).
pub enum Cmd {
    Attach(Box<Attach>),
    Detach(Arc<str>),
    Stop,
}

/// What background work reports back.
enum Done {
    Fill(Result<internal::HistoryReply, CallError>),
    Sync(Result<internal::JoinReply, CallError>),
    Fetch(Arc<str>, Result<internal::HistoryReply, CallError>),
    Room(Arc<str>),
}

/// What a room's task starts with. Boxed, so that the task's future holds
/// it once: an async fn keeps its arguments beside the locals they move
/// into, and a gateway holds one such task per followed room.
pub struct Follow {
    pub room: String,
    pub gateway: Arc<str>,
    pub bus: Bus,
    pub router: Arc<RouterClient>,
    pub joins: Joins,
    pub bounds: Bounds,
    pub cmds: mpsc::UnboundedReceiver<Cmd>,
    /// Told whether the subscription is live.
    pub said: SaysReady,
}

/// Subscribes to `sb.room.<room>`, says whether it could, and runs the
/// room's fanout until `Cmd::Stop` or the subscription ends.
pub async fn run(follow: Box<Follow>) {
    let Follow { room, gateway, bus, router, joins, bounds, mut cmds, said } = *follow;
    let mut sub = match bus.subscribe(subject::room(&room)).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(error = %e, room, "room subscription failed");
            return said.say(false);
        }
    };
    said.say(true);
    let mut view = router.membership().clone();
    let owner = router.membership().ring().owner(&room).map(Arc::from);
    let room: Arc<str> = room.into();
    let mut state = Room::new(room.clone(), gateway, owner, bounds, joins);
    let mut work: FuturesUnordered<JoinHandle<Done>> = FuturesUnordered::new();
    let mut sync: Option<tokio::task::AbortHandle> = None;
    let mut actions = Vec::new();
    'run: loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                on_message(&mut state, msg, &mut actions);
                // Take the rest of a burst before waking writers (below),
                // so that each writes it in one go.
                for _ in 1..BURST {
                    match sub.next().now_or_never() {
                        Some(Some(msg)) => on_message(&mut state, msg, &mut actions),
                        Some(None) => break 'run,
                        None => break,
                    }
                }
            }
            cmd = cmds.next() => match cmd {
                Some(Cmd::Attach(a)) => state.attach(*a, &mut actions),
                Some(Cmd::Detach(conn)) => state.detach(&conn),
                Some(Cmd::Stop) | None => break,
            },
            Some(done) = work.next(), if !work.is_empty() => match done {
                Ok(Done::Fill(r)) => state.on_fill(r, &mut actions),
                Ok(Done::Sync(r)) => state.on_sync(r, &mut actions),
                Ok(Done::Fetch(conn, r)) => state.on_fetch(&conn, r, &mut actions),
                Ok(Done::Room(conn)) => state.on_room(&conn, &mut actions),
                // Only a replaced sync is aborted.
                Err(_) => {}
            },
            alive = view.next_change() => {
                if !alive {
                    break;
                }
                let owner = router.membership().ring().owner(&room).map(Arc::from);
                state.on_ring_change(owner, &mut actions);
            }
        }
        state.wake_writers();
        for action in actions.drain(..) {
            let (router, room) = (router.clone(), room.clone());
            let task = match action {
                Action::Fill(since) => tokio::spawn(async move { Done::Fill(history(&router, &room, since).await) }),
                Action::Fetch(conn, since) => {
                    tokio::spawn(async move { Done::Fetch(conn, history(&router, &room, since).await) })
                }
                Action::AwaitRoom(conn, outbox, len) => tokio::spawn(async move {
                    outbox.wait_room(len).await;
                    Done::Room(conn)
                }),
                Action::Sync(members) => {
                    if let Some(old) = sync.take() {
                        old.abort();
                    }
                    let gateway = members.first().map(|m| m.gateway.clone()).unwrap_or_default();
                    let task =
                        tokio::spawn(async move { Done::Sync(sync_members(&router, &room, gateway, members).await) });
                    sync = Some(task.abort_handle());
                    task
                }
            };
            work.push(task);
        }
    }
    state.wake_writers();
    for task in work.iter() {
        task.abort();
    }
}

/// Feeds one message of the room's subscription to `state`.
fn on_message(state: &mut Room, msg: bus::Message, actions: &mut Vec<Action>) {
    match internal::RoomEvent::decode(msg.payload) {
        Ok(ev) => state.on_event(ev, actions),
        Err(e) => tracing::warn!(error = %e, "undecodable room event"),
    }
}

/// The owner's history after `since`, retried with backoff.
async fn history(router: &RouterClient, room: &str, since: pb::Since) -> Result<internal::HistoryReply, CallError> {
    let mut attempt = 0;
    loop {
        let req = router_request::Kind::History(internal::HistoryRequest { since: Some(since.clone()), limit: 0 });
        match router.call(room, req).await {
            Ok(router_reply::Kind::History(h)) => return Ok(h),
            Ok(_) => return Err(CallError::Unavailable),
            Err(e) => {
                attempt += 1;
                if attempt >= ATTEMPTS {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
        }
    }
}

/// Registers `members` with the room's owner, a page at a time, retried
/// with backoff; the last page's answer gives the owner's position.
async fn sync_members(
    router: &RouterClient,
    room: &str,
    gateway: String,
    members: Vec<internal::MemberRef>,
) -> Result<internal::JoinReply, CallError> {
    let mut attempt = 0;
    'retry: loop {
        let mut last = Err(CallError::Unavailable);
        for page in members.chunks(SYNC_PAGE) {
            let kind =
                router_request::Kind::Sync(internal::SyncRequest { gateway: gateway.clone(), members: page.to_vec() });
            last = match router.call(room, kind).await {
                Ok(router_reply::Kind::Join(j)) => Ok(j),
                Ok(_) => Err(CallError::Unavailable),
                Err(e) => Err(e),
            };
            if last.is_err() {
                attempt += 1;
                if attempt >= ATTEMPTS {
                    return last;
                }
                tokio::time::sleep(Duration::from_millis(300 * attempt as u64)).await;
                continue 'retry;
            }
        }
        return last;
    }
}

#[cfg(test)]
mod tests {
    /// Every attach and detach is a command on the heap.
    #[test]
    fn a_command_is_small() {
        assert!(size_of::<super::Cmd>() <= 32, "a room command is {} B", size_of::<super::Cmd>());
    }

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F: std::future::Future>(_: fn(A) -> F) -> usize {
        size_of::<F>()
    }

    /// A gateway holds one room task per followed room, and in a cluster
    /// every gateway follows nearly every room: its arguments are held once
    /// (boxed), not beside the locals they move into (1,816 B before).
    #[test]
    fn a_room_task_holds_its_arguments_once() {
        let size = future_size(super::run);
        assert!(size <= 1100, "the room task's future is {size} B");
    }
}
