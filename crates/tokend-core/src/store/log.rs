//! The revocation log behind `tokend.v1.RevocationFeed`: an append-only,
//! bounded log of events plus the *state* those events leave behind (what
//! is revoked right now), kept side by side in the store so that every
//! replica sees every event and a new watcher can get a snapshot without a
//! scan of the whole keyspace.
//!
//! On Redis the log is a Stream (`{feed}:log`, `XADD ... MAXLEN ~ N`, a TTL
//! refreshed on every append) and the state a hash (`{feed}:state`, one
//! field per revocation key) with a sorted set of expiries (`{feed}:exp`).
//! The three keys share the `{feed}` hash tag, so one Lua script updates them
//! atomically on a single Redis, through Sentinel and on a Cluster alike.
//! Stream ids (`<ms>-<seq>`) are the cursors.
//!
//! Whether a read can continue from a cursor without a gap is decided here,
//! once, for every backend ([`LogView::continues`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A position in the log: a Redis stream id, `<ms>-<seq>`. `0-0` is the
/// position before every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogId {
    pub ms: u64,
    pub seq: u64,
}

impl LogId {
    pub const ZERO: LogId = LogId { ms: 0, seq: 0 };
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for LogId {
    type Err = ();
    /// Strict: two decimal numbers joined by `-`, at most 20 digits each.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let num = |t: &str| {
            if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            t.parse::<u64>().map_err(|_| ())
        };
        Ok(LogId {
            ms: num(ms)?,
            seq: num(seq)?,
        })
    }
}

/// One log entry: its id and the event's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub id: LogId,
    pub data: Vec<u8>,
}

/// What a read of the log saw, with what is needed to tell whether it
/// continues a cursor without a gap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogView {
    /// Entries after the position asked for (or the newest, for a tail),
    /// oldest first.
    pub entries: Vec<LogEntry>,
    /// Whether the log exists at all (a Redis stream expires after its
    /// retention without appends, and is gone after a data loss).
    pub exists: bool,
    /// The id of the newest entry ever appended (`0-0` when none).
    pub last: LogId,
    /// The newest id trimmed away (`0-0` when none). `None` when the backend
    /// cannot tell (Redis: something was trimmed, or Redis before 7.0 cannot
    /// say): then [`LogView::first`] is used, conservatively.
    pub trimmed: Option<LogId>,
    /// The oldest entry still held.
    pub first: Option<LogId>,
}

impl LogView {
    /// Whether the entries after `after` are all still in the log, so a read
    /// from `after` misses nothing. `0-0` continues an absent log (nothing was
    /// ever appended), nothing else does (the log expired or was lost); a
    /// cursor beyond the newest id is from another incarnation of the log.
    pub fn continues(&self, after: LogId) -> bool {
        if !self.exists {
            return after == LogId::ZERO;
        }
        if after > self.last {
            return false;
        }
        match self.trimmed {
            Some(trimmed) => after >= trimmed,
            // Without the trim point: only when nothing before the oldest held
            // entry can be missing.
            None => match self.first {
                Some(first) => after >= first,
                None => after == self.last,
            },
        }
    }
}

/// What an append does to the state beside the log.
#[derive(Debug, Clone, Copy)]
pub enum StateChange<'a> {
    /// Sets `field` to `value` (the event, re-read for snapshots) until
    /// `expires_at_ms` (Unix ms; `None` = until deleted).
    Set {
        value: &'a [u8],
        expires_at_ms: Option<u64>,
    },
    /// Removes `field` (a client enabled again).
    Delete,
    /// The event changes no state (keys rotated).
    Nothing,
}

/// One append: the event, and the state field it sets or clears.
#[derive(Debug, Clone, Copy)]
pub struct LogAppend<'a> {
    pub event: &'a [u8],
    pub field: &'a str,
    pub change: StateChange<'a>,
    /// About how many entries the log keeps (older ones are trimmed).
    pub max_len: usize,
    /// How long the log lives after its last append.
    pub retention: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> LogId {
        LogId { ms, seq }
    }

    #[test]
    fn ids_parse_strictly_and_order_numerically() {
        assert_eq!(
            "1700000000000-3".parse::<LogId>(),
            Ok(id(1_700_000_000_000, 3))
        );
        assert_eq!(id(5, 0).to_string().parse::<LogId>(), Ok(id(5, 0)));
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "+1-2",
            "1 -2",
            &"9".repeat(21),
        ] {
            assert!(bad.parse::<LogId>().is_err(), "{bad:?}");
        }
        assert!(id(10, 0) > id(9, 99));
        assert!(id(10, 2) > id(10, 1));
    }

    #[test]
    fn gaps_are_detected() {
        let view = |exists, last, trimmed, first| LogView {
            entries: vec![],
            exists,
            last,
            trimmed,
            first,
        };
        // Absent: only the very beginning continues.
        assert!(view(false, LogId::ZERO, None, None).continues(LogId::ZERO));
        assert!(!view(false, LogId::ZERO, None, None).continues(id(5, 0)));
        // Nothing trimmed: every cursor up to the newest id.
        let v = view(true, id(9, 0), Some(LogId::ZERO), Some(id(1, 0)));
        assert!(v.continues(LogId::ZERO) && v.continues(id(5, 0)) && v.continues(id(9, 0)));
        assert!(!v.continues(id(9, 1)), "from the future");
        // Trimmed up to 4-0: 4-0 itself continues (5-0 onwards held), 3-0 not.
        let v = view(true, id(9, 0), Some(id(4, 0)), Some(id(5, 0)));
        assert!(v.continues(id(4, 0)) && v.continues(id(6, 0)));
        assert!(!v.continues(id(3, 0)));
        // Unknown trim point: conservative.
        let v = view(true, id(9, 0), None, Some(id(5, 0)));
        assert!(v.continues(id(5, 0)) && !v.continues(id(4, 0)));
        let v = view(true, id(9, 0), None, None);
        assert!(v.continues(id(9, 0)) && !v.continues(id(8, 0)));
    }
}
