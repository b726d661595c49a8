//! Load balancing over a cluster's endpoints: round robin weighted by
//! `load_balancing_weight`, least request (power of two choices), random,
//! and the consistent-hashing ring hash and Maglev. Priority levels share
//! traffic as Envoy's do: a level takes as much as its healthy share times
//! the overprovisioning factor covers, and the rest spills to the next
//! level. Every table is built when the cluster or its endpoints change,
//! never per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use legate_config::model::{LbEndpoint, LbPolicy};
use xxhash_rust::xxh64::xxh64;

use super::EndpointPool;

/// Largest round-robin schedule; weights are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

/// Envoy's default overprovisioning factor, in percent: a level with 72% of
/// its endpoints healthy still takes all its traffic.
const OVERPROVISIONING_PERCENT: u64 = 140;

pub struct LoadBalancer {
    policy: LbPolicy,
    members: Vec<(Arc<EndpointPool>, LbEndpoint)>,
    /// Priority levels that take traffic, lowest priority first.
    levels: Vec<Level>,
    next: AtomicUsize,
}

/// One priority level's tables, built at config time.
struct Level {
    /// Indexes into `members`, each repeated in proportion to its weight.
    schedule: Vec<usize>,
    /// Lookup table of the hashing policies.
    hash_table: HashTable,
    /// Upper bound (exclusive, out of 100) of the traffic share of this level
    /// and the ones before it.
    cumulative_load: u64,
}

enum HashTable {
    None,
    /// Points on the ring, sorted by hash, each naming a member.
    Ring(Vec<(u64, usize)>),
    /// Maglev's lookup table of member indexes.
    Maglev(Vec<usize>),
}

impl LoadBalancer {
    pub fn new(policy: LbPolicy, members: Vec<(Arc<EndpointPool>, LbEndpoint)>) -> Self {
        let levels = priority_levels(&members)
            .into_iter()
            .map(|(routable, cumulative_load)| {
                let schedule = build_schedule(&members, &routable);
                let hash_table = match policy {
                    LbPolicy::RingHash { minimum_ring_size, maximum_ring_size } => {
                        HashTable::Ring(build_ring(&members, &routable, minimum_ring_size, maximum_ring_size))
                    }
                    LbPolicy::Maglev { table_size } => HashTable::Maglev(build_maglev(&members, &routable, table_size)),
                    _ => HashTable::None,
                };
                Level { schedule, hash_table, cumulative_load }
            })
            .collect();
        let next = AtomicUsize::new(fastrand::usize(..usize::MAX / 2));
        LoadBalancer { policy, members, levels, next }
    }

