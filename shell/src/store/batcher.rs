//! Requests that arrive together are served together. On a busy server a request costs
//! statements, plans and round trips more than rows: a batch of many pays for a handful of
//! statements between them, where each on its own pays for its own.
//!
//! Requests queue; a batch task (at most `at_once` of them, each serving one batch at a time)
//! takes every request waiting, up to `most`, and serves them with one call of the work's
//! `serve`. A lone request is served at once, as a batch of one: nothing waits for company.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The answers of a batch statement that numbers its requests from 1 (`WITH ORDINALITY`),
/// in request order: `None` for a request no row answered.
pub(crate) fn by_ordinal<T>(
    len: usize,
    rows: impl IntoIterator<Item = (i64, T)>,
) -> Vec<Option<T>> {
    let mut answers: Vec<Option<T>> = std::iter::repeat_with(|| None).take(len).collect();
    for (n, answer) in rows {
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| answers.get_mut(i)) {
            *slot = Some(answer);
        }
    }
    answers
}

/// What a batcher does with a batch.
pub(crate) trait BatchWork: Send + Sync + 'static {
    type Request: Send + 'static;
    type Reply: Send + 'static;

    /// Serves `batch`: one reply per request, in the same order. A request left without one
    /// (a shorter list) is answered `None` by [`Batcher::submit`].
    fn serve(&self, batch: Vec<Self::Request>) -> impl Future<Output = Vec<Self::Reply>> + Send;
}

/// Where requests wait to be served in batches by `W`.
pub(crate) struct Batcher<W: BatchWork> {
    shared: Arc<Shared<W>>,
}

impl<W: BatchWork> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

struct Shared<W: BatchWork> {
    work: W,
    queue: Mutex<Queue<W>>,
    /// Most requests one batch takes.
    most: usize,
    /// Batch tasks at once, each on its own connection: while one waits for the server, the
    /// next is being read.
    at_once: usize,
    batches: AtomicU64,
}

struct Queue<W: BatchWork> {
    waiting: Vec<(W::Request, oneshot::Sender<W::Reply>)>,
    /// Batch tasks running; at most `at_once`.
    running: usize,
}

impl<W: BatchWork> Batcher<W> {
    pub(crate) fn new(work: W, most: usize, at_once: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                work,
                queue: Mutex::new(Queue { waiting: Vec::new(), running: 0 }),
                most: most.max(1),
                at_once: at_once.max(1),
                batches: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn work(&self) -> &W {
        &self.shared.work
    }

    /// Batches served so far (each of one or more requests).
    pub(crate) fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }

    /// `request`'s reply, from the batch that took it; `None` when that batch gave it none
    /// (or its task died): the caller serves the request on its own.
    pub(crate) async fn submit(&self, request: W::Request) -> Option<W::Reply> {
        let (reply, answer) = oneshot::channel();
        let start_task = {
            let mut queue = self.shared.queue();
            queue.waiting.push((request, reply));
            let start = queue.running < self.shared.at_once;
            queue.running += usize::from(start);
            start
        };
        if start_task {
            tokio::spawn(run_batches(self.shared.clone()));
        }
        answer.await.ok()
    }
}

impl<W: BatchWork> Shared<W> {
    fn queue(&self) -> MutexGuard<'_, Queue<W>> {
        // The queue is consistent after every statement under the lock: a panic elsewhere
        // cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One batch task: takes the waiting requests, a batch at a time, until none is left.
async fn run_batches<W: BatchWork>(shared: Arc<Shared<W>>) {
    let mut slot = Slot { shared: shared.clone(), released: false };
    loop {
        let (requests, replies): (Vec<W::Request>, Vec<oneshot::Sender<W::Reply>>) = {
            let mut queue = shared.queue();
            if queue.waiting.is_empty() {
                queue.running -= 1;
                slot.released = true;
                return;
            }
            let take = queue.waiting.len().min(shared.most);
            queue.waiting.drain(..take).unzip()
        };
        shared.batches.fetch_add(1, Ordering::Relaxed);
        let answers = shared.work.serve(requests).await;
        // A reply left out drops its sender: the request is told to serve itself. A caller
        // that went away drops its receiver: whatever was done for it stands.
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// A batch task's place among `at_once`, given back if the task ends without returning it (a
/// panic), and a new task started for any request still waiting: otherwise those would wait
/// for a task that no longer runs.
struct Slot<W: BatchWork> {
    shared: Arc<Shared<W>>,
    released: bool,
}

impl<W: BatchWork> Drop for Slot<W> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        tracing::error!("a batch task ended early; its requests are served on their own");
        let restart = {
            let mut queue = self.shared.queue();
            let restart = !queue.waiting.is_empty();
            if !restart {
                queue.running -= 1;
            }
            restart
        };
        if restart {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(run_batches(self.shared.clone()));
            }
        }
    }
}
