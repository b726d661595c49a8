//! The names an accepted discovery response added, updated and removed, for
//! the log line of each applied version.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use legate_config::resource::resource_name;

/// Names listed per kind of change in a log line; the rest are counted.
const MAX_LISTED: usize = 8;

/// Fingerprints of one type's resources in force, by name.
#[derive(Debug, Default, Clone)]
pub struct Applied(HashMap<String, u64>);

/// Names of the resources a response added, updated and removed.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
}

impl Applied {
    /// Takes `resources` as the ones in force and returns how they differ
    /// from the previous ones.
    pub fn replace(&mut self, resources: &[prost_types::Any]) -> Changes {
        let mut next = HashMap::with_capacity(resources.len());
        for any in resources {
            let name = resource_name(any).unwrap_or_default();
            next.insert(name, fingerprint(&any.value));
        }

        let mut changes = Changes::default();
        for (name, hash) in &next {
            match self.0.get(name) {
                None => changes.added.push(name.clone()),
                Some(previous) if previous != hash => changes.updated.push(name.clone()),
                Some(_) => {}
            }
        }
        changes.removed = self.0.keys().filter(|name| !next.contains_key(*name)).cloned().collect();
        changes.added.sort();
        changes.updated.sort();
        changes.removed.sort();

        self.0 = next;
        changes
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty() {
            return f.write_str("no change");
        }
        let mut first = true;
        for (kind, names) in [("added", &self.added), ("updated", &self.updated), ("removed", &self.removed)] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{kind} {}", names.iter().take(MAX_LISTED).map(String::as_str).collect::<Vec<_>>().join(", "))?;
            if names.len() > MAX_LISTED {
                write!(f, " and {} more", names.len() - MAX_LISTED)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use legate_api::envoy::config::cluster::v3::Cluster;
    use prost::Message;

    fn cluster(name: &str, connect_ms: i32) -> prost_types::Any {
        let cluster = Cluster {
            name: name.to_string(),
            connect_timeout: Some(prost_types::Duration { seconds: 0, nanos: connect_ms * 1_000_000 }),
            ..Default::default()
        };
        prost_types::Any { type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(), value: cluster.encode_to_vec() }
    }

    #[test]
    fn changes_name_added_updated_removed() {
        let mut applied = Applied::default();
        let first = applied.replace(&[cluster("a", 100), cluster("b", 100)]);
        assert_eq!(first.added, ["a", "b"]);
        assert_eq!(first.to_string(), "added a, b");

        let second = applied.replace(&[cluster("b", 250), cluster("c", 100)]);
        assert_eq!(second, Changes { added: vec!["c".into()], updated: vec!["b".into()], removed: vec!["a".into()] });
        assert_eq!(second.to_string(), "added c; updated b; removed a");

        assert_eq!(applied.replace(&[cluster("b", 250), cluster("c", 100)]).to_string(), "no change");
    }

    #[test]
    fn long_lists_are_counted() {
        let many: Vec<_> = (0..12).map(|i| cluster(&format!("c{i:02}"), 100)).collect();
        let text = Applied::default().replace(&many).to_string();
        assert!(text.ends_with(" and 4 more"), "{text}");
    }
}
