//! A commit's answers handed to each waiting thread in one wake-up.
//!
//! One commit answers dozens of writes whose requests wait on the serving
//! threads (`serving`: one current-thread runtime each). Answered one by
//! one from the committer thread, every answer is a remote wake-up: a push
//! onto the waiter's runtime's injection queue, often an unpark (an
//! eventfd write), and a waiter that runs in between its connection's
//! writes, so that each answer leaves in its own `writev`. A thread that
//! runs a relay ([`answer_here`]) instead gets the answers for its waiters
//! as one list and one wake-up; the relay task completes them on the
//! thread, in order, so that the woken requests run one after another and
//! their connection writes their responses together.
//!
//! This is the effect a scheduler-wide setting (`global_queue_interval(1)`:
//! every remote wake-up first) had, measured in `docs/PERFORMANCE.md`, but
//! only for the committer's answers: the watch tasks a commit wakes keep
//! their place in the queue. Threads without a relay (the shared runtime,
//! blocking threads) are answered directly.

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, oneshot};

use super::committer::Outcome;
use crate::storage::StoreError;

/// What a write is answered.
pub(super) type Answer = Result<Outcome, StoreError>;

/// An answer on its way: the waiter's oneshot and what it is sent.
type Delivery = (oneshot::Sender<Answer>, Answer);

/// Where a write's answer goes: its oneshot, through its thread's relay if
/// the thread runs one.
pub(super) struct Reply {
    sender: oneshot::Sender<Answer>,
    relay: Option<Arc<Relay>>,
}

impl Reply {
    /// A reply for a write submitted on this thread, and what waits for it.
    pub(super) fn here() -> (Reply, oneshot::Receiver<Answer>) {
        let (sender, receiver) = oneshot::channel();
        // None while the thread's locals are torn down: answered directly.
        let relay = HERE.try_with(|here| here.borrow().clone()).ok().flatten();
        (Reply { sender, relay }, receiver)
    }

    /// Answers at once, from this thread (failures: they are rare, and
    /// need no batching).
    pub(super) fn send(self, answer: Answer) {
        let _ = self.sender.send(answer);
    }
}

/// One thread's relay: the answers the committer left for it.
pub(super) struct Relay {
    inbox: Mutex<Inbox>,
    arrived: Notify,
}

#[derive(Default)]
struct Inbox {
    answers: Vec<Delivery>,
    /// The relay task is gone (its runtime stopped): answer directly.
    closed: bool,
}

impl Relay {
    fn deliver(&self, mut answers: Vec<Delivery>) {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if inbox.closed {
            drop(inbox);
            send_all(answers.drain(..));
            return;
        }
        if inbox.answers.is_empty() {
            std::mem::swap(&mut inbox.answers, &mut answers);
        } else {
            inbox.answers.append(&mut answers);
        }
        drop(inbox);
        self.arrived.notify_one();
    }

    fn take(&self, into: &mut Vec<Delivery>) {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut inbox.answers, into);
    }
}

thread_local! {
    /// This thread's relay, if it runs one.
    static HERE: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

/// Installs a relay for the calling thread; the returned task must run on
/// this thread's runtime (a current-thread one) for as long as it serves
/// writes. Answers to writes submitted on this thread then arrive through
/// it; once the task is dropped they are sent directly again.
pub fn answer_here() -> impl Future<Output = ()> + Send + 'static {
    let relay = Arc::new(Relay {
        inbox: Mutex::new(Inbox::default()),
        arrived: Notify::new(),
    });
    HERE.with(|here| *here.borrow_mut() = Some(Arc::clone(&relay)));
    // Made before the task is first polled, so that a task dropped unpolled
    // (its runtime stopped first) still closes the relay.
    let closing = Closing(relay);
    async move {
        let mut answers = Vec::new();
        loop {
            closing.0.arrived.notified().await;
            closing.0.take(&mut answers);
            send_all(answers.drain(..));
        }
    }
}

