//! Open-loop (fixed-rate) workloads: tail latency without coordinated
//! omission (issue 21, step 7).
//!
//! The closed loop (`--concurrency` connections, each sending its next
//! request when the last one is answered) slows down with the server: a
//! stall delays the requests that would have been sent during it, and they
//! are never measured. Here a dispatcher thread releases request *slots* on a
//! fixed schedule (slot `i` is due at `start + i / rate`), whatever the
//! answers; each slot is sent by the first of the `--concurrency` connections
//! to be free (in order: a slot due while all are busy waits), and its
//! latency counts from its **intended** send time, so a stall shows up as
//! latency for every request scheduled during it. Outstanding requests are bounded (`--max-in-flight`): a slot
//! due while that many are outstanding is not sent and counts as an error
//! ("missed schedule"), so an overloaded server is reported, not buffered
//! without bound.
//!
//! Besides the percentiles it reports the pause evidence asked by issue 21:
//! the longest silence (no answer arrived while requests were outstanding),
//! the load generator's own send lag, the run-queue wait of the server's and
//! the load generator's threads (`/proc/PID/task/*/schedstat`), and the
//! requests the server itself timed above 10 ms (`tokend_request_duration_seconds`
//! from `GET /metrics`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokend::token::Algorithm;

use super::{
    Args, Conn, Ctx, Floor, MAX_POOL, Op, Outcome, Target, connect, floor_of, one_request,
    peak_rss_kib, proc_cpu_ticks, readiness, run_target,
};

/// The open-loop options (flattened into the load generator's).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct OpenArgs {
    /// Open loop: send this many requests per second on a fixed schedule,
    /// whatever the answers, instead of the closed loop; latency counts from
    /// each request's intended send time (no coordinated omission).
    #[arg(long, value_parser = parse_rate, conflicts_with = "rate_of_max")]
    pub rate: Option<f64>,
    /// Measure each workload's closed-loop maximum (the usual run), then run
    /// it open-loop at these fractions of the measured req/s (e.g. 0.5,0.9).
    #[arg(long, value_delimiter = ',', value_parser = parse_fraction)]
    pub rate_of_max: Vec<f64>,
    /// Open loop: most requests outstanding at once; a request due while
    /// that many are unanswered is not sent and counts as an error
    /// ("missed schedule").
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_in_flight: u64,
    /// Open loop: after each workload, run the same transport's probe
    /// (grpc-health, http-healthz) at the workload's achieved rate, so that
    /// its own cost subtracts a transport floor measured at the same rate.
    #[arg(long)]
    pub matched_floor: bool,
    /// Open loop: the server's Prometheus `/metrics` (host:port; default its
    /// HTTP address), for the requests it timed above 10 ms itself.
    #[arg(long)]
    pub metrics: Option<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| *r >= 1.0 && *r <= 1e6)
        .ok_or_else(|| format!("{s:?} is not a rate from 1 to 1000000 requests/s"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| *r > 0.0 && *r <= 2.0)
        .ok_or_else(|| format!("{s:?} is not a fraction of the maximum rate (0 to 2)"))
}

/// Answers slower than this count as "over 10 ms" (issue 21: no pause above
/// 10 ms at 90 % of the maximum rate).
const SLOW_US: u64 = 10_000;
/// Tokens per second of run kept ready for a cold workload's closed-loop
/// maximum when open-loop runs follow (above any cold introspection rate
/// measured on the 2-core machine).
const COLD_MAX_PER_S: f64 = 20_000.0;
/// How long answers are awaited after the schedule's last slot.
const DRAIN: Duration = Duration::from_secs(10);

// === the schedule and its statistics (pure) ===

/// Slots in a run: `rate` per second for `seconds`, at most `limit`, at least one.
pub(crate) fn slots(rate: f64, seconds: f64, limit: u64) -> u64 {
    ((rate * seconds).floor() as u64).clamp(1, limit.max(1))
}

/// When slot `i` is due, in nanoseconds after the schedule's start.
pub(crate) fn intended_ns(i: u64, rate: f64) -> u64 {
    (i as f64 * 1e9 / rate).round() as u64
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

/// The longest time with requests outstanding and no answer arriving.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Silence {
    /// Its length (microseconds).
    pub longest_us: u64,
    /// When it ended (the answer that broke it), microseconds after the start.
    pub at_us: u64,
    /// Silences longer than the threshold.
    pub over: u64,
}

