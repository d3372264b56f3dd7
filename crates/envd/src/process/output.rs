//! Fan-out of one process's output to the streams attached to it.
//!
//! Each attached stream has its own bounded queue. Publishing waits for room
//! (so a reader that keeps up never loses a byte, however much is written),
//! but only for [`SLOW_READER_TIMEOUT`]: a reader stuck that long is detached
//! and its stream ends with an error instead of stalling the process. With
//! nobody attached, output is dropped (there is no replay, as in E2B).

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

/// Chunks queued per attached stream before publishing waits (≤ 1 MiB at 32 KiB chunks).
const QUEUE_CHUNKS: usize = 32;
/// How long a full queue may hold up the process before its reader is dropped.
const SLOW_READER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Pty(Bytes),
}

/// How a process ended, as reported in its end event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Item {
    Data(Output),
    End(End),
}

pub enum Attach {
    Live(Subscription),
    Finished(End),
}

pub struct Subscription {
    rx: mpsc::Receiver<Item>,
    dropped: Arc<AtomicBool>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Option<Item> {
        self.rx.recv().await
    }

    /// Whether this subscriber was detached for falling behind.
    pub fn was_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Subscriber>,
    end: Option<End>,
    next_id: u64,
}

pub struct Hub {
    inner: Mutex<Inner>,
    slow_reader_timeout: Duration,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            slow_reader_timeout: SLOW_READER_TIMEOUT,
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a new reader; it sees output published from now on.
    pub fn subscribe(&self) -> Attach {
        let mut inner = self.lock();
        if let Some(end) = &inner.end {
            return Attach::Finished(end.clone());
        }
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let dropped = Arc::new(AtomicBool::new(false));
        inner.next_id += 1;
        let id = inner.next_id;
        inner.subscribers.push(Subscriber {
            id,
            tx,
            dropped: Arc::clone(&dropped),
        });
        Attach::Live(Subscription { rx, dropped })
    }

    #[cfg(test)]
    fn has_subscribers(&self) -> bool {
        !self.lock().subscribers.is_empty()
    }

    pub async fn publish(&self, output: Output) {
        let subscribers = self.lock().subscribers.clone();
        for sub in subscribers {
            if !deliver(&sub, Item::Data(output.clone()), self.slow_reader_timeout).await {
                self.lock().subscribers.retain(|s| s.id != sub.id);
            }
        }
    }

    /// Records the end, delivers it after all data, and closes every queue.
    pub async fn finish(&self, end: End) {
        let subscribers = {
            let mut inner = self.lock();
            inner.end = Some(end.clone());
            std::mem::take(&mut inner.subscribers)
        };
        for sub in subscribers {
            deliver(&sub, Item::End(end.clone()), self.slow_reader_timeout).await;
        }
    }
}

/// Returns false when the subscriber is gone or was detached.
async fn deliver(sub: &Subscriber, item: Item, timeout: Duration) -> bool {
    match sub.tx.send_timeout(item, timeout).await {
        Ok(()) => true,
        Err(SendTimeoutError::Closed(_)) => false,
        Err(SendTimeoutError::Timeout(_)) => {
            tracing::warn!("detaching a process output reader that stopped reading");
            sub.dropped.store(true, Ordering::Release);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_then_end_then_closes() {
        let hub = Hub::default();
        let Attach::Live(mut sub) = hub.subscribe() else {
            panic!("hub should be live");
        };
        let producer = async {
            for i in 0..100u8 {
                hub.publish(Output::Stdout(Bytes::from(vec![i]))).await;
            }
            hub.finish(End {
                exit_code: 0,
                exited: true,
                status: "exit status 0".into(),
                error: None,
            })
            .await;
        };
        let consumer = async {
            let mut seen = Vec::new();
            let mut ended = false;
            while let Some(item) = sub.recv().await {
                match item {
                    Item::Data(Output::Stdout(b)) => seen.extend_from_slice(&b),
                    Item::End(_) => ended = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (seen, ended)
        };
        let ((), (seen, ended)) = tokio::join!(producer, consumer);
        assert_eq!(seen, (0..100u8).collect::<Vec<_>>());
        assert!(ended);
        assert!(matches!(hub.subscribe(), Attach::Finished(_)));
    }

    #[tokio::test]
    async fn stuck_reader_is_detached_instead_of_blocking() {
        let hub = Hub {
            slow_reader_timeout: Duration::from_millis(20),
            ..Hub::default()
        };
        let Attach::Live(mut sub) = hub.subscribe() else {
            panic!("hub should be live");
        };
        // Never read while publishing: the queue fills, then the reader is dropped.
        for _ in 0..QUEUE_CHUNKS + 5 {
            hub.publish(Output::Stdout(Bytes::from_static(b"x"))).await;
        }
        assert!(!hub.has_subscribers());
        let mut queued = 0;
        while let Some(Item::Data(_)) = sub.recv().await {
            queued += 1;
        }
        assert_eq!(queued, QUEUE_CHUNKS);
        assert!(sub.was_dropped());
    }

    #[tokio::test]
    async fn dropped_reader_is_forgotten() {
        let hub = Hub::default();
        drop(hub.subscribe());
        hub.publish(Output::Stdout(Bytes::from_static(b"x"))).await;
        assert!(!hub.has_subscribers());
    }
}
