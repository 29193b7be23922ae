//! `--folded`: reserved bytes by call stack in the folded-stack text flamegraph.pl and
//! inferno read.

use crate::analyze::Analysis;

/// The frames of a stack as folded-stack text: outermost first, `;`-separated, without the
/// separators the format reserves.
pub fn folded_frames(a: &Analysis, stack: &[u64]) -> Vec<String> {
    let mut names: Vec<String> = a
        .frames(stack)
        .iter()
        .map(|f| match &f.function {
            Some(n) => n.replace([';', ' '], "_"),
            None => format!("{:#x}", f.addr),
        })
        .collect();
    names.reverse();
    names
}

/// Folded stacks weighted by reserved bytes: `category;outer;...;inner;call bytes`. Regions
/// with no stack count under their category alone, so the total is the VSZ.
pub fn folded(a: &Analysis) -> String {
    let mut weights: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for r in &a.attr.regions {
        let mut key = vec![r.category.name().to_string()];
        if !r.stack.is_empty() {
            key.extend(folded_frames(a, &r.stack));
            key.push(format!("{}()", r.cause));
        }
        *weights.entry(key.join(";")).or_insert(0) += r.size();
    }
    weights.into_iter().map(|(k, v)| format!("{k} {v}\n")).collect()
}
