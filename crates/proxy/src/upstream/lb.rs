//! Load balancing over a cluster's endpoints: round robin weighted by
//! `load_balancing_weight`, least request (power of two choices) and random.
//! Only the lowest priority level with a routable endpoint takes traffic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use legate_config::model::{LbEndpoint, LbPolicy};

use super::EndpointPool;

/// Largest round-robin schedule; weights are scaled down to fit.
const MAX_SCHEDULE: u64 = 4096;

pub struct LoadBalancer {
    policy: LbPolicy,
    members: Vec<(Arc<EndpointPool>, LbEndpoint)>,
    /// Indexes into `members` of the priority level in use, each repeated in
    /// proportion to its weight, built at config time.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl LoadBalancer {
    pub fn new(policy: LbPolicy, members: Vec<(Arc<EndpointPool>, LbEndpoint)>) -> Self {
        let schedule = build_schedule(&members);
        LoadBalancer { policy, members, schedule, next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)) }
    }

    /// Every endpoint pool, routable or not.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<EndpointPool>> {
        self.members.iter().map(|(pool, _)| pool)
    }

    /// Picks the endpoint for the next request, or `None` when no endpoint
    /// is routable.
    pub fn pick(&self) -> Option<&Arc<EndpointPool>> {
        if self.schedule.is_empty() {
            return None;
        }
        let slot = match self.policy {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len(),
            LbPolicy::Random => fastrand::usize(..self.schedule.len()),
            LbPolicy::LeastRequest => return Some(self.pick_least_request()),
        };
        Some(&self.members[self.schedule[slot]].0)
    }

    /// Power of two choices: of two endpoints drawn by weight, the one with
    /// fewer requests in flight.
    fn pick_least_request(&self) -> &Arc<EndpointPool> {
        let first = &self.members[self.schedule[fastrand::usize(..self.schedule.len())]].0;
        let second = &self.members[self.schedule[fastrand::usize(..self.schedule.len())]].0;
        if second.active_requests() < first.active_requests() {
            second
        } else {
            first
        }
    }
}

fn build_schedule(members: &[(Arc<EndpointPool>, LbEndpoint)]) -> Vec<usize> {
    let Some(priority) = members.iter().filter(|(_, e)| e.is_routable()).map(|(_, e)| e.priority).min() else {
        return Vec::new();
    };
    let level: Vec<usize> = (0..members.len())
        .filter(|&index| members[index].1.is_routable() && members[index].1.priority == priority)
        .collect();

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

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
