//! Local rate limiting: token buckets exact across worker threads, and the
//! limiter of one `LocalRateLimit` config (its default bucket and its
//! descriptor buckets).
//!
//! A bucket is one atomic word updated by compare-and-swap, so no request
//! waits on a lock to take a token. Buckets per descriptor value are kept in
//! a map bounded by `max_dynamic_descriptors`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use legate_config::model::{LocalRateLimit, LocalRateLimitDescriptor, TokenBucket};

/// A token bucket. The state word contains the tokens in its high half and, in
/// its low half, how many fill intervals had passed since `epoch` at the
/// last refill. The count wraps after 2^32 intervals, which at the 50 ms
/// minimum is about 6.8 years.
pub struct AtomicBucket {
    config: TokenBucket,
    epoch: Instant,
    state: AtomicU64,
}

/// The outcome of taking a token, with what the `x-ratelimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOutcome {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Time until the next fill.
    pub reset: Duration,
}

impl AtomicBucket {
    pub fn new(config: TokenBucket, now: Instant) -> AtomicBucket {
        AtomicBucket { config, epoch: now, state: AtomicU64::new(pack(config.max_tokens, 0)) }
    }

    /// Takes a token when one is left, refilling first for the intervals passed.
    pub fn take(&self, now: Instant) -> TokenOutcome {
        let elapsed = now.saturating_duration_since(self.epoch);
        let interval = self.config.fill_interval.as_nanos().max(1);
        let fills_now = (elapsed.as_nanos() / interval) as u32;
        let reset = Duration::from_nanos((interval - elapsed.as_nanos() % interval) as u64);

        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (tokens, fills) = unpack(current);
            let passed = u64::from(fills_now.wrapping_sub(fills));
            let refilled = (u64::from(tokens) + passed * u64::from(self.config.tokens_per_fill)).min(u64::from(self.config.max_tokens)) as u32;
            let allowed = refilled > 0;
            let remaining = if allowed { refilled - 1 } else { 0 };
            let next = pack(remaining, fills_now);
            if next == current {
                return TokenOutcome { allowed, limit: self.config.max_tokens, remaining, reset };
            }
            match self.state.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return TokenOutcome { allowed, limit: self.config.max_tokens, remaining, reset },
                Err(actual) => current = actual,
            }
        }
    }

    /// Tells whether the bucket would be full now, so forgetting it loses nothing.
    fn is_full(&self, now: Instant) -> bool {
        let (tokens, fills) = unpack(self.state.load(Ordering::Acquire));
        let fills_now = (now.saturating_duration_since(self.epoch).as_nanos() / self.config.fill_interval.as_nanos().max(1)) as u32;
        let passed = u64::from(fills_now.wrapping_sub(fills));
        u64::from(tokens) + passed * u64::from(self.config.tokens_per_fill) >= u64::from(self.config.max_tokens)
    }
}

