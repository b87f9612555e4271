//! Waiting on a condition with a deadline instead of sleeping a guessed time:
//! a poll returns as soon as the condition holds (fast on a fast machine) and
//! gives a slow, loaded machine the whole deadline.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First pause between two checks; doubled after each miss up to
/// [`MAX_PAUSE`], so a condition that holds soon is seen soon and a slow one
/// costs few checks.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Polls `check` until it returns true or `within` has passed; true if it
/// held. `check` runs at least once, and once more at the deadline.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        if check().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Milliseconds since the Unix epoch (tokend's clock for "not before" marks).
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Returns once the wall clock's millisecond has moved on, so "issued before"
/// and "issued after" an admin call are distinct instants: bulk-revocation
/// marks compare in milliseconds and a tie goes to the token. Waits on the
/// clock itself, not a guessed sleep.
pub async fn next_ms() {
    let start = now_ms();
    assert!(
        eventually(
            Duration::from_secs(1),
            move || async move { now_ms() > start }
        )
        .await,
        "the wall clock did not move for a second"
    );
}
