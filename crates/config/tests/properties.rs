//! Property tests of config decoding: whatever bytes or text arrive, over
//! xDS or in a file, decoding returns a value or errors and never panics.

use legate_config::resource::{decode_any, ResourceType};
use legate_config::text::parse_resources;
use proptest::prelude::*;

/// Valid resources of every type, as the seeds that mutations start from.
const SEEDS: &str = r#"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l
  address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
  filter_chains:
  - filters:
    - name: hcm
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: s
        stream_idle_timeout: 30s
        merge_slashes: true
        upgrade_configs: [{ upgrade_type: websocket }]
        route_config:
          name: r
          virtual_hosts:
          - name: v
            domains: ["*.example.com", "*"]
            routes:
            - match: { safe_regex: { regex: "/api/[a-z]+" }, headers: [{ name: x-a, string_match: { prefix: b } }] }
              route: { cluster: c, timeout: 2s, retry_policy: { retry_on: "5xx", num_retries: 2 } }
            - match: { prefix: / }
              direct_response: { status: 200, body: { inline_string: ok } }
        http_filters: [{ name: envoy.filters.http.router }]
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: c
  type: STATIC
  lb_policy: RING_HASH
  connect_timeout: 1s
  circuit_breakers: { thresholds: [{ max_connections: 10 }] }
  load_assignment:
    cluster_name: c
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } } }] }]
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: e
  endpoints: [{ priority: 1, lb_endpoints: [{ load_balancing_weight: 3, endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } } }] }]
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: r
  virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { path: /x }, route: { weighted_clusters: { clusters: [{ name: a, weight: 1 }, { name: b, weight: 3 }] } } }] }]
"#;

fn seeds() -> Vec<prost_types::Any> {
    parse_resources(SEEDS).expect("the seeds are valid")
}

/// One change to an encoded message.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match *mutation {
        Mutation::Flip { at, mask } => {
            let index = at % bytes.len();
            bytes[index] ^= mask;
        }
        Mutation::Truncate { at } => bytes.truncate(at % bytes.len()),
        Mutation::Insert { at, byte } => bytes.insert(at % bytes.len(), byte),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn mutated_resources_decode_or_fail(seed in 0usize..4, mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut any = seeds().swap_remove(seed);
        for mutation in &mutations {
            mutate(&mut any.value, mutation);
        }
        let _ = decode_any(&any);
    }

    #[test]
    fn random_bytes_decode_or_fail(kind in 0usize..4, value in prop::collection::vec(any::<u8>(), 0..256)) {
        let type_url = ResourceType::ALL[kind].type_url().to_string();
        let _ = decode_any(&prost_types::Any { type_url, value });
    }

    #[test]
    fn mutated_text_parses_or_fails(at in any::<usize>(), insert in "\\PC{0,12}", cut in 0usize..8) {
        let mut text = SEEDS.to_string();
        let mut index = at % text.len();
        while !text.is_char_boundary(index) {
            index -= 1;
        }
        let end = (index + cut).min(text.len());
        let end = (end..=text.len()).find(|&end| text.is_char_boundary(end)).unwrap_or(text.len());
        text.replace_range(index..end, &insert);
        if let Ok(resources) = parse_resources(&text) {
            for any in &resources {
                let _ = decode_any(any);
            }
        }
    }
}

#[test]
fn seeds_decode() {
    for any in seeds() {
        assert!(decode_any(&any).is_ok(), "seed {} decodes", any.type_url);
    }
}
