use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use legate_config::model::{EndpointAddress, HealthStatus, Http2Settings, UpstreamProtocol};

use super::*;
use crate::stats::ProxyStats;
use crate::upstream::{Membership, PoolSettings};

fn members(weights: &[u32]) -> Vec<(Arc<EndpointPool>, LbEndpoint)> {
    let proxy_stats = ProxyStats::new();
    let stats = proxy_stats.upstream.cluster("test");
    let circuit = crate::upstream::ClusterCircuit::new("test", &proxy_stats.upstream);
    let settings = PoolSettings {
        protocol: UpstreamProtocol::Http1,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        http2: Http2Settings::default(),
        tls: None,
    };
    weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| {
            let address: SocketAddr = format!("127.0.0.1:{}", 9000 + index).parse().unwrap();
            let pool = EndpointPool::new(address, settings.clone(), Membership::new(), stats.clone(), circuit.clone());
            let endpoint =
                LbEndpoint { address: EndpointAddress::Socket(address), weight, health: HealthStatus::Healthy, priority: 0 };
            (pool, endpoint)
        })
        .collect()
}

fn picks(balancer: &LoadBalancer, keys: u64) -> Vec<SocketAddr> {
    (0..keys).map(|key| balancer.pick(Some(xxh64(&key.to_le_bytes(), 7))).unwrap().address()).collect()
}

fn shares(picked: &[SocketAddr]) -> HashMap<SocketAddr, usize> {
    let mut counts = HashMap::new();
    for address in picked {
        *counts.entry(*address).or_default() += 1;
    }
    counts
}

const RING: LbPolicy = LbPolicy::RingHash { minimum_ring_size: 1024, maximum_ring_size: 8 * 1024 * 1024 };
const MAGLEV: LbPolicy = LbPolicy::Maglev { table_size: 65537 };

#[test]
fn same_hash_same_endpoint() {
    for policy in [RING, MAGLEV] {
        let balancer = LoadBalancer::new(policy, members(&[1, 1, 1]));
        let first = picks(&balancer, 200);
        let second = picks(&balancer, 200);
        assert_eq!(first, second, "{policy:?}");
    }
}

#[test]
fn hashing_follows_weights() {
    for policy in [RING, MAGLEV] {
        let balancer = LoadBalancer::new(policy, members(&[1, 3]));
        let counts = shares(&picks(&balancer, 20_000));
        let light = counts[&"127.0.0.1:9000".parse().unwrap()] as f64;
        let heavy = counts[&"127.0.0.1:9001".parse().unwrap()] as f64;
        let ratio = heavy / light;
        assert!((2.0..4.5).contains(&ratio), "{policy:?}: weight 3 to 1 gave a ratio of {ratio}");
    }
}

/// Removing one of four endpoints moves its keys and few others. The ring
/// gives each remaining endpoint more points, as Envoy's does, so some keys
/// move between the remaining endpoints too.
#[test]
fn removing_an_endpoint_moves_few_keys() {
    for (policy, limit) in [(RING, 0.2), (MAGLEV, 0.1)] {
        let before = picks(&LoadBalancer::new(policy, members(&[1, 1, 1, 1])), 10_000);
        let after = picks(&LoadBalancer::new(policy, members(&[1, 1, 1])), 10_000);
        let removed: SocketAddr = "127.0.0.1:9003".parse().unwrap();
        let moved = before.iter().zip(&after).filter(|(b, a)| **b != removed && b != a).count();
        let kept_total = before.iter().filter(|b| **b != removed).count();
        let fraction = moved as f64 / kept_total as f64;
        assert!(fraction < limit, "{policy:?}: {fraction:.3} of the keys of remaining endpoints moved");
        assert!(after.iter().all(|a| *a != removed), "{policy:?}: no key goes to the removed endpoint");
    }
}

#[test]
fn round_robin_follows_weights() {
    let balancer = LoadBalancer::new(LbPolicy::RoundRobin, members(&[2, 1]));
    let picked: Vec<SocketAddr> = (0..300).map(|_| balancer.pick(None).unwrap().address()).collect();
    let counts = shares(&picked);
    assert_eq!(counts[&"127.0.0.1:9000".parse().unwrap()], 200);
    assert_eq!(counts[&"127.0.0.1:9001".parse().unwrap()], 100);
}

#[test]
fn degraded_priority_spills_over() {
    // Priority 0 has 10 endpoints, 5 healthy: 5 / 10 x 1.4 = 70% of the
    // traffic stays there and 30% spills to priority 1.
    let mut all = members(&[1; 11]);
    for (index, (_, endpoint)) in all.iter_mut().enumerate() {
        if index == 10 {
            endpoint.priority = 1;
        } else if index >= 5 {
            endpoint.health = HealthStatus::Unhealthy;
        }
    }
    let balancer = LoadBalancer::new(LbPolicy::Random, all);
    let spill: SocketAddr = "127.0.0.1:9010".parse().unwrap();
    let picked = (0..10_000).filter(|_| balancer.pick(None).unwrap().address() == spill).count();
    let share = picked as f64 / 10_000.0;
    assert!((0.27..0.33).contains(&share), "priority 1 took {share:.3} of the traffic");
}

#[test]
fn healthy_priority_keeps_everything() {
    let mut all = members(&[1; 4]);
    all[3].1.priority = 1;
    let balancer = LoadBalancer::new(LbPolicy::RoundRobin, all);
    let spill: SocketAddr = "127.0.0.1:9003".parse().unwrap();
    assert!((0..1000).all(|_| balancer.pick(None).unwrap().address() != spill), "a fully healthy level takes all traffic");
}

#[test]
fn adding_an_endpoint_moves_about_one_in_n() {
    for (policy, limit) in [(RING, 0.35), (MAGLEV, 0.3)] {
        let before = picks(&LoadBalancer::new(policy, members(&[1, 1, 1, 1])), 10_000);
        let after = picks(&LoadBalancer::new(policy, members(&[1, 1, 1, 1, 1])), 10_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / 10_000.0;
        assert!(moved >= 0.15 && moved < limit, "{policy:?}: {moved:.3} of the keys moved for 1 endpoint in 5");
    }
}

#[test]
fn weighted_round_robin_one_to_three() {
    let balancer = LoadBalancer::new(LbPolicy::RoundRobin, members(&[1, 3]));
    let picked: Vec<SocketAddr> = (0..4000).map(|_| balancer.pick(None).unwrap().address()).collect();
    let counts = shares(&picked);
    let heavy = counts[&"127.0.0.1:9001".parse().unwrap()] as f64 / 4000.0;
    assert!((0.7125..=0.7875).contains(&heavy), "weight 3 of 4 took {heavy:.3}");
}