fn pack(tokens: u32, fills: u32) -> u64 {
    (u64::from(tokens) << 32) | u64::from(fills)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

/// The runtime state of one `LocalRateLimit`: at the filter level, or in the
/// `typed_per_filter_config` of a route or virtual host.
pub struct RateLimiter {
    pub config: Arc<LocalRateLimit>,
    default_bucket: Option<AtomicBucket>,
    descriptors: Vec<DescriptorBuckets>,
    pub rate_limited: Counter,
}

/// The buckets of one configured descriptor: one bucket, or one per value
/// when an entry's value is empty (a wildcard).
struct DescriptorBuckets {
    config: LocalRateLimitDescriptor,
    fixed: Option<AtomicBucket>,
    dynamic: RwLock<HashMap<Box<str>, Arc<AtomicBucket>>>,
    /// Shared by the values that find the map full of active buckets, so
    /// new values cannot grow memory or reset another client's bucket.
    overflow: AtomicBucket,
    max_dynamic: usize,
}

/// One entry of a request's descriptor: a key and the value the request gave.
pub type DescriptorEntry<'a> = (&'a str, Cow<'a, str>);

impl RateLimiter {
    pub fn new(config: Arc<LocalRateLimit>, rate_limited: Counter) -> RateLimiter {
        let now = Instant::now();
        let descriptors = config
            .descriptors
            .iter()
            .map(|descriptor| {
                let wildcard = descriptor.entries.iter().any(|(_, value)| value.is_empty());
                DescriptorBuckets {
                    config: descriptor.clone(),
                    fixed: (!wildcard).then(|| AtomicBucket::new(descriptor.token_bucket, now)),
                    dynamic: RwLock::new(HashMap::new()),
                    overflow: AtomicBucket::new(descriptor.token_bucket, now),
                    max_dynamic: config.max_dynamic_descriptors,
                }
            })
            .collect();
        let default_bucket = config.token_bucket.map(|bucket| AtomicBucket::new(bucket, now));
        RateLimiter { config, default_bucket, descriptors, rate_limited }
    }

    /// Takes a token from the bucket of each configured descriptor that one
    /// of `request_descriptors` matches, and from the default bucket when no
    /// descriptor matched or `always_consume_default_token_bucket` is set.
    /// Returns the most restrictive outcome, or `None` when no bucket applies.
    pub fn take(&self, request_descriptors: &[Vec<DescriptorEntry<'_>>], now: Instant) -> Option<TokenOutcome> {
        let mut outcome: Option<TokenOutcome> = None;
        let mut matched = false;
        for descriptor in &self.descriptors {
            let Some(entries) = request_descriptors.iter().find(|entries| descriptor.matches(entries)) else { continue };
            matched = true;
            outcome = Some(most_restrictive(outcome, descriptor.take(entries, now)));
        }
        if !matched || self.config.always_consume_default_token_bucket {
            if let Some(bucket) = &self.default_bucket {
                outcome = Some(most_restrictive(outcome, bucket.take(now)));
            }
        }
        outcome
    }
}

fn most_restrictive(current: Option<TokenOutcome>, next: TokenOutcome) -> TokenOutcome {
    match current {
        None => next,
        Some(current) if !current.allowed => current,
        Some(current) if next.allowed && current.remaining <= next.remaining => current,
        Some(_) => next,
    }
}

impl DescriptorBuckets {
    /// Matches when the keys are the same, in order, and every value is
    /// equal or configured empty.
    fn matches(&self, entries: &[DescriptorEntry<'_>]) -> bool {
        self.config.entries.len() == entries.len()
            && self.config.entries.iter().zip(entries).all(|((key, value), (request_key, request_value))| {
                key == request_key && (value.is_empty() || value == request_value)
            })
    }

    fn take(&self, entries: &[DescriptorEntry<'_>], now: Instant) -> TokenOutcome {
        if let Some(bucket) = &self.fixed {
            return bucket.take(now);
        }
        let key = dynamic_key(&self.config.entries, entries);
        if let Some(bucket) = self.dynamic.read().unwrap_or_else(|e| e.into_inner()).get(key.as_str()) {
            return bucket.take(now);
        }
        match self.insert_dynamic(key, now) {
            Some(bucket) => bucket.take(now),
            None => self.overflow.take(now),
        }
    }

    /// Adds a bucket for a new value. When the map is full, a bucket that
    /// has refilled completely is dropped to make room. When none has,
    /// returns `None` and the value shares the overflow bucket.
    fn insert_dynamic(&self, key: String, now: Instant) -> Option<Arc<AtomicBucket>> {
        let mut map = self.dynamic.write().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = map.get(key.as_str()) {
            return Some(bucket.clone());
        }
        if map.len() >= self.max_dynamic {
            let idle = map.iter().find(|(_, bucket)| bucket.is_full(now)).map(|(key, _)| key.clone())?;
            map.remove(&idle);
        }
        let bucket = Arc::new(AtomicBucket::new(self.config.token_bucket, now));
        map.insert(key.into_boxed_str(), bucket.clone());
        Some(bucket)
    }
}

/// Joins the request's values at the wildcard entries into the key of a
/// dynamic bucket.
fn dynamic_key(config: &[(String, String)], entries: &[DescriptorEntry<'_>]) -> String {
    let mut key = String::new();
    for ((_, configured), (_, value)) in config.iter().zip(entries) {
        if configured.is_empty() {
            key.push_str(value);
            key.push('\u{1f}');
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> TokenBucket {
        TokenBucket { max_tokens, tokens_per_fill, fill_interval }
    }

    #[test]
    fn bucket_empties_and_refills() {
        let start = Instant::now();
        let bucket = AtomicBucket::new(bucket(3, 2, Duration::from_secs(1)), start);
        let taken: Vec<bool> = (0..4).map(|_| bucket.take(start).allowed).collect();
        assert_eq!(taken, [true, true, true, false]);
        let later = start + Duration::from_millis(1500);
        assert_eq!(bucket.take(later).remaining, 1, "one fill of two tokens, one taken");
        assert!(bucket.take(later).allowed);
        assert!(!bucket.take(later).allowed);
        assert_eq!(bucket.take(later).reset, Duration::from_millis(500));
    }

    #[test]
    fn bucket_exact_across_threads() {
        let start = Instant::now();
        let bucket = Arc::new(AtomicBucket::new(bucket(1000, 1, Duration::from_secs(3600)), start));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bucket = bucket.clone();
                std::thread::spawn(move || (0..500).filter(|_| bucket.take(start).allowed).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|thread| thread.join().unwrap()).sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn dynamic_buckets_are_bounded() {
        let config = LocalRateLimit {
            stat_prefix: "t".into(),
            status: 429,
            token_bucket: None,
            filter_enabled: 1_000_000,
            filter_enforced: 1_000_000,
            response_headers_to_add: Vec::new(),
            descriptors: vec![LocalRateLimitDescriptor {
                entries: vec![("client".into(), String::new())],
                token_bucket: bucket(1, 1, Duration::from_secs(3600)),
            }],
            x_ratelimit_headers: false,
            always_consume_default_token_bucket: true,
            rate_limited_as_resource_exhausted: false,
            max_dynamic_descriptors: 2,
        };
        let limiter = RateLimiter::new(Arc::new(config), Counter::default());
        let now = Instant::now();
        let take = |client: &str| limiter.take(&[vec![("client", Cow::Owned(client.to_string()))]], now).unwrap().allowed;
        assert!(take("a"));
        assert!(!take("a"), "a's bucket is empty");
        assert!(take("b"), "b has its own bucket");
        assert!(take("c"), "c takes the overflow bucket");
        assert!(!take("d"), "d shares the overflow bucket with c");
        assert_eq!(limiter.descriptors[0].dynamic.read().unwrap().len(), 2);
    }
}
