//! Work over the files of a run spread across the machine's cores: a run of a thousand short
//! processes is a thousand traces to list, append to and read, each on its own (issue 12: the
//! end of the 1,000-process loop was one core's sequential walk while the other sat idle).

/// The threads to use for `n` independent items: the cores this process may run on, at most 4,
/// and one for a handful of items.
pub fn threads_for(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    cores.min(4).min(n.div_ceil(16)).max(1)
}

/// `f` of every item, in the items' order, computed on [`threads_for`] threads. A panic in `f`
/// is raised again here.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = threads_for(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> =
            items.chunks(chunk).map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>())).collect();
        parts.into_iter().flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_order_of_the_items() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(super::map(&items, |i| i * 2), items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(super::map(&[] as &[u32], |i| *i), Vec::<u32>::new());
    }
}
