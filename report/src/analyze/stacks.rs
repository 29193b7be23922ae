//! Call stacks by reserved bytes: the attributed regions grouped by (category, call stack),
//! largest first. The text, JSON and HTML reports and `vmshim diff` all rank stacks this way.

use crate::analyze::attribute::{Attribution, Category, Inherited};
use std::collections::HashMap;

/// A call stack's total: the regions it made.
pub struct StackGroup {
    pub category: Category,
    /// The function the program called there (`mmap`, `pthread_create`, `free`, ...).
    pub cause: &'static str,
    pub stack: Vec<u64>,
    pub bytes: u64,
    pub regions: usize,
    pub tids: Vec<u32>,
    /// Set for what a fork child inherited (the stack is the parent's).
    pub inherited: Option<Inherited>,
}

/// Regions grouped by (category, call stack), largest first.
pub fn top_stacks(attr: &Attribution) -> Vec<StackGroup> {
    // Keyed by what the regions have in common, the pid they were inherited from included.
    type Key<'a> = (Category, &'static str, &'a [u64], Option<u32>);
    let mut groups: HashMap<Key, StackGroup> = HashMap::new();
    for r in attr.regions.iter().filter(|r| !r.stack.is_empty()) {
        let key = (r.category, r.cause, r.stack.as_slice(), r.inherited.map(|i| i.pid));
        let g = groups.entry(key).or_insert_with(|| StackGroup {
            category: r.category,
            cause: r.cause,
            stack: r.stack.clone(),
            bytes: 0,
            regions: 0,
            tids: vec![],
            inherited: r.inherited,
        });
        g.bytes += r.size();
        g.regions += 1;
        if let Some(t) = r.tid
            && !g.tids.contains(&t)
        {
            g.tids.push(t);
        }
    }
    let mut v: Vec<StackGroup> = groups.into_values().collect();
    for g in &mut v {
        g.tids.sort_unstable();
    }
    // Ties broken by what stays the same from run to run (threads, not addresses) first.
    v.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.category.name().cmp(b.category.name()))
            .then(a.tids.cmp(&b.tids))
            .then(a.stack.cmp(&b.stack))
    });
    v
}
