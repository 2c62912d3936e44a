//! Correctness bookkeeping: what one member saw of each room's stream.
//!
//! Every scenario feeds each member's events through a [`Continuity`], so a
//! run reports lost, duplicated and out-of-order messages and resyncs per
//! room instead of only speed.

use std::collections::HashMap;

use serde_json::Value;

/// One member's view of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomView {
    /// The epoch messages are currently expected in.
    pub epoch: String,
    /// The last seq delivered.
    pub last: u64,
    /// Messages received in order.
    pub received: u64,
    /// Seqs skipped (a gap of three counts three).
    pub lost: u64,
    /// Messages at or below `last` again.
    pub duplicated: u64,
    /// Messages whose epoch changed without a resync first.
    pub silent_epoch_changes: u64,
    /// `resync` events, and resumes that could not recover.
    pub resyncs: u64,
}

impl RoomView {
    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.silent_epoch_changes == 0 && self.resyncs == 0
    }
}

/// One member's views of all its rooms.
#[derive(Debug, Clone, Default)]
pub struct Continuity {
    pub rooms: HashMap<String, RoomView>,
}

impl Continuity {
    /// Records a join reply: the position the member starts from. A resume
    /// that did not recover counts as a resync.
    pub fn joined(&mut self, room: &str, reply: &Value) {
        let epoch = reply["epoch"].as_str().unwrap_or_default();
        let seq = reply["seq"].as_u64().unwrap_or_default();
        self.join_at(room, epoch, seq, reply["recovered"].as_bool());
    }

    /// [`Self::joined`] from the reply's fields.
    pub fn join_at(&mut self, room: &str, epoch: &str, seq: u64, recovered: Option<bool>) {
        let view = self.rooms.entry(room.to_owned()).or_default();
        match recovered {
            // Recovered: missed messages follow; `last` stays where it was.
            Some(true) => {}
            Some(false) => {
                view.resyncs += 1;
                view.epoch = epoch.to_owned();
                view.last = seq;
            }
            None => {
                view.epoch = epoch.to_owned();
                view.last = seq;
            }
        }
    }

    /// Records a server event; returns the room it concerned, if any.
    pub fn event(&mut self, ev: &Value) -> Option<String> {
        let room = ev["room"].as_str()?;
        let (epoch, seq) = (ev["epoch"].as_str().unwrap_or_default(), ev["seq"].as_u64().unwrap_or_default());
        match ev["type"].as_str()? {
            "message" => self.message(room, epoch, seq),
            "resync" => self.resync(room, epoch, seq),
            _ => return None,
        }
        Some(room.to_owned())
    }

    /// A `message` in `room`.
    pub fn message(&mut self, room: &str, epoch: &str, seq: u64) {
        let view = self.rooms.entry(room.to_owned()).or_default();
        if view.epoch != epoch {
            if !view.epoch.is_empty() {
                view.silent_epoch_changes += 1;
            }
            view.epoch = epoch.to_owned();
            view.last = seq.saturating_sub(1);
        }
        if seq <= view.last {
            view.duplicated += 1;
        } else {
            view.lost += seq - view.last - 1;
            view.last = seq;
            view.received += 1;
        }
    }

    /// A `resync` in `room`: continuity restarts after `seq`.
    pub fn resync(&mut self, room: &str, epoch: &str, seq: u64) {
        let view = self.rooms.entry(room.to_owned()).or_default();
        view.resyncs += 1;
        view.epoch = epoch.to_owned();
        view.last = seq;
    }

    /// Where the member is in `room`, for resuming with `since`.
    pub fn position(&self, room: &str) -> Option<(String, u64)> {
        self.rooms.get(room).filter(|v| !v.epoch.is_empty()).map(|v| (v.epoch.clone(), v.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(seq: u64, epoch: &str) -> Value {
        json!({"type": "message", "room": "r", "seq": seq, "epoch": epoch})
    }

    #[test]
    fn counts_gaps_duplicates_and_silent_epoch_changes() {
        let mut c = Continuity::default();
        c.joined("r", &json!({"epoch": "e", "seq": 0}));
        for s in [1, 2, 4, 4, 3, 5] {
            c.event(&msg(s, "e"));
        }
        let v = &c.rooms["r"];
        assert_eq!((v.received, v.lost, v.duplicated), (4, 1, 2));
        c.event(&msg(1, "f"));
        assert_eq!(c.rooms["r"].silent_epoch_changes, 1);
        c.event(&json!({"type": "resync", "room": "r", "epoch": "g", "seq": 7}));
        c.event(&msg(8, "g"));
        let v = &c.rooms["r"];
        assert_eq!((v.resyncs, v.silent_epoch_changes, v.last), (1, 1, 8));
        assert!(!v.is_clean());
    }

    #[test]
    fn a_recovered_resume_keeps_the_position() {
        let mut c = Continuity::default();
        c.joined("r", &json!({"epoch": "e", "seq": 0}));
        c.event(&msg(1, "e"));
        c.joined("r", &json!({"epoch": "e", "seq": 5, "recovered": true}));
        for s in 2..=5 {
            c.event(&msg(s, "e"));
        }
        assert!(c.rooms["r"].is_clean());
        assert_eq!(c.position("r"), Some(("e".into(), 5)));
    }
}
