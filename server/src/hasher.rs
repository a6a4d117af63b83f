//! [`Hasher`]: password hashing on a few threads of its own, with a bounded queue.
//!
//! argon2 as configured takes 19 MiB and tens of milliseconds of one core per login or
//! registration. On tokio's blocking pool (512 threads) a burst of logins ran hundreds of
//! hashes at once: gigabytes of memory, every login slow. Here at most `threads` hashes
//! run at once (one per core by default), so hashing holds at most `threads × 19 MiB`;
//! the same few threads do all of it, so the allocator's per-thread arenas stay few and
//! the memory a burst took is reused by the next one instead of piling up. At most
//! `queue` more wait; past that [`Hasher::run`] answers [`Busy`] at once (HTTP 503) rather
//! than queueing work no client will wait for.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and their queue. Dropping it lets the threads end once the queue
/// is empty.
pub struct Hasher {
    jobs: SyncSender<Job>,
}

/// Every hashing thread is busy and the queue is full: try again shortly.
#[derive(Debug, thiserror::Error)]
#[error("password hashing is busy")]
pub struct Busy;

impl Hasher {
    /// Starts `threads` hashing threads (0: one per core) with room for `queue` waiting
    /// jobs.
    pub fn new(threads: usize, queue: usize) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let (jobs, waiting) = sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for i in 0..threads {
            let waiting = waiting.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("quiver-hash-{i}"))
                .spawn(move || work(&waiting));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a hashing thread");
            }
        }
        Self { jobs }
    }

    /// Runs `f` on a hashing thread and returns its result, or [`Busy`] at once when the
    /// queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => result.await.map_err(|_| Busy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

/// One hashing thread: takes jobs until the [`Hasher`] is gone.
fn work(waiting: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_at_most_threads_at_once_and_refuses_past_the_queue() {
        let hasher = Arc::new(Hasher::new(2, 3));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut calls = Vec::new();
        for _ in 0..20 {
            let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
            calls.push(tokio::spawn(async move {
                hasher
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        let mut done = 0;
        for call in calls {
            done += usize::from(call.await.unwrap().is_ok());
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "two threads, two at once");
        assert!(
            (2..=5).contains(&done),
            "2 running + 3 queued, the rest busy: {done}"
        );
        assert_eq!(
            hasher.run(|| 7).await.unwrap(),
            7,
            "free again after the burst"
        );
    }
}
