//! The queue that carries a connection's events from its endpoint: a `VecDeque` under a
//! lock, with the one waker of the connection's driver.
//!
//! It stands in for a tokio unbounded channel per connection (Quiver patch). Such a channel
//! makes its shared state (128-byte aligned) and a first block of slots when it is created,
//! about 800 bytes that every connection held for its whole life, idle or not. This queue
//! holds no allocation while it is empty.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

/// A queue with one sending and one receiving end.
pub(crate) fn event_queue<T>() -> (EventSender<T>, EventReceiver<T>) {
    let shared = Arc::new(Mutex::new(Queue {
        events: VecDeque::new(),
        waker: None,
        sender_gone: false,
        receiver_gone: false,
    }));
    (EventSender(shared.clone()), EventReceiver(shared))
}

struct Queue<T> {
    events: VecDeque<T>,
    /// The receiver's waker, when it found the queue empty.
    waker: Option<Waker>,
    /// The sender was dropped: once the queue is drained, the receiver sees the end.
    sender_gone: bool,
    /// The receiver was dropped: sending fails and hands the event back.
    receiver_gone: bool,
}

fn lock<T>(queue: &Mutex<Queue<T>>) -> MutexGuard<'_, Queue<T>> {
    // A panic under this lock leaves the queue consistent: every change is one step.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The endpoint's end.
pub(crate) struct EventSender<T>(Arc<Mutex<Queue<T>>>);

impl<T> EventSender<T> {
    /// Queues `event` and wakes the receiver; hands `event` back if the receiver is gone.
    pub(crate) fn send(&self, event: T) -> Result<(), T> {
        let waker = {
            let mut queue = lock(&self.0);
            if queue.receiver_gone {
                return Err(event);
            }
            queue.events.push_back(event);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Drop for EventSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut queue = lock(&self.0);
            queue.sender_gone = true;
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for EventSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSender").finish_non_exhaustive()
    }
}

/// The connection's end.
pub(crate) struct EventReceiver<T>(Arc<Mutex<Queue<T>>>);

impl<T> EventReceiver<T> {
    /// The next event; `Ready(None)` once the sender is gone and every event was taken;
    /// `Pending` (waking `cx` on the next send or on the sender's drop) otherwise.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut queue = lock(&self.0);
        if let Some(event) = queue.events.pop_front() {
            if queue.events.is_empty() {
                // A burst's room is not kept for the connection's life.
                queue.events = VecDeque::new();
            }
            return Poll::Ready(Some(event));
        }
        if queue.sender_gone {
            return Poll::Ready(None);
        }
        match &mut queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for EventReceiver<T> {
    fn drop(&mut self) {
        let events = {
            let mut queue = lock(&self.0);
            queue.receiver_gone = true;
            queue.waker = None;
            std::mem::take(&mut queue.events)
        };
        // Dropped outside the lock: an event may own a socket.
        drop(events);
    }
}

impl<T> fmt::Debug for EventReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventReceiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn events_come_in_order_then_the_end_once_the_sender_is_gone() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = event_queue();
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(1).unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a send wakes a waiting receiver"
        );
        tx.send(2).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(lock(&rx.0).events.capacity(), 0, "emptied, freed");
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(3).unwrap();
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(
            rx.poll_recv(&mut cx),
            Poll::Ready(Some(3)),
            "queued before the end"
        );
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn dropping_the_sender_wakes_a_waiting_receiver_and_sending_to_none_fails() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = event_queue::<u8>();
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));

        let (tx, rx) = event_queue();
        drop(rx);
        assert_eq!(tx.send(7), Err(7));
    }
}
