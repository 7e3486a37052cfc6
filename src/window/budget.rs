//! The span budget: how many spans may be held at once between the receiver
//! accepting them and the sink finishing with their window. Receivers reserve
//! before they accept; a window gives its spans' share back when it is dropped.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    total: usize,
    resident: IntGauge,
}

impl Budget {
    pub fn new(total: usize, resident: IntGauge) -> Self {
        Budget { semaphore: Arc::new(Semaphore::new(total)), total, resident }
    }

    /// Reserves room for `spans` spans, or `None` when the budget cannot hold
    /// them now (the caller answers with backpressure).
    pub fn try_reserve(&self, spans: usize) -> Option<Held> {
        let n = u32::try_from(spans).ok()?;
        self.semaphore.try_acquire_many(n).ok()?.forget();
        self.update_gauge();
        Some(Held { count: spans, budget: self.clone() })
    }

    /// Spans held now.
    pub fn resident(&self) -> usize {
        self.total - self.semaphore.available_permits()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Spans that could be reserved now.
    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// An empty holding to move spans' shares into.
    pub fn empty(&self) -> Held {
        Held { count: 0, budget: self.clone() }
    }

    fn update_gauge(&self) {
        self.resident.set(self.resident() as i64);
    }
}

/// A share of the budget; given back when dropped.
pub struct Held {
    count: usize,
    budget: Budget,
}

impl Held {
    pub fn count(&self) -> usize {
        self.count
    }

    /// Moves `n` spans' share from `self` into `to` (spans moving between windows).
    pub fn transfer(&mut self, n: usize, to: &mut Held) {
        let n = n.min(self.count);
        self.count -= n;
        to.count += n;
    }

    /// Splits `n` spans' share (at most all) off into a holding of its own.
    pub fn split(&mut self, n: usize) -> Held {
        let mut to = Held { count: 0, budget: self.budget.clone() };
        self.transfer(n, &mut to);
        to
    }

    /// Takes over all of `other`.
    pub fn absorb(&mut self, mut other: Held) {
        self.count += std::mem::take(&mut other.count);
    }

    /// Gives back all but `keep` spans' share now (the rest of the spans
    /// are gone before the holder is).
    pub fn release_all_but(&mut self, keep: usize) {
        let n = self.count.saturating_sub(keep);
        self.count -= n;
        if n > 0 {
            self.budget.semaphore.add_permits(n);
            self.budget.update_gauge();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release_all_but(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let budget = Budget::new(10, IntGauge::new("g", "h").unwrap());
        let a = budget.try_reserve(6).unwrap();
        assert!(budget.try_reserve(5).is_none());
        let mut b = budget.try_reserve(4).unwrap();
        assert_eq!(budget.resident(), 10);
        let mut window = budget.empty();
        window.absorb(a);
        b.transfer(3, &mut window);
        assert_eq!((window.count(), b.count(), budget.resident()), (9, 1, 10));
        drop(window);
        assert_eq!(budget.resident(), 1);
        drop(b);
        assert_eq!(budget.resident(), 0);
        assert_eq!(budget.resident.get(), 0);
    }
}