    /// Every endpoint pool, routable or not.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<EndpointPool>> {
        self.members.iter().map(|(pool, _)| pool)
    }

    /// Every endpoint with its config.
    pub fn members(&self) -> impl Iterator<Item = &(Arc<EndpointPool>, LbEndpoint)> {
        self.members.iter()
    }

    /// Picks the endpoint for the next request, or `None` when no endpoint
    /// is routable. The hashing policies use `hash`, the request's hash from
    /// the route's hash policies, and pick at random without one; the hash
    /// also chooses the priority level, so a key stays on one level.
    ///
    /// Endpoints ejected by outlier detection or failing active health checks
    /// are skipped; when every endpoint of the level is, one is used anyway
    /// (Envoy's panic mode), since an unhealthy endpoint beats a certain
    /// failure.
    pub fn pick(&self, hash: Option<u64>) -> Option<&Arc<EndpointPool>> {
        let hashing = matches!(self.policy, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. });
        let hash = if hashing { Some(hash.unwrap_or_else(|| fastrand::u64(..))) } else { None };
        let level = self.level_for(hash)?;
        let member = match self.policy {
            LbPolicy::RoundRobin => self.pick_round_robin(level),
            LbPolicy::LeastRequest => self.pick_least_request(level),
            LbPolicy::Random => self.probe_schedule(level, fastrand::usize(..level.schedule.len())),
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } => self.pick_by_hash(level, hash.unwrap_or_default())?,
        };
        Some(&self.members[member].0)
    }

    fn level_for(&self, hash: Option<u64>) -> Option<&Level> {
        if self.levels.len() <= 1 {
            return self.levels.first();
        }
        let point = match hash {
            Some(hash) => xxh64(&hash.to_le_bytes(), 0) % 100,
            None => fastrand::u64(..100),
        };
        self.levels.iter().find(|level| point < level.cumulative_load).or_else(|| self.levels.last())
    }

    fn available(&self, member: usize) -> bool {
        self.members[member].0.membership().health.is_available()
    }

    fn pick_round_robin(&self, level: &Level) -> usize {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let first = level.schedule[start % level.schedule.len()];
        if self.available(first) {
            return first;
        }
        self.probe_schedule(level, start)
    }

    /// Returns the first available member from `start` on in the schedule,
    /// or the member at `start` when none is available.
    fn probe_schedule(&self, level: &Level, start: usize) -> usize {
        let length = level.schedule.len();
        (0..length)
            .map(|offset| level.schedule[(start + offset) % length])
            .find(|&member| self.available(member))
            .unwrap_or(level.schedule[start % length])
    }

    /// Returns the first available member at or after the hash's place on
    /// the ring or in the Maglev table.
    fn pick_by_hash(&self, level: &Level, hash: u64) -> Option<usize> {
        match &level.hash_table {
            HashTable::Ring(ring) => {
                let start = ring.partition_point(|(point, _)| *point < hash) % ring.len().max(1);
                let first = ring.get(start)?.1;
                let mut probe = (0..ring.len()).map(|offset| ring[(start + offset) % ring.len()].1);
                Some(probe.find(|&member| self.available(member)).unwrap_or(first))
            }
            HashTable::Maglev(table) => {
                let start = (hash % table.len() as u64) as usize;
                let first = *table.get(start)?;
                let mut probe = (0..table.len()).map(|offset| table[(start + offset) % table.len()]);
                Some(probe.find(|&member| self.available(member)).unwrap_or(first))
            }
            HashTable::None => None,
        }
    }

    /// Power of two choices: of two available endpoints drawn by weight,
    /// the one with fewer requests in flight.
    fn pick_least_request(&self, level: &Level) -> usize {
        let first = self.probe_schedule(level, fastrand::usize(..level.schedule.len()));
        let second = self.probe_schedule(level, fastrand::usize(..level.schedule.len()));
        if self.members[second].0.active_requests() < self.members[first].0.active_requests() {
            second
        } else {
            first
        }
    }
}

/// Splits traffic over the priority levels: each level's health is the
/// share of its endpoints that are routable times the overprovisioning
/// factor, capped at 100%; levels take their health in turn until 100% is
/// given out. When the levels together are less than 100% healthy, the
/// shares are scaled up to fill 100%. Returns, per level that takes traffic,
/// its routable members and its cumulative load.
fn priority_levels(members: &[(Arc<EndpointPool>, LbEndpoint)]) -> Vec<(Vec<usize>, u64)> {
    let mut priorities: Vec<u32> = members.iter().map(|(_, endpoint)| endpoint.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();

    let mut levels = Vec::new();
    for priority in priorities {
        let in_level: Vec<usize> = (0..members.len()).filter(|&index| members[index].1.priority == priority).collect();
        let routable: Vec<usize> = in_level.iter().copied().filter(|&index| members[index].1.is_routable()).collect();
        let health = (routable.len() as u64 * OVERPROVISIONING_PERCENT / in_level.len().max(1) as u64).min(100);
        levels.push((routable, health));
    }

    let total_health: u64 = levels.iter().map(|(_, health)| health).sum::<u64>().min(100);
    if total_health == 0 {
        return Vec::new();
    }
    let mut given = 0;
    let mut result = Vec::new();
    for (routable, health) in levels {
        let share = (health * 100 / total_health).min(100 - given);
        if share == 0 || routable.is_empty() {
            continue;
        }
        given += share;
        result.push((routable, given));
    }
    if let Some(last) = result.last_mut() {
        last.1 = 100;
    }
    result
}

fn build_schedule(members: &[(Arc<EndpointPool>, LbEndpoint)], level: &[usize]) -> Vec<usize> {
    if level.is_empty() {
        return Vec::new();
    }
    let divisor = level.iter().map(|&index| members[index].1.weight as u64).fold(0, gcd).max(1);
    let total: u64 = level.iter().map(|&index| members[index].1.weight as u64 / divisor).sum();
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);

    let mut schedule = Vec::new();
    let mut remaining: Vec<u64> = level.iter().map(|&index| (members[index].1.weight as u64 / divisor / scale).max(1)).collect();
    // Interleave the endpoints so a heavy one is spread over the schedule.
    while remaining.iter().any(|&count| count > 0) {
        for (position, count) in remaining.iter_mut().enumerate() {
            if *count > 0 {
                schedule.push(level[position]);
                *count -= 1;
            }
        }
    }
    schedule
}