/// From `(sent, answered)` times of every request: the silences, that is the
/// intervals between consecutive answers (or before the first) during which
/// at least one request was outstanding, counted from the later of the
/// previous answer and the earliest send still unanswered.
pub(crate) fn silences(requests: &[(u64, u64)], threshold_us: u64) -> Silence {
    let mut by_answer: Vec<(u64, u64)> = requests.to_vec();
    by_answer.sort_unstable_by_key(|&(sent, done)| (done, sent));
    // suffix_sent[k]: the earliest send among the requests answered at or
    // after the k-th answer: outstanding just before it.
    let mut suffix_sent = vec![u64::MAX; by_answer.len() + 1];
    for k in (0..by_answer.len()).rev() {
        suffix_sent[k] = suffix_sent[k + 1].min(by_answer[k].0);
    }
    let mut s = Silence::default();
    let mut prev: Option<u64> = None;
    for (k, &(_, done)) in by_answer.iter().enumerate() {
        let from = match prev {
            Some(p) => p.max(suffix_sent[k]),
            None => suffix_sent[k],
        };
        let gap = done.saturating_sub(from);
        if gap > threshold_us {
            s.over += 1;
        }
        if gap > s.longest_us {
            s.longest_us = gap;
            s.at_us = done;
        }
        prev = Some(done);
    }
    s
}

/// From a Prometheus text exposition: the requests of one transport timed by
/// the server (`tokend_request_duration_seconds`, every endpoint but
/// `/metrics`), and how many of them took at most `le` seconds (`le` exactly
/// as the bucket label spells it). None when the histogram is absent.
pub(crate) fn server_timed(text: &str, transport: &str, le: &str) -> Option<(u64, u64)> {
    let want_t = format!("transport=\"{transport}\"");
    let want_le = format!("le=\"{le}\"");
    let (mut count, mut within, mut seen) = (0u64, 0u64, false);
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        if !labels.split(',').any(|l| l == want_t) || labels.contains("endpoint=\"/metrics\"") {
            continue;
        }
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        match name {
            "tokend_request_duration_seconds_count" => {
                count += v as u64;
                seen = true;
            }
            "tokend_request_duration_seconds_bucket" if labels.split(',').any(|l| l == want_le) => {
                within += v as u64;
            }
            _ => {}
        }
    }
    seen.then_some((count, within))
}

// === /proc ===

/// Summed run-queue wait (time runnable but not running, ns) of a process's
/// live threads, from `/proc/PID/task/*/schedstat` (second field).
fn runq_wait_ns(pid: &str) -> Option<u64> {
    let mut sum = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(e) = e else { continue };
        if let Some(w) = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        {
            sum += w;
        }
    }
    Some(sum)
}