/// Closes a relay when its task ends, answering what it still holds.
struct Closing(Arc<Relay>);

impl Drop for Closing {
    fn drop(&mut self) {
        let answers = {
            let mut inbox = self.0.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            inbox.closed = true;
            std::mem::take(&mut inbox.answers)
        };
        send_all(answers.into_iter());
    }
}

fn send_all(answers: impl Iterator<Item = Delivery>) {
    for (sender, answer) in answers {
        let _ = sender.send(answer);
    }
}

/// A commit's answers, gathered by relay, sent by [`Answers::deliver`].
#[derive(Default)]
pub(super) struct Answers {
    by_relay: Vec<(Arc<Relay>, Vec<Delivery>)>,
}

impl Answers {
    /// Answers `reply` with `answer`: at once if its thread runs no relay,
    /// otherwise on [`Answers::deliver`].
    pub(super) fn add(&mut self, reply: Reply, answer: Answer) {
        let Some(relay) = reply.relay else {
            let _ = reply.sender.send(answer);
            return;
        };
        // A handful of serving threads: a linear search.
        match self
            .by_relay
            .iter_mut()
            .find(|(known, _)| Arc::ptr_eq(known, &relay))
        {
            Some((_, answers)) => answers.push((reply.sender, answer)),
            None => self.by_relay.push((relay, vec![(reply.sender, answer)])),
        }
    }

    /// Hands each relay its answers, one wake-up each.
    pub(super) fn deliver(self) {
        for (relay, answers) in self.by_relay {
            relay.deliver(answers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Revision;

    fn outcome(revision: Revision) -> Answer {
        Ok(Outcome::Compacted(revision))
    }

    fn revision_of(answer: Answer) -> Revision {
        match answer {
            Ok(Outcome::Compacted(revision)) => revision,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    #[test]
    fn a_thread_without_a_relay_is_answered_at_once() {
        let (reply, mut receiver) = Reply::here();
        let mut answers = Answers::default();
        answers.add(reply, outcome(7));
        assert_eq!(revision_of(receiver.try_recv().unwrap()), 7);
        answers.deliver();
    }

    #[test]
    fn a_relay_answers_on_its_thread_in_order_and_directly_once_closed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let relay = tokio::spawn(answer_here());
            let replies: Vec<_> = (0..3).map(|_| Reply::here()).collect();
            let mut receivers = Vec::new();
            // Answered from another thread, as the committer does.
            let mut answers = Answers::default();
            for (index, (reply, receiver)) in replies.into_iter().enumerate() {
                answers.add(reply, outcome(index as Revision));
                receivers.push(receiver);
            }
            let mut first = receivers.remove(0);
            // Held by the relay until `deliver`.
            assert!(first.try_recv().is_err());
            std::thread::spawn(move || answers.deliver())
                .join()
                .unwrap();
            assert_eq!(revision_of(first.await.unwrap()), 0);
            for (index, receiver) in receivers.into_iter().enumerate() {
                assert_eq!(revision_of(receiver.await.unwrap()), index as Revision + 1);
            }
            // Once its task is gone, a relay answers directly.
            let (reply, mut receiver) = Reply::here();
            relay.abort();
            let _ = relay.await;
            let mut answers = Answers::default();
            answers.add(reply, outcome(9));
            answers.deliver();
            assert_eq!(revision_of(receiver.try_recv().unwrap()), 9);
        });
        HERE.with(|here| here.borrow_mut().take());
    }

    #[test]
    fn a_relay_whose_task_never_ran_answers_directly() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (reply, mut receiver) = runtime.block_on(async {
            tokio::spawn(answer_here());
            // Returns before the relay task is ever polled.
            Reply::here()
        });
        drop(runtime);
        let mut answers = Answers::default();
        answers.add(reply, outcome(3));
        answers.deliver();
        assert_eq!(revision_of(receiver.try_recv().unwrap()), 3);
        HERE.with(|here| here.borrow_mut().take());
    }
}
