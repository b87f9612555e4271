//! The revocation log on Redis (see [`crate::store::log`]): three keys under
//! the `{feed}` hash tag (one slot on a Cluster), changed together by Lua
//! scripts so that an event and the state it leaves are never apart.
//!
//! Scripts go as `EVAL` (a few hundred bytes): the log is written once per
//! revocation and read a few times a second per replica, and `EVAL` keeps
//! the replica-acknowledged write path (`WAIT` in the same pipeline) as it
//! is for every other security-relevant write.

use redis::Value;

use super::RedisStore;
use crate::store::log::{LogAppend, LogEntry, LogId, LogView, StateChange};
use crate::store::{StoreError, StoreResult};

const LOG: &str = "{feed}:log";
const STATE: &str = "{feed}:state";
const EXPIRY: &str = "{feed}:exp";

/// Expired state fields pruned per script call.
const PRUNE_BATCH: usize = 1000;
/// Fields read per `HSCAN` round trip.
const SCAN_BATCH: usize = 500;

/// KEYS: log, state, expiry. ARGV: event, max_len, retention ms, field,
/// mode (set|del|none), value, expires_at ms ('' = never), now ms.
const APPEND: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[5] == 'set' then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[6])
  if ARGV[7] == '' then
    redis.call('ZREM', KEYS[3], ARGV[4])
  else
    redis.call('ZADD', KEYS[3], ARGV[7], ARGV[4])
  end
elseif ARGV[5] == 'del' then
  redis.call('HDEL', KEYS[2], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
end
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[8], 'LIMIT', 0, 16)
for _, f in ipairs(old) do
  redis.call('HDEL', KEYS[2], f)
  redis.call('ZREM', KEYS[3], f)
end
return id
";

/// KEYS: log. ARGV: mode (after|tail), id, count. Returns {0} for an absent
/// log, else {1, last-generated id, '0-0' when nothing was ever trimmed or ''
/// when something was (or Redis cannot tell: before 7.0), first id or '',
/// entries}. Trimming removes the oldest entries only (the log is never
/// `XDEL`ed), so "something was trimmed" plus the oldest id held is enough.
const READ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, first, len, added = '0-0', '', -1, -2
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then last = info[i + 1]
  elseif k == 'length' then len = info[i + 1]
  elseif k == 'entries-added' then added = info[i + 1]
  elseif k == 'first-entry' and type(info[i + 1]) == 'table' then first = info[i + 1][1]
  end
end
local trimmed = ''
if len == added then trimmed = '0-0' end
local entries
if ARGV[1] == 'tail' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[3])
else
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {1, last, trimmed, first, entries}
";

/// KEYS: state, expiry. ARGV: now ms, batch. Removes expired fields.
const PRUNE: &str = r"
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, f in ipairs(old) do
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
end
return #old
";

fn bad(op: &'static str, what: &str) -> StoreError {
    StoreError::new(op, format!("unexpected reply: {what}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn id_of(op: &'static str, v: &Value) -> StoreResult<LogId> {
    text(v)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad(op, "stream id"))
}

fn opt_id(op: &'static str, v: &Value) -> StoreResult<Option<LogId>> {
    match text(v).as_deref() {
        Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|()| bad(op, "stream id")),
        None => Err(bad(op, "stream id")),
    }
}

/// One `[id, [field, value, ...]]` stream entry.
fn entry_of(op: &'static str, v: &Value) -> StoreResult<LogEntry> {
    let Value::Array(parts) = v else {
        return Err(bad(op, "entry"));
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return Err(bad(op, "entry"));
    };
    let data = match fields.as_slice() {
        [_, Value::BulkString(b)] => b.clone(),
        _ => return Err(bad(op, "entry fields")),
    };
    Ok(LogEntry {
        id: id_of(op, id)?,
        data,
    })
}

fn view_of(op: &'static str, reply: &Value, newest_first: bool) -> StoreResult<LogView> {
    let Value::Array(parts) = reply else {
        return Err(bad(op, "not an array"));
    };
    match parts.as_slice() {
        [Value::Int(0)] => Ok(LogView::default()),
        [Value::Int(1), last, trimmed, first, Value::Array(entries)] => {
            let mut entries = entries
                .iter()
                .map(|e| entry_of(op, e))
                .collect::<StoreResult<Vec<_>>>()?;
            if newest_first {
                entries.reverse();
            }
            Ok(LogView {
                entries,
                exists: true,
                last: id_of(op, last)?,
                trimmed: opt_id(op, trimmed)?,
                first: opt_id(op, first)?,
            })
        }
        _ => Err(bad(op, "shape")),
    }
}

impl RedisStore {
    fn eval(&self, script: &str, keys: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(self.key(k));
        }
        cmd
    }

    pub(super) async fn append_log(&self, a: &LogAppend<'_>) -> StoreResult<LogId> {
        let mut cmd = self.eval(APPEND, &[LOG, STATE, EXPIRY]);
        let (mode, value, expires) = match a.change {
            StateChange::Set {
                value,
                expires_at_ms,
            } => (
                "set",
                value,
                expires_at_ms.map(|t| t.to_string()).unwrap_or_default(),
            ),
            StateChange::Delete => ("del", &b""[..], String::new()),
            StateChange::Nothing => ("none", &b""[..], String::new()),
        };
        cmd.arg(a.event)
            .arg(a.max_len.max(1))
            .arg(super::ttl_ms(a.retention))
            .arg(a.field)
            .arg(mode)
            .arg(value)
            .arg(expires)
            .arg(super::super::now_ms());
        let id: Value = self.write("log_append", cmd).await?;
        id_of("log_append", &id)
    }

    pub(super) async fn read_log(&self, after: LogId, max: usize) -> StoreResult<LogView> {
        let mut cmd = self.eval(READ, &[LOG]);
        cmd.arg("after").arg(after.to_string()).arg(max.max(1));
        let reply: Value = self.query("log_read", &cmd).await?;
        view_of("log_read", &reply, false)
    }

    pub(super) async fn tail_log(&self, max: usize) -> StoreResult<LogView> {
        let mut cmd = self.eval(READ, &[LOG]);
        cmd.arg("tail").arg("0-0").arg(max.max(1));
        let reply: Value = self.query("log_tail", &cmd).await?;
        view_of("log_tail", &reply, true)
    }

    pub(super) async fn log_state_values(
        &self,
        now_ms: u64,
        max: usize,
    ) -> StoreResult<Vec<Vec<u8>>> {
        loop {
            let mut cmd = self.eval(PRUNE, &[STATE, EXPIRY]);
            cmd.arg(now_ms).arg(PRUNE_BATCH);
            let pruned: usize = self.query("log_state", &cmd).await?;
            if pruned < PRUNE_BATCH {
                break;
            }
        }
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("HSCAN");
            cmd.arg(self.key(STATE))
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, pairs): (u64, Vec<Vec<u8>>) = self.query("log_state", &cmd).await?;
            out.extend(pairs.into_iter().skip(1).step_by(2));
            if out.len() > max {
                return Err(StoreError::new(
                    "log_state",
                    format!("more than {max} revocations in force"),
                ));
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}
