//! S1 (first half): Argon2 checks take about 19 MiB and a core each, so at
//! most `available_parallelism()` run at once; the rest wait in a bounded
//! queue, and a check that finds the queue full is refused at once (503
//! `overloaded`) instead of adding to the memory a flood of logins costs.
//!
//! The 19 MiB are not asked of the allocator per check: each check is
//! lent one of the pool's reusable Argon2 buffers (`Memory`), of which
//! there are never more than checks at once. Allocated per check, freed
//! memory stayed in the allocator's per-thread arenas (glibc keeps a
//! freed 19 MiB block for reuse in the arena of whichever blocking thread
//! ran it), and 150 failed logins left a 417 MB peak on two cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// The working memory of one Argon2 run, kept and reused.
pub type Memory = Vec<argon2::Block>;

/// How many checks may wait for a free core before new ones are refused.
pub const MAX_WAITING: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Every core is busy and the queue is full.
    Overloaded,
    /// The blocking task panicked or was cancelled.
    Failed,
}

pub struct PasswordPool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Buffers not lent out; at most as many exist as permits.
    memory: Arc<Mutex<Vec<Memory>>>,
}

/// Counts a waiter out again however its wait ends (done or cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PasswordPool {
    pub fn new(parallel: usize, max_waiting: usize) -> PasswordPool {
        PasswordPool {
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            memory: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// As many checks at once as there are cores, `MAX_WAITING` queued.
    pub fn per_core() -> PasswordPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordPool::new(cores, MAX_WAITING)
    }

    /// Runs `work` on the blocking pool once a core is free, lending it
    /// a reusable buffer for Argon2's memory. The permit moves into the
    /// blocking task, so a caller that gives up does not free its core
    /// before the hash it started is done.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Memory) -> T + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(PoolError::Overloaded);
                }
                let _counted = Waiting(&self.waiting);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PoolError::Failed)?
            }
        };
        let memory = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let mut lent = memory
                .lock()
                .ok()
                .and_then(|mut m| m.pop())
                .unwrap_or_default();
            let out = work(&mut lent);
            if let Ok(mut m) = memory.lock() {
                m.push(lent);
            }
            drop(permit);
            out
        })
        .await
        .map_err(|_| PoolError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_queue_checks_are_refused_and_the_rest_run() {
        let pool = Arc::new(PasswordPool::new(1, 2));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                pool.run(|_| std::thread::sleep(Duration::from_millis(50)))
                    .await
            }));
        }
        let mut ok = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(PoolError::Overloaded) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((ok, refused), (3, 3));
        assert_eq!(pool.run(|_| 7).await, Ok(7));
        // One check at a time: one buffer, lent again and again.
        for _ in 0..3 {
            pool.run(|m| m.push(argon2::Block::default()))
                .await
                .unwrap();
        }
        let kept = pool.memory.lock().unwrap();
        assert_eq!((kept.len(), kept[0].len()), (1, 3));
    }
}