/// `GET /metrics` on `addr` (HTTP/1.1), within two seconds.
async fn scrape(addr: &str) -> Option<String> {
    let get = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("/metrics")
            .header(http::header::HOST, addr)
            .body(Full::new(Bytes::new()))
            .ok()?;
        let res = send.send_request(req).await.ok()?;
        if res.status() != http::StatusCode::OK {
            return None;
        }
        let body = res.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

// === one open-loop run ===

/// Times of one request, microseconds after the schedule's start.
#[derive(Clone, Copy)]
struct Sample {
    intended_us: u64,
    sent_us: u64,
    done_us: u64,
}

#[derive(Default)]
struct Collected {
    samples: Vec<Sample>,
    statuses: BTreeMap<String, u64>,
    tokens: Vec<String>,
}

pub(crate) struct OpenReport {
    pub asked_rps: f64,
    pub achieved_rps: f64,
    pub scheduled: u64,
    /// Requests answered (successfully or not).
    pub requests: u64,
    pub errors: u64,
    /// Slots not sent: too many outstanding (sent or waiting for a connection).
    pub missed: u64,
    pub statuses: BTreeMap<String, u64>,
    pub seconds: f64,
    /// From the intended send time.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub over_10ms: u64,
    /// From the actual send time: what a closed loop would report.
    pub service_p99_us: u64,
    /// Actual send - intended send: the load generator's own delay.
    pub lag_p99_us: u64,
    pub lag_max_us: u64,
    pub silence: Silence,
    /// Requests the server timed above 10 ms itself (None: no /metrics).
    pub server_over_10ms: Option<u64>,
    pub server_runq_ms: Option<f64>,
    pub client_runq_ms: Option<f64>,
    pub reconnects: u64,
    pub cpu_us_per_req: f64,
    /// The load generator's own CPU per request (this process).
    pub client_cpu_us_per_req: f64,
    pub peak_rss_kib: Option<u64>,
}

struct Plan {
    target: Target,
    rate: f64,
    slots: u64,
    connections: usize,
    max_in_flight: usize,
    metrics: Option<String>,
}

async fn run_open(
    plan: Plan,
    ctx: Arc<Ctx>,
    pool: Arc<Mutex<Vec<String>>>,
    cold_tokens: Option<Vec<String>>,
    hot: String,
) -> anyhow::Result<OpenReport> {
    let target = plan.target;
    let (grpc, op) = (target.grpc(), target.op());
    // Connections opened, and warmed (except for cold workloads: their
    // tokens are counted), before the schedule starts.
    let mut conns = Vec::new();
    for _ in 0..plan.connections {
        let mut c = connect(&ctx, grpc).await?;
        if cold_tokens.is_none() {
            let _ = one_request(&mut c, &ctx, op, &hot).await;
        }
        conns.push(c);
    }
    let cold = cold_tokens.map(|t| Arc::new(Mutex::new(t)));
    let ready_before = readiness(&ctx).await;
    let scrape_at = plan.metrics.clone();
    let metrics0 = match &scrape_at {
        Some(a) => scrape(a).await,
        None => None,
    };
    let server_pid = ctx.pid.to_string();
    let runq0 = (runq_wait_ns(&server_pid), runq_wait_ns("self"));
    let cpu0 = proc_cpu_ticks(ctx.pid)?;
    let self_cpu0 = proc_cpu_ticks(std::process::id())?;

    let start = Instant::now() + Duration::from_millis(20);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let collected = Arc::new(Mutex::new(Collected::default()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let (rate, n, cap) = (plan.rate, plan.slots, plan.max_in_flight);
    // The schedule: a thread of its own, so that it keeps time whatever the
    // runtime's workers are doing; it sleeps until each slot is due (slots
    // already due go out at once) and never waits for an answer.
    let dispatcher = {
        let in_flight = in_flight.clone();
        std::thread::Builder::new()
            .name("open-loop-dispatch".into())
            .spawn(move || {
                let mut missed = 0u64;
                for i in 0..n {
                    let due = start + Duration::from_nanos(intended_ns(i, rate));
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    // Only this thread adds, so `in_flight` never exceeds `cap`.
                    if in_flight.load(Ordering::Acquire) >= cap {
                        missed += 1;
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::AcqRel);
                    if tx.send(i).is_err() {
                        break;
                    }
                }
                missed
            })?
    };
    let us = move |t: Instant| t.saturating_duration_since(start).as_micros() as u64;
    // One worker per connection takes the due slots in order (a slot due
    // while every connection is busy waits for one, its latency still
    // counting from its intended time).
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (ctx, rx, cold, hot) = (ctx.clone(), rx.clone(), cold.clone(), hot.clone());
        let (in_flight, reconnects, collected) =
            (in_flight.clone(), reconnects.clone(), collected.clone());
        tasks.spawn(async move {
            loop {
                let Some(i) = rx.lock().await.recv().await else {
                    break;
                };
                let intended_us = intended_ns(i, rate) / 1000;
                let sent = Instant::now();
                let token = match &cold {
                    Some(p) => p.lock().pop(),
                    None => Some(hot.clone()),
                };
                let out = match token {
                    Some(t) => one_request(&mut conn, &ctx, op, &t).await,
                    None => Outcome::fail("no token left"),
                };
                let done = Instant::now();
                let failed = !out.ok;
                {
                    let mut r = collected.lock();
                    r.samples.push(Sample {
                        intended_us,
                        sent_us: us(sent),
                        done_us: us(done),
                    });
                    *r.statuses.entry(out.status).or_default() += 1;
                    if let Some(t) = out.token
                        && r.tokens.len() < MAX_POOL
                    {
                        r.tokens.push(t);
                    }
                }
                in_flight.fetch_sub(1, Ordering::AcqRel);
                if failed && matches!(conn, Conn::Http(_)) {
                    // A failed HTTP exchange may have closed the connection.
                    if let Ok(c) = connect(&ctx, false).await {
                        conn = c;
                        reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let missed = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("dispatcher panicked"))?;
    let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    let unanswered = if drained {
        0
    } else {
        let n = in_flight.load(Ordering::Acquire) as u64;
        tasks.abort_all();
        n
    };
    let cpu1 = proc_cpu_ticks(ctx.pid)?;
    let self_cpu1 = proc_cpu_ticks(std::process::id())?;
    let runq1 = (runq_wait_ns(&server_pid), runq_wait_ns("self"));
    let metrics1 = match &scrape_at {
        Some(a) => scrape(a).await,
        None => None,
    };
    let mut all = std::mem::take(&mut *collected.lock());
    if let Err(why) = ready_before.and(readiness(&ctx).await) {
        let n = all.samples.len() as u64;
        all.statuses.clear();
        all.statuses
            .insert(format!("server not ready ({why})"), n.max(1));
    }
    if missed > 0 {
        all.statuses
            .insert("missed schedule (max in flight)".into(), missed);
    }
    if unanswered > 0 {
        all.statuses.insert(
            format!("no answer {} s after the schedule", DRAIN.as_secs()),
            unanswered,
        );
    }
    {
        let mut p = pool.lock();
        let room = MAX_POOL.saturating_sub(p.len());
        p.extend(all.tokens.into_iter().take(room));
    }
    let requests = all.samples.len() as u64;
    let ok: u64 = all
        .statuses
        .iter()
        .filter(|(k, _)| super::ok_status(k))
        .map(|(_, v)| *v)
        .sum();
    let answered: u64 = all.statuses.values().sum();
    let last = all.samples.iter().map(|s| s.done_us).max().unwrap_or(0);
    let seconds = (last as f64 / 1e6).max(1e-6);
    let mut lat: Vec<u64> = all
        .samples
        .iter()
        .map(|s| s.done_us.saturating_sub(s.intended_us))
        .collect();
    lat.sort_unstable();
    let mut service: Vec<u64> = all
        .samples
        .iter()
        .map(|s| s.done_us.saturating_sub(s.sent_us))
        .collect();
    service.sort_unstable();
    let mut lag: Vec<u64> = all
        .samples
        .iter()
        .map(|s| s.sent_us.saturating_sub(s.intended_us))
        .collect();
    lag.sort_unstable();
    let pairs: Vec<(u64, u64)> = all.samples.iter().map(|s| (s.sent_us, s.done_us)).collect();
    let transport = if target.grpc() { "grpc" } else { "http" };
    let server_over_10ms = match (
        metrics0
            .as_deref()
            .and_then(|m| server_timed(m, transport, "0.01")),
        metrics1
            .as_deref()
            .and_then(|m| server_timed(m, transport, "0.01")),
    ) {
        (Some((c0, w0)), Some((c1, w1))) => {
            Some((c1.saturating_sub(c0)).saturating_sub(w1.saturating_sub(w0)))
        }
        _ => None,
    };
    let ms = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e6),
        _ => None,
    };
    let cpu_us = (cpu1 - cpu0) as f64 / ctx.ticks * 1e6;
    Ok(OpenReport {
        asked_rps: rate,
        achieved_rps: requests as f64 / seconds,
        scheduled: n,
        requests,
        errors: answered.max(requests) - ok,
        missed,
        statuses: all.statuses,
        seconds,
        p50_us: percentile(&lat, 0.50),
        p90_us: percentile(&lat, 0.90),
        p99_us: percentile(&lat, 0.99),
        p999_us: percentile(&lat, 0.999),
        max_us: lat.last().copied().unwrap_or(0),
        over_10ms: lat.iter().filter(|&&l| l > SLOW_US).count() as u64,
        service_p99_us: percentile(&service, 0.99),
        lag_p99_us: percentile(&lag, 0.99),
        lag_max_us: lag.last().copied().unwrap_or(0),
        silence: silences(&pairs, SLOW_US),
        server_over_10ms,
        server_runq_ms: ms(runq0.0, runq1.0),
        client_runq_ms: ms(runq0.1, runq1.1),
        reconnects: reconnects.load(Ordering::Relaxed),
        cpu_us_per_req: if requests > 0 {
            cpu_us / requests as f64
        } else {
            0.0
        },
        client_cpu_us_per_req: if requests > 0 {
            (self_cpu1 - self_cpu0) as f64 / ctx.ticks * 1e6 / requests as f64
        } else {
            0.0
        },
        peak_rss_kib: peak_rss_kib(ctx.pid),
    })
}

// === the hooks of the workload loop ===

/// What the open-loop runs need from the workload loop of `run`.
pub(crate) struct Env<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub args: &'a Args,
    pub ctx: Arc<Ctx>,
    pub floor: Option<Floor>,
    pub alg: Algorithm,
    pub store: &'static str,
    pub prefer_grpc: bool,
    /// The bench client's tokens (cold introspection).
    pub pool: Arc<Mutex<Vec<String>>>,
    /// Subject tokens (cold exchange).
    pub subject_pool: Arc<Mutex<Vec<String>>>,
    /// The token hot introspection asks about.
    pub sample: String,
    /// The subject token hot exchange exchanges.
    pub subject_sample: Option<String>,
}

fn us_ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl Env<'_> {
    fn open(&self) -> &OpenArgs {
        &self.args.open
    }

    fn pool_of(&self, target: Target) -> Arc<Mutex<Vec<String>>> {
        if target.op() == Op::Exchange {
            self.subject_pool.clone()
        } else {
            self.pool.clone()
        }
    }

    /// Issues tokens until the pool a cold workload draws from holds `want`.
    fn top_up(&self, target: Target, want: usize) -> anyhow::Result<()> {
        let pool = self.pool_of(target);
        let want = want.min(MAX_POOL);
        let have = pool.lock().len();
        if have >= want {
            return Ok(());
        }
        let deficit = (want - have) as u64;
        let issuer = match (target.op() == Op::Exchange, self.prefer_grpc) {
            (true, true) => Target::GrpcIssueSubject,
            (true, false) => Target::HttpIssueSubject,
            (false, true) => Target::GrpcIssue,
            (false, false) => Target::HttpIssue,
        };
        println!("(issuing {deficit} tokens for {})", target.name());
        let stock = Args {
            requests: Some(deficit),
            duration: 600.0,
            ..self.args.clone()
        };
        let r = self
            .rt
            .block_on(run_target(issuer, &stock, self.ctx.clone(), pool, 0, None))?;
        if r.errors > 0 {
            bail!("issuing tokens for {}: {} errors", target.name(), r.errors);
        }
        Ok(())
    }

    /// Before a cold workload's closed-loop maximum is measured for
    /// `--rate-of-max`: enough tokens for it not to run dry. Returns how many
    /// tokens that run takes.
    pub fn stock_for_max(&self, target: Target, take: usize) -> anyhow::Result<usize> {
        if self.open().rate_of_max.is_empty() || !target.cold() {
            return Ok(take);
        }
        let want = (COLD_MAX_PER_S * self.args.duration.clamp(0.1, 600.0)) as usize;
        self.top_up(target, want)?;
        Ok(take.max(want.min(MAX_POOL)))
    }

    /// `--rate-of-max`: the open-loop runs after a closed-loop maximum of
    /// `max_rps`. Whether all were clean.
    pub fn fractions(
        &self,
        target: Target,
        max_rps: f64,
        json: &mut Vec<serde_json::Value>,
    ) -> anyhow::Result<bool> {
        let mut ok = true;
        for &f in &self.open().rate_of_max {
            if max_rps * f < 1.0 {
                println!(
                    "\n== {}: no open-loop run at {f} x max (no maximum measured)",
                    target.name()
                );
                ok = false;
                continue;
            }
            ok &= self.run(target, max_rps * f, Some((f, max_rps)), json)?;
        }
        Ok(ok)
    }

    fn measure(&self, target: Target, rate: f64) -> anyhow::Result<OpenReport> {
        let n = slots(
            rate,
            self.args.duration.clamp(0.1, 600.0),
            self.args.requests.unwrap_or(u64::MAX),
        );
        let pool = self.pool_of(target);
        let cold = if target.cold() {
            self.top_up(target, n as usize)?;
            let mut p = pool.lock();
            let at = p.len() - (n as usize).min(p.len());
            Some(p.split_off(at))
        } else {
            None
        };
        let hot = if target.op() == Op::Exchange {
            self.subject_sample.clone().unwrap_or_default()
        } else {
            self.sample.clone()
        };
        let metrics =
            self.open().metrics.clone().or_else(|| {
                (!self.ctx.server_http.is_empty()).then(|| self.ctx.server_http.clone())
            });
        let plan = Plan {
            target,
            rate,
            slots: n,
            connections: self.args.concurrency as usize,
            max_in_flight: self.open().max_in_flight as usize,
            metrics,
        };
        self.rt.block_on(run_open(
            plan,
            self.ctx.clone(),
            self.pool.clone(),
            cold,
            hot,
        ))
    }

    /// One open-loop run of `target` at `rate` (and, with `--matched-floor`,
    /// its transport's probe at the achieved rate): printed, and one JSON
    /// line. Whether it was clean.
    pub fn run(
        &self,
        target: Target,
        rate: f64,
        fraction: Option<(f64, f64)>,
        json: &mut Vec<serde_json::Value>,
    ) -> anyhow::Result<bool> {
        let r = self.measure(target, rate)?;
        let (alg, store) = (self.alg, self.store);
        let (floor_op, floor_us) = floor_of(target, self.floor);
        let clean = r.errors == 0 && r.requests > 0;
        let ratio = floor_us.filter(|_| clean).map(|f| r.cpu_us_per_req / f);
        let of_max = match fraction {
            Some((f, max)) => format!(", {f} x closed-loop max {max:.0} req/s"),
            None => String::new(),
        };
        println!(
            "\n== {} open loop at {rate:.0} req/s{of_max} ({alg}, store {store})",
            target.name()
        );
        println!(
            "  requests    {} answered of {} scheduled in {:.2} s, errors {} (missed schedule {})  [{}]",
            r.requests,
            r.scheduled,
            r.seconds,
            r.errors,
            r.missed,
            r.statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  rate        asked {:.0} req/s, achieved {:.0} req/s; {} connections ({} reopened after a failure), at most {} in flight",
            r.asked_rps,
            r.achieved_rps,
            self.args.concurrency,
            r.reconnects,
            self.open().max_in_flight
        );
        println!(
            "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (from the intended send time); {} over 10 ms",
            us_ms(r.p50_us),
            us_ms(r.p90_us),
            us_ms(r.p99_us),
            us_ms(r.p999_us),
            us_ms(r.max_us),
            r.over_10ms
        );
        println!(
            "  service     p99 {} (from the actual send); send lag p99 {}, max {} (the load generator's own delay)",
            us_ms(r.service_p99_us),
            us_ms(r.lag_p99_us),
            us_ms(r.lag_max_us)
        );
        println!(
            "  silence     longest {} (no answer, requests outstanding) ending {:.2} s in; {} over 10 ms",
            us_ms(r.silence.longest_us),
            r.silence.at_us as f64 / 1e6,
            r.silence.over
        );
        let opt = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.0} ms"));
        println!(
            "  waiting     server timed {} requests over 10 ms itself; run-queue wait: server {}, load generator {}",
            r.server_over_10ms
                .map_or("n/a".to_owned(), |v| v.to_string()),
            opt(r.server_runq_ms),
            opt(r.client_runq_ms)
        );
        match (floor_us, ratio) {
            (Some(f), Some(x)) => println!(
                "  server CPU  {:.1} us/request (utime+stime)  vs raw {alg} {floor_op} {f:.1} us/op  = {x:.2}x; load generator {:.1} us/request",
                r.cpu_us_per_req, r.client_cpu_us_per_req
            ),
            _ => println!(
                "  server CPU  {:.1} us/request (utime+stime); load generator {:.1} us/request",
                r.cpu_us_per_req, r.client_cpu_us_per_req
            ),
        }
        let mut ok = clean;
        let matched =
            if self.open().matched_floor && target.op() != Op::Probe && r.achieved_rps >= 1.0 {
                let probe = if target.grpc() {
                    Target::GrpcHealth
                } else {
                    Target::HttpHealthz
                };
                let p = self.measure(probe, r.achieved_rps)?;
                let p_clean = p.errors == 0 && p.requests > 0;
                ok &= p_clean;
                // The crypto a request cannot avoid (bench_report's CRYPTO):
                // a cached introspection verifies nothing.
                let crypto = if target.op() == Op::Introspect && !target.cold() {
                    Some(0.0)
                } else {
                    floor_us
                };
                let own = crypto
                    .filter(|_| clean && p_clean)
                    .map(|c| r.cpu_us_per_req - p.cpu_us_per_req - c);
                println!(
                    "  matched     {} at {:.0} req/s: {:.1} us/request, errors {}{}",
                    probe.name(),
                    p.achieved_rps,
                    p.cpu_us_per_req,
                    p.errors,
                    own.map_or(String::new(), |o| format!(
                        "; own cost {o:.1} us (CPU - this probe - the raw crypto)"
                    ))
                );
                Some(serde_json::json!({
                    "target": probe.name(),
                    "asked_rps": p.asked_rps,
                    "achieved_rps": p.achieved_rps,
                    "requests": p.requests,
                    "errors": p.errors,
                    "server_cpu_us_per_req": p.cpu_us_per_req,
                    "p99_us": p.p99_us,
                }))
            } else {
                None
            };
        if !ok {
            println!(
                "  FAILED: {} non-success responses or missed slots",
                r.errors
            );
        }
        let mut line = serde_json::json!({
            "mode": "open",
            "target": target.name(),
            "transport": if target.grpc() { "grpc" } else { "http" },
            "op": target.op_label(),
            "alg": alg.as_str(),
            "store": store,
            "concurrency": self.args.concurrency,
            "max_in_flight": self.open().max_in_flight,
            "rate_fraction": fraction.map(|(f, _)| f),
            "max_rps": fraction.map(|(_, m)| m),
            "asked_rps": r.asked_rps,
            "achieved_rps": r.achieved_rps,
            "rps": r.achieved_rps,
            "scheduled": r.scheduled,
            "requests": r.requests,
            "errors": r.errors,
            "missed": r.missed,
            "statuses": r.statuses,
            "seconds": r.seconds,
        });
        // Two objects: one `json!` of every field exceeds the macro's recursion limit.
        let tail = serde_json::json!({
            "p50_us": r.p50_us,
            "p90_us": r.p90_us,
            "p99_us": r.p99_us,
            "p999_us": r.p999_us,
            "max_us": r.max_us,
            "over_10ms": r.over_10ms,
            "service_p99_us": r.service_p99_us,
            "send_lag_p99_us": r.lag_p99_us,
            "send_lag_max_us": r.lag_max_us,
            "longest_silence_us": r.silence.longest_us,
            "longest_silence_at_s": r.silence.at_us as f64 / 1e6,
            "silences_over_10ms": r.silence.over,
            "server_over_10ms": r.server_over_10ms,
            "server_runq_wait_ms": r.server_runq_ms,
            "client_runq_wait_ms": r.client_runq_ms,
            "reconnects": r.reconnects,
            "server_cpu_us_per_req": r.cpu_us_per_req,
            "client_cpu_us_per_req": r.client_cpu_us_per_req,
            "floor_op": floor_op,
            "floor_us": floor_us,
            "ratio": ratio,
            "matched_probe": matched,
            "peak_rss_mib": r.peak_rss_kib.map(|k| k as f64 / 1024.0),
            "trace_ratio": self.args.trace_ratio,
        });
        if let (Some(l), serde_json::Value::Object(t)) = (line.as_object_mut(), tail) {
            l.extend(t);
        }
        json.push(line);
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_evenly_spaced_and_bounded() {
        assert_eq!(slots(2000.0, 2.0, u64::MAX), 4000);
        assert_eq!(slots(2000.0, 2.0, 500), 500);
        assert_eq!(slots(0.3, 1.0, u64::MAX), 1, "at least one slot");
        assert_eq!(intended_ns(0, 2000.0), 0);
        assert_eq!(intended_ns(1, 2000.0), 500_000);
        assert_eq!(intended_ns(4000, 2000.0), 2_000_000_000);
        // 3 per second: 333.33.. ms apart, rounded, never drifting.
        assert_eq!(intended_ns(3, 3.0), 1_000_000_000);
        assert_eq!(intended_ns(3_000_000, 3.0), 1_000_000_000_000_000);
        let gaps: Vec<u64> = (1..1000)
            .map(|i| intended_ns(i, 7000.0) - intended_ns(i - 1, 7000.0))
            .collect();
        assert!(gaps.iter().all(|g| (142_857..=142_858).contains(g)));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&[], 0.99), 0);
        assert_eq!(percentile(&[7], 0.999), 7);
        // Fewer than 1000 values: p99.9 is the maximum.
        let w: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&w, 0.999), 100);
    }

    #[test]
    fn a_stall_counts_for_every_request_scheduled_during_it() {
        // 1000 req/s; the server answers each in 100 us, except that nothing
        // is answered from 200 ms to 250 ms: everything due then is answered
        // at 250 ms. From the intended time, each of those 50 requests is
        // late by up to 50 ms; a closed loop would have seen one slow answer.
        let lat: Vec<u64> = (0..1000u64)
            .map(|i| {
                let due = intended_ns(i, 1000.0) / 1000;
                let done = if (200_000..250_000).contains(&due) {
                    250_000
                } else {
                    due + 100
                };
                done - due
            })
            .collect();
        let mut sorted = lat.clone();
        sorted.sort_unstable();
        assert_eq!(sorted.iter().filter(|&&l| l > SLOW_US).count(), 40);
        assert_eq!(percentile(&sorted, 0.5), 100);
        assert_eq!(percentile(&sorted, 0.95), 100);
        assert_eq!(percentile(&sorted, 0.96), 10_000);
        assert_eq!(percentile(&sorted, 0.99), 40_000);
        assert_eq!(percentile(&sorted, 0.999), 49_000);
        assert_eq!(sorted.last(), Some(&50_000));
    }

    #[test]
    fn the_longest_silence_needs_requests_outstanding() {
        // Idle time between requests is no silence: answers at 1 ms and
        // 40 ms, the second request sent at 39 ms.
        let s = silences(&[(0, 1_000), (39_000, 40_000)], SLOW_US);
        assert_eq!(s.longest_us, 1_000);
        assert_eq!(s.over, 0);
        // Two outstanding from 5 ms and 6 ms, nothing answered until 30 ms:
        // a silence of 25 ms from the earliest send still outstanding.
        let s = silences(
            &[
                (0, 1_000),
                (5_000, 30_000),
                (6_000, 30_500),
                (31_000, 31_200),
            ],
            SLOW_US,
        );
        assert_eq!(s.longest_us, 25_000);
        assert_eq!(s.at_us, 30_000);
        assert_eq!(s.over, 1);
        // Outstanding across an answer: the silence starts at that answer.
        let s = silences(&[(0, 20_000), (1_000, 2_000), (3_000, 4_000)], SLOW_US);
        assert_eq!(s.longest_us, 16_000);
        assert_eq!(s.at_us, 20_000);
        // Order of the input does not matter; nothing in, nothing out.
        let s2 = silences(&[(3_000, 4_000), (0, 20_000), (1_000, 2_000)], SLOW_US);
        assert_eq!(s, s2);
        assert_eq!(silences(&[], SLOW_US), Silence::default());
    }

    #[test]
    fn server_timed_requests_come_from_the_duration_histogram() {
        let text = r#"# TYPE tokend_request_duration_seconds histogram
tokend_request_duration_seconds_bucket{endpoint="tokend.v1.TokenService/Issue",transport="grpc",le="0.005"} 90
tokend_request_duration_seconds_bucket{endpoint="tokend.v1.TokenService/Issue",transport="grpc",le="0.01"} 97
tokend_request_duration_seconds_bucket{endpoint="tokend.v1.TokenService/Issue",transport="grpc",le="+Inf"} 100
tokend_request_duration_seconds_count{endpoint="tokend.v1.TokenService/Issue",transport="grpc"} 100
tokend_request_duration_seconds_bucket{endpoint="/oauth/token",transport="http",le="0.01"} 5
tokend_request_duration_seconds_count{endpoint="/oauth/token",transport="http"} 9
tokend_request_duration_seconds_bucket{endpoint="/metrics",transport="http",le="0.01"} 1
tokend_request_duration_seconds_count{endpoint="/metrics",transport="http"} 3
tokend_store_duration_seconds_count{op="mget"} 50
"#;
        assert_eq!(server_timed(text, "grpc", "0.01"), Some((100, 97)));
        assert_eq!(server_timed(text, "http", "0.01"), Some((9, 5)));
        assert_eq!(
            server_timed("tokend_build_info{version=\"1\"} 1", "grpc", "0.01"),
            None
        );
    }

    #[test]
    fn rates_and_fractions_are_checked() {
        assert_eq!(parse_rate("2000"), Ok(2000.0));
        assert!(parse_rate("0").is_err() && parse_rate("x").is_err());
        assert_eq!(parse_fraction("0.9"), Ok(0.9));
        assert!(parse_fraction("0").is_err() && parse_fraction("3").is_err());
    }
}
