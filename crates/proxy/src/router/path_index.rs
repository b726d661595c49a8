//! A virtual host's routes indexed by path, so that finding the first
//! matching route costs a few binary searches rather than a test of every
//! route before it.
//!
//! Routes keep Envoy's order: the first route whose match accepts the
//! request wins. The index only narrows the candidates. A case-sensitive
//! prefix or exact path can match a request only if it equals the start of
//! the request's path, or the whole path, so the index looks those up by
//! value. Routes with a regex or a case-insensitive path are tested one by
//! one. Each candidate still goes through its full match (headers, gRPC),
//! and the lowest position that passes wins.

use http::HeaderMap;

use legate_config::model::{PathMatch, Route};

use super::matching;

/// Virtual hosts with fewer routes than this are searched in order. The
/// threshold is an estimate: below it, a scan costs about as much as the
/// lookups, and the index would only add memory.
pub(super) const INDEX_FROM_ROUTES: usize = 16;

/// Route positions by path, built once per route table.
pub(super) struct PathIndex {
    /// Routes with a case-sensitive prefix, ordered by prefix length, then
    /// by prefix, then by position.
    prefixes: Vec<u32>,
    /// Each prefix length present, ascending, with its range in `prefixes`.
    prefix_lengths: Vec<LengthRange>,
    /// Routes with a case-sensitive exact path, ordered by path, then by
    /// position.
    exact: Vec<u32>,
    /// The other routes, by position.
    scanned: Vec<u32>,
}

struct LengthRange {
    length: usize,
    start: usize,
    end: usize,
}

impl PathIndex {
    /// Indexes `routes`. Returns `None` when they are too few to gain from
    /// it, or when none of them has a path the index can look up.
    pub(super) fn build(routes: &[Route]) -> Option<PathIndex> {
        if routes.len() < INDEX_FROM_ROUTES || u32::try_from(routes.len()).is_err() {
            return None;
        }

        let mut prefixes = Vec::new();
        let mut exact = Vec::new();
        let mut scanned = Vec::new();
        for (position, route) in routes.iter().enumerate() {
            let position = position as u32;
            match &route.matcher.path {
                PathMatch::Prefix(_) if route.matcher.case_sensitive => prefixes.push(position),
                PathMatch::Exact(_) if route.matcher.case_sensitive => exact.push(position),
                _ => scanned.push(position),
            }
        }
        if prefixes.is_empty() && exact.is_empty() {
            return None;
        }
        for positions in [&mut prefixes, &mut exact, &mut scanned] {
            positions.shrink_to_fit();
        }

        // Stable sorts keep equal paths in route order.
        let key = |position: &u32| path_of(&routes[*position as usize]);
        prefixes.sort_by(|a, b| (key(a).len(), key(a)).cmp(&(key(b).len(), key(b))));
        exact.sort_by_key(key);
        let prefix_lengths = length_ranges(&prefixes, |position| key(position).len());

        Some(PathIndex { prefixes, prefix_lengths, exact, scanned })
    }

    /// Returns the position of the first route in `routes` (the routes this
    /// index was built from) that matches `path` and `headers`.
    pub(super) fn first_match(&self, routes: &[Route], path: &str, headers: &HeaderMap) -> Option<usize> {
        let mut first = None;
        let mut try_in_order = |positions: &[u32]| {
            for &position in positions {
                let position = position as usize;
                if first.is_some_and(|first| position >= first) {
                    return;
                }
                if matching::matches(&routes[position].matcher, path, headers) {
                    first = Some(position);
                    return;
                }
            }
        };

        let bytes = path.as_bytes();
        for range in &self.prefix_lengths {
            let Some(start_of_path) = bytes.get(..range.length) else { break };
            try_in_order(equal_run(&self.prefixes[range.start..range.end], routes, start_of_path));
        }
        try_in_order(equal_run(&self.exact, routes, bytes));
        try_in_order(&self.scanned);
        first
    }
}

/// Returns the indexed path of a route: its prefix or its exact path.
fn path_of(route: &Route) -> &[u8] {
    match &route.matcher.path {
        PathMatch::Prefix(path) | PathMatch::Exact(path) => path.as_bytes(),
        PathMatch::Regex(_) => &[],
    }
}

/// Splits `positions`, ordered by path length, into one range per length.
fn length_ranges(positions: &[u32], length_of: impl Fn(&u32) -> usize) -> Vec<LengthRange> {
    let mut ranges: Vec<LengthRange> = Vec::new();
    for (index, position) in positions.iter().enumerate() {
        let length = length_of(position);
        match ranges.last_mut() {
            Some(range) if range.length == length => range.end = index + 1,
            _ => ranges.push(LengthRange { length, start: index, end: index + 1 }),
        }
    }
    ranges
}

/// Returns the routes in `positions` (ordered by path) whose path equals `path`.
fn equal_run<'a>(positions: &'a [u32], routes: &[Route], path: &[u8]) -> &'a [u32] {
    let key = |position: &u32| path_of(&routes[*position as usize]);
    let start = positions.partition_point(|position| key(position) < path);
    let length = positions[start..].partition_point(|position| key(position) == path);
    &positions[start..start + length]
}
