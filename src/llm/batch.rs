//! Generation batched over requests.
//!
//! A generator asks the model for one context's next-token scores at a
//! time, and between asks it masks, samples and parses: straight-line code
//! per request. Here each of `rows` generators runs on its own thread with
//! a [`RowModel`] for its model. The calling thread, which owns the
//! network, waits until every generator still running has asked, then
//! answers them all with one batched, cached step
//! ([`crate::nn::lm::Lm::next_logits_batch`]). The generators' own work runs
//! in parallel meanwhile.
//!
//! Generator `w` takes requests `w`, `w + rows`, ..., each with its own seed
//! ([`request_seed`]), and a step serves exactly one ask of every generator
//! still running: which requests share a step, and so the output, depends on
//! the inputs only, not on thread timing.

use std::sync::mpsc;

use super::generate::NextToken;
use super::model::LanguageModel;
use crate::nn::lm::BatchCache;

/// What a generator sends the model's thread.
enum Ask {
    /// Scores after this context.
    Logits(usize, Vec<u32>),
    /// The generator has no more requests (sent when its model is dropped,
    /// so a generator that panics leaves the batch too).
    Done(usize),
}

/// A generator's view of the batched model.
pub struct RowModel {
    worker: usize,
    asks: mpsc::Sender<Ask>,
    answers: mpsc::Receiver<Vec<f32>>,
}

impl NextToken for RowModel {
    fn logits(&mut self, context: &[u32]) -> Vec<f32> {
        if self.asks.send(Ask::Logits(self.worker, context.to_vec())).is_err() {
            return Vec::new();
        }
        self.answers.recv().unwrap_or_default()
    }
}

impl Drop for RowModel {
    fn drop(&mut self) {
        let _ = self.asks.send(Ask::Done(self.worker));
    }
}

/// The seed of request `index` of a run seeded `seed`: every request draws
/// from its own generator, so batched and one-by-one runs agree.
pub fn request_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `work(index, model)` for every index below `count`, up to `rows`
/// requests at a time sharing each model step; results in index order.
pub fn run<T: Send>(lm: &LanguageModel, rows: usize, count: usize, work: impl Fn(usize, &mut RowModel) -> T + Sync) -> Vec<T> {
    let rows = rows.clamp(1, count.max(1));
    let (asks, inbox) = mpsc::channel();
    std::thread::scope(|scope| {
        let mut answer = Vec::with_capacity(rows);
        let mut workers = Vec::with_capacity(rows);
        for w in 0..rows {
            let (to, from) = mpsc::channel();
            answer.push(to);
            let (asks, work) = (asks.clone(), &work);
            workers.push(scope.spawn(move || {
                let mut model = RowModel { worker: w, asks, answers: from };
                (w..count).step_by(rows).map(|i| (i, work(i, &mut model))).collect::<Vec<_>>()
            }));
        }
        drop(asks);
        serve(lm, &inbox, &answer);
        let mut out: Vec<(usize, T)> = Vec::with_capacity(count);
        for h in workers {
            out.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, t)| t).collect()
    })
}

/// Answers the generators' asks step by step until all are done.
fn serve(lm: &LanguageModel, inbox: &mpsc::Receiver<Ask>, answer: &[mpsc::Sender<Vec<f32>>]) {
    let workers = answer.len();
    let mut cache = BatchCache::new(workers);
    // The worker of each cache row.
    let mut rows: Vec<usize> = (0..workers).collect();
    let mut done = vec![false; workers];
    let mut contexts: Vec<Vec<u32>> = vec![Vec::new(); workers];
    loop {
        // One ask from every generator still running (a `Done` lowers the count).
        let (mut asked, mut left) = (0, false);
        while asked < done.iter().filter(|d| !**d).count() {
            match inbox.recv() {
                Ok(Ask::Logits(w, c)) => {
                    contexts[w] = c;
                    asked += 1;
                }
                Ok(Ask::Done(w)) => {
                    done[w] = true;
                    left = true;
                }
                Err(_) => return,
            }
        }
        if done.iter().all(|d| *d) {
            return;
        }
        if left {
            let keep: Vec<bool> = rows.iter().map(|&w| !done[w]).collect();
            cache.keep_rows(&keep);
            rows.retain(|&w| !done[w]);
        }
        let views: Vec<&[u32]> = rows.iter().map(|&w| contexts[w].as_slice()).collect();
        for (&w, logits) in rows.iter().zip(lm.batch_logits(&views, &mut cache)) {
            let _ = answer[w].send(logits);
        }
    }
}
