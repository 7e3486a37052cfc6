//! Work split across the cores: a window's traces are composed, and their
//! composed spans mapped, each from its own inputs alone.

/// Most threads composing a window's traces: two cores are the target, and
/// a trace's composition is a few microseconds, so more threads would mostly
/// wait on one another's memory.
const MAX_COMPOSE_THREADS: usize = 4;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |c| c.get()).min(MAX_COMPOSE_THREADS)
}

/// `work` over `0..n` cut into one contiguous range per core, the ranges'
/// results in order. A thread the OS will not give runs its range here
/// instead: the decompressor keeps serving.
pub fn on_cores<T: Send>(n: usize, work: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let chunk = n.div_ceil(threads()).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|from| {
                let to = (from + chunk).min(n);
                std::thread::Builder::new().spawn_scoped(scope, move || work(from..to)).map_err(|_| from..to)
            })
            .collect();
        let join = |h| match h {
            Ok(h) => std::thread::ScopedJoinHandle::join(h).unwrap_or_else(|e| std::panic::resume_unwind(e)),
            Err(range) => work(range),
        };
        handles.into_iter().map(join).collect()
    })
}

/// `work` over `items` cut into one contiguous part per core, each part with
/// the index of its first item; the parts' results in order. As
/// [`on_cores`], a part whose thread the OS will not give runs here.
pub fn on_cores_mut<I: Send, T: Send>(items: &mut [I], work: impl Fn(usize, &mut [I]) -> T + Sync) -> Vec<T> {
    let chunk = items.len().div_ceil(threads()).max(1);
    let parts: Vec<std::sync::Mutex<Option<&mut [I]>>> =
        items.chunks_mut(chunk).map(|p| std::sync::Mutex::new(Some(p))).collect();
    let run = |i: usize| {
        let part = parts[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        part.map(|part| work(i * chunk, part))
    };
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..parts.len()).map(|i| (i, std::thread::Builder::new().spawn_scoped(scope, move || run(i)))).collect();
        handles
            .into_iter()
            .filter_map(|(i, h)| match h {
                Ok(h) => std::thread::ScopedJoinHandle::join(h).unwrap_or_else(|e| std::panic::resume_unwind(e)),
                Err(_) => run(i),
            })
            .collect()
    })
}