/// Key an endpoint is hashed by: its address, so every proxy with the same
/// endpoints builds the same ring and table.
fn endpoint_key(members: &[(Arc<EndpointPool>, LbEndpoint)], index: usize) -> String {
    members[index].0.address().to_string()
}

/// Builds a ring of about `minimum_ring_size` points (at most
/// `maximum_ring_size`), each endpoint owning points in proportion to its
/// weight, at the xxHash64 of `address_n`.
fn build_ring(members: &[(Arc<EndpointPool>, LbEndpoint)], level: &[usize], minimum: u64, maximum: u64) -> Vec<(u64, usize)> {
    let total_weight: u64 = level.iter().map(|&index| members[index].1.weight as u64).sum();
    if total_weight == 0 {
        return Vec::new();
    }
    let ring_size = minimum.max(level.len() as u64).min(maximum);

    let mut ring = Vec::with_capacity(ring_size as usize);
    for &index in level {
        let share = (ring_size * members[index].1.weight as u64).div_ceil(total_weight).max(1);
        let key = endpoint_key(members, index);
        for point in 0..share {
            ring.push((xxh64(format!("{key}_{point}").as_bytes(), 0), index));
        }
    }
    ring.sort_unstable();
    ring
}

/// Builds Maglev's lookup table: each endpoint walks its own permutation of
/// the slots and claims the next free one in turn, taking turns in
/// proportion to its weight, until every slot is owned.
fn build_maglev(members: &[(Arc<EndpointPool>, LbEndpoint)], level: &[usize], table_size: u64) -> Vec<usize> {
    if level.is_empty() {
        return Vec::new();
    }
    let size = table_size as usize;
    let max_weight = level.iter().map(|&index| members[index].1.weight).max().unwrap_or(1) as f64;
    let permutations: Vec<(u64, u64)> = level
        .iter()
        .map(|&index| {
            let key = endpoint_key(members, index);
            let offset = xxh64(key.as_bytes(), 0) % table_size;
            let skip = xxh64(key.as_bytes(), 1) % (table_size - 1) + 1;
            (offset, skip)
        })
        .collect();

    let mut table = vec![usize::MAX; size];
    let mut next = vec![0u64; level.len()];
    let mut credit = vec![0.0f64; level.len()];
    let mut filled = 0;
    while filled < size {
        for (position, &index) in level.iter().enumerate() {
            credit[position] += members[index].1.weight as f64 / max_weight;
            while credit[position] >= 1.0 && filled < size {
                credit[position] -= 1.0;
                let (offset, skip) = permutations[position];
                loop {
                    let slot = ((offset + next[position] * skip) % table_size) as usize;
                    next[position] += 1;
                    if table[slot] == usize::MAX {
                        table[slot] = index;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    table
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests;
