//! S1 (first half): Argon2 checks take about 19 MiB and a core each, so at
//! most `available_parallelism()` run at once; the rest wait in a bounded
//! queue, and a check that finds the queue full is refused at once (503
//! `overloaded`) instead of adding to the memory a flood of logins costs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

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
        }
    }

    /// As many checks at once as there are cores, `MAX_WAITING` queued.
    pub fn per_core() -> PasswordPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordPool::new(cores, MAX_WAITING)
    }

    /// Runs `work` on the blocking pool once a core is free. The permit
    /// moves into the blocking task, so a caller that gives up does not
    /// free its core before the hash it started is done.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
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
        tokio::task::spawn_blocking(move || {
            let out = work();
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
                pool.run(|| std::thread::sleep(Duration::from_millis(50)))
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
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
