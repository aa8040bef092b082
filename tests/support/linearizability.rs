//! A linearizability checker for histories of reads, writes and
//! compare-and-sets on registers (one register per key), as the fault tests
//! record them through the real binary.
//!
//! Why it exists: "every acknowledged write survives" says nothing about
//! stale reads, lost updates or a compare-and-set that saw the wrong value
//! while clients run concurrently through crashes and failovers.
//! Linearizability does: there must be one order of the operations, each
//! taking effect at an instant between its invocation and its completion,
//! that a single register would have produced.
//!
//! The search is Wing and Gong's, with Lowe's memoization of
//! (operations linearized, register state) as Knossos and Porcupine do it,
//! and with the history split by key first (linearizability is local, and
//! the model is one register per key). An operation whose outcome is
//! unknown (a timeout, a connection lost, a server killed) may or may not
//! have taken effect: it stays open until the end of the history, and the
//! search may leave it out. A read that failed took no effect and is
//! dropped. Reads (and compare-and-sets that failed) that agree with the
//! current state are placed at once, which is always safe and keeps the
//! search small.
//!
//! Shared by `#[path]` so that any integration test can record and check a
//! history; it needs only the standard library.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Read the key.
    Read,
    /// Set the key to this value.
    Write(String),
    /// Set the key to `new` only if it holds `expected` (`None`: absent).
    Cas {
        expected: Option<String>,
        new: String,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A read answered this (`None`: the key was absent).
    Read(Option<String>),
    /// A write was acknowledged.
    Written,
    /// A compare-and-set answered: `true` if it wrote, `false` if the key did
    /// not hold the expected value (and nothing was written).
    Cas(bool),
    /// Certainly took no effect (a refused read, say).
    Failed,
    /// May or may not have taken effect, at any time after its invocation.
    Unknown,
}

/// One operation of a history: a call on a key, its outcome, and when it
/// was invoked and completed (`None` until it completes, and for ever if the
/// outcome is unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    /// Nanoseconds since the history began.
    pub invoked: u64,
    pub completed: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self
            .completed
            .map_or_else(|| "open".to_owned(), |t| format!("{:.3}ms", t as f64 / 1e6));
        write!(
            f,
            "client {} {:?} {:?} -> {:?} [{:.3}ms, {done}]",
            self.client,
            self.key,
            self.call,
            self.outcome,
            self.invoked as f64 / 1e6
        )
    }
}

/// A history being recorded by concurrent clients: each operation is
/// invoked (its time taken just before the request is sent) and later
/// completed (its time taken just after the answer arrived).
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            operations: Arc::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a short history")
    }

    /// Records the invocation of `call` on `key`; returns its id for
    /// [`Recorder::complete`]. An operation never completed stays unknown.
    pub fn invoke(&self, client: usize, key: &str, call: Call) -> usize {
        let mut operations = self.operations.lock().expect("history");
        operations.push(Operation {
            client,
            key: key.to_owned(),
            call,
            outcome: Outcome::Unknown,
            invoked: self.now(),
            completed: None,
        });
        operations.len() - 1
    }

    /// Records how operation `id` ended. An unknown outcome stays open.
    pub fn complete(&self, id: usize, outcome: Outcome) {
        let now = self.now();
        let mut operations = self.operations.lock().expect("history");
        let operation = &mut operations[id];
        operation.completed = (outcome != Outcome::Unknown).then_some(now);
        operation.outcome = outcome;
    }

    /// Everything recorded so far.
    pub fn history(&self) -> Vec<Operation> {
        self.operations.lock().expect("history").clone()
    }
}

/// Why a history is not linearizable (or could not be decided).
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    /// The longest order of this key's operations the search could build.
    pub longest: Vec<Operation>,
    /// The operations that were left and could not come next.
    pub stuck: Vec<Operation>,
    /// True if the search gave up (too many states) rather than proved it.
    pub gave_up: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.gave_up {
            writeln!(
                f,
                "key {:?}: the search gave up (too many states)",
                self.key
            )?;
        } else {
            writeln!(f, "key {:?}: not linearizable", self.key)?;
        }
        writeln!(
            f,
            "longest linearization found ({} ops):",
            self.longest.len()
        )?;
        for op in self.longest.iter().rev().take(10).rev() {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "operations that could not come next:")?;
        for op in self.stuck.iter().take(10) {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// What one check found, per key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub keys: usize,
    pub operations: usize,
    pub unknown: usize,
    /// Search states visited, over all keys.
    pub states: usize,
}

/// The most search states per key before giving up.
const STATE_BUDGET: usize = 500_000;

/// Checks that `history` is linearizable for a register per key.
pub fn check(history: &[Operation]) -> Result<Summary, Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut summary = Summary::default();
    for (key, ops) in by_key {
        summary.keys += 1;
        summary.operations += ops.len();
        summary.unknown += ops
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .count();
        summary.states += check_key(key, &ops)?;
    }
    Ok(summary)
}

/// A value as a small number: 0 is "absent".
type State = u32;

/// An operation of one key as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Must find the register holding this.
    Read(State),
    /// Sets the register.
    Write(State),
    /// If the register holds `expected`, sets `new` (`succeeded` must then
    /// be true), else leaves it (`succeeded` must be false). With an
    /// unknown outcome either answer is fine.
    Cas {
        expected: State,
        new: State,
        succeeded: Option<bool>,
    },
}

impl Step {
    /// The state after this step from `state`, if the step is possible.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(value) => Some(value),
            Step::Cas {
                expected,
                new,
                succeeded,
            } => match (state == expected, succeeded) {
                (true, Some(false)) | (false, Some(true)) => None,
                (true, _) => Some(new),
                (false, _) => Some(state),
            },
        }
    }

    /// True if the step never changes the state (a read, a failed CAS).
    fn is_pure(self) -> bool {
        matches!(
            self,
            Step::Read(_)
                | Step::Cas {
                    succeeded: Some(false),
                    ..
                }
        )
    }
}

/// One search node: which operations are linearized, the state, and where
/// the next candidate scan resumes.
struct Frame {
    done: Vec<u64>,
    state: State,
    /// The operation linearized to get here (none for the root).
    via: Option<usize>,
    next: usize,
}

fn check_key(key: &str, ops: &[&Operation]) -> Result<usize, Violation> {
    // Values no operation ever looks for (no read returned them, no CAS
    // expects them) all behave alike, so they share one state: the writes
    // of unknown outcome that wrote them become interchangeable.
    let observed: HashSet<&str> = ops
        .iter()
        .filter_map(|op| match (&op.call, &op.outcome) {
            (Call::Read, Outcome::Read(Some(v))) => Some(v.as_str()),
            (
                Call::Cas {
                    expected: Some(v), ..
                },
                _,
            ) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    const UNOBSERVED: State = 1;
    let mut values: HashMap<String, State> = HashMap::new();
    let mut intern = |value: &Option<String>| -> State {
        match value {
            None => 0,
            Some(v) if !observed.contains(v.as_str()) => UNOBSERVED,
            Some(v) => {
                let next = values.len() as State + 2;
                *values.entry(v.clone()).or_insert(next)
            }
        }
    };
    // The operations that may have taken effect, sorted by invocation.
    let mut kept: Vec<(&Operation, Step, u64)> = Vec::new();
    for op in ops {
        let step = match (&op.call, &op.outcome) {
            (_, Outcome::Failed) | (Call::Read, Outcome::Unknown) => continue,
            (Call::Read, Outcome::Read(seen)) => Step::Read(intern(seen)),
            (Call::Write(value), Outcome::Written | Outcome::Unknown) => {
                Step::Write(intern(&Some(value.clone())))
            }
            (Call::Cas { expected, new }, Outcome::Cas(_) | Outcome::Unknown) => Step::Cas {
                expected: intern(expected),
                new: intern(&Some(new.clone())),
                succeeded: match op.outcome {
                    Outcome::Cas(succeeded) => Some(succeeded),
                    _ => None,
                },
            },
            (call, outcome) => panic!("{call:?} cannot end as {outcome:?}"),
        };
        let completed = match op.outcome {
            Outcome::Unknown => u64::MAX,
            _ => op.completed.expect("a completed operation has a time"),
        };
        kept.push((op, step, completed));
    }
    // Operations that must be placed come first, in order of completion,
    // then those of unknown outcome: the search tries the likeliest orders
    // first.
    kept.sort_by_key(|(op, _, completed)| (*completed, op.invoked));
    let n = kept.len();
    let required: Vec<bool> = kept.iter().map(|(_, _, c)| *c != u64::MAX).collect();
    let words = n.div_ceil(64).max(1);
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;

    // The operations that may come next: invoked before every open
    // operation that must be linearized has completed.
    // Of operations of unknown outcome with the same step, only the first
    // invoked: they are interchangeable, and trying each would multiply
    // the search by the ways to choose among them.
    let candidates = |done: &[u64]| -> Vec<usize> {
        let deadline = (0..n)
            .filter(|&i| required[i] && !is_done(done, i))
            .map(|i| kept[i].2)
            .min()
            .unwrap_or(u64::MAX);
        let mut open_steps: Vec<Step> = Vec::new();
        (0..n)
            .filter(|&i| !is_done(done, i) && kept[i].0.invoked < deadline)
            .filter(|&i| {
                if required[i] {
                    return true;
                }
                let step = kept[i].1;
                if open_steps.contains(&step) {
                    return false;
                }
                open_steps.push(step);
                true
            })
            .collect()
    };
    let finished = |done: &[u64]| (0..n).all(|i| !required[i] || is_done(done, i));

    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack = vec![Frame {
        done: vec![0; words],
        state: 0,
        via: None,
        next: 0,
    }];
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck_at: Vec<u64> = vec![0; words];
    let mut states = 0;
    loop {
        let Some(frame) = stack.last_mut() else {
            let longest = longest.iter().map(|&i| kept[i].0.clone()).collect();
            let stuck = candidates(&stuck_at)
                .into_iter()
                .map(|i| kept[i].0.clone())
                .collect();
            return Err(Violation {
                key: key.to_owned(),
                longest,
                stuck,
                gave_up: false,
            });
        };
        if finished(&frame.done) {
            return Ok(states);
        }
        let options = candidates(&frame.done);
        // A pure operation that agrees with the state goes first, alone:
        // placing it now never rules out an order that placing it later
        // would allow.
        let greedy = options
            .iter()
            .copied()
            .find(|&i| kept[i].1.is_pure() && kept[i].1.apply(frame.state).is_some());
        let options = match greedy {
            Some(i) => vec![i],
            None => options,
        };
        let mut child = None;
        while frame.next < options.len() {
            let i = options[frame.next];
            frame.next += 1;
            let Some(state) = kept[i].1.apply(frame.state) else {
                continue;
            };
            let mut done = frame.done.clone();
            done[i / 64] |= 1 << (i % 64);
            if seen.insert((done.clone(), state)) {
                child = Some(Frame {
                    done,
                    state,
                    via: Some(i),
                    next: 0,
                });
                break;
            }
        }
        match child {
            Some(child) => {
                states += 1;
                if states > STATE_BUDGET {
                    return Err(Violation {
                        key: key.to_owned(),
                        longest: Vec::new(),
                        stuck: Vec::new(),
                        gave_up: true,
                    });
                }
                stack.push(child);
                let path: Vec<usize> = stack.iter().filter_map(|f| f.via).collect();
                if path.len() > longest.len() {
                    longest = path;
                    stuck_at = stack.last().expect("just pushed").done.clone();
                }
            }
            None => {
                stack.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a history from `(client, call, outcome, invoked, completed)`
    /// on key "k"; times in arbitrary units.
    fn history(ops: &[(usize, Call, Outcome, u64, Option<u64>)]) -> Vec<Operation> {
        ops.iter()
            .map(|(client, call, outcome, invoked, completed)| Operation {
                client: *client,
                key: "k".to_owned(),
                call: call.clone(),
                outcome: outcome.clone(),
                invoked: *invoked,
                completed: *completed,
            })
            .collect()
    }

    fn w(v: &str) -> Call {
        Call::Write(v.to_owned())
    }
    fn r(v: Option<&str>) -> Outcome {
        Outcome::Read(v.map(str::to_owned))
    }
    fn cas(expected: Option<&str>, new: &str) -> Call {
        Call::Cas {
            expected: expected.map(str::to_owned),
            new: new.to_owned(),
        }
    }

    fn linearizable(ops: &[(usize, Call, Outcome, u64, Option<u64>)]) -> bool {
        check(&history(ops)).is_ok()
    }

    #[test]
    fn sequential_reads_see_the_last_write() {
        assert!(linearizable(&[
            (0, Call::Read, r(None), 0, Some(1)),
            (0, w("a"), Outcome::Written, 2, Some(3)),
            (1, Call::Read, r(Some("a")), 4, Some(5)),
            (1, w("b"), Outcome::Written, 6, Some(7)),
            (0, Call::Read, r(Some("b")), 8, Some(9)),
        ]));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [Some("a"), Some("b")] {
            assert!(linearizable(&[
                (0, w("a"), Outcome::Written, 0, Some(1)),
                (1, w("b"), Outcome::Written, 2, Some(10)),
                (2, Call::Read, r(seen), 3, Some(4)),
            ]));
        }
    }

    #[test]
    fn concurrent_reads_may_see_a_write_take_effect_between_them() {
        // Two reads overlapping one write: the first sees the new value,
        // the second (invoked after the first completed) must too.
        assert!(linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Written, 2, Some(20)),
            (2, Call::Read, r(Some("a")), 3, Some(4)),
            (3, Call::Read, r(Some("b")), 5, Some(6)),
            (2, Call::Read, r(Some("b")), 7, Some(8)),
        ]));
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Written, 2, Some(20)),
            (3, Call::Read, r(Some("b")), 5, Some(6)),
            (2, Call::Read, r(Some("a")), 7, Some(8)),
        ]));
    }

    #[test]
    fn a_stale_read_is_caught() {
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (0, w("b"), Outcome::Written, 2, Some(3)),
            (1, Call::Read, r(Some("a")), 4, Some(5)),
        ]));
    }

    #[test]
    fn a_lost_write_is_caught() {
        // b was acknowledged and then overwritten by nothing, yet reads
        // return a afterwards, after having returned b.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Written, 2, Some(3)),
            (2, Call::Read, r(Some("b")), 4, Some(5)),
            (2, Call::Read, r(Some("a")), 6, Some(7)),
        ]));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, Call::Read, r(Some("z")), 2, Some(3)),
        ]));
    }

    #[test]
    fn compare_and_set_follows_the_register() {
        assert!(linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, cas(Some("a"), "b"), Outcome::Cas(true), 2, Some(3)),
            (2, cas(Some("a"), "c"), Outcome::Cas(false), 4, Some(5)),
            (0, cas(None, "d"), Outcome::Cas(false), 6, Some(7)),
            (1, Call::Read, r(Some("b")), 8, Some(9)),
        ]));
        // Two concurrent CASes from the same value: exactly one may win.
        assert!(linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, cas(Some("a"), "b"), Outcome::Cas(true), 2, Some(6)),
            (2, cas(Some("a"), "c"), Outcome::Cas(false), 3, Some(5)),
            (0, Call::Read, r(Some("b")), 7, Some(8)),
        ]));
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, cas(Some("a"), "b"), Outcome::Cas(true), 2, Some(6)),
            (2, cas(Some("a"), "c"), Outcome::Cas(true), 3, Some(5)),
        ]));
    }

    #[test]
    fn a_compare_and_set_that_succeeds_on_a_wrong_value_is_caught() {
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (0, w("b"), Outcome::Written, 2, Some(3)),
            (1, cas(Some("a"), "c"), Outcome::Cas(true), 4, Some(5)),
        ]));
        // Nor may one that should have succeeded fail.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, cas(Some("a"), "c"), Outcome::Cas(false), 2, Some(3)),
        ]));
        // Nor create a key that exists.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, cas(None, "c"), Outcome::Cas(true), 2, Some(3)),
        ]));
    }

    #[test]
    fn an_acknowledged_write_missing_after_a_crash_is_caught() {
        // The server acknowledged b, was killed and restarted; a read after
        // the restart finds a.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Written, 2, Some(3)),
            (2, w("c"), Outcome::Unknown, 4, None),
            (0, Call::Read, r(Some("a")), 10, Some(11)),
        ]));
        // A key created and acknowledged, then gone.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (0, Call::Read, r(None), 10, Some(11)),
        ]));
    }

    #[test]
    fn a_write_of_unknown_outcome_may_or_may_not_have_happened() {
        // Not seen: fine.
        assert!(linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Unknown, 2, None),
            (2, Call::Read, r(Some("a")), 10, Some(11)),
        ]));
        // Seen much later (it stays open to the end): fine.
        assert!(linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Unknown, 2, None),
            (2, Call::Read, r(Some("a")), 10, Some(11)),
            (2, Call::Read, r(Some("b")), 20, Some(21)),
        ]));
        // But once seen, it cannot be undone.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Unknown, 2, None),
            (2, Call::Read, r(Some("b")), 10, Some(11)),
            (2, Call::Read, r(Some("a")), 20, Some(21)),
        ]));
        // Nor take effect before it was invoked.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (2, Call::Read, r(Some("b")), 2, Some(3)),
            (1, w("b"), Outcome::Unknown, 4, None),
        ]));
    }

    #[test]
    fn a_compare_and_set_of_unknown_outcome_is_either() {
        for seen in ["a", "c"] {
            assert!(linearizable(&[
                (0, w("a"), Outcome::Written, 0, Some(1)),
                (1, cas(Some("a"), "c"), Outcome::Unknown, 2, None),
                (2, Call::Read, r(Some(seen)), 10, Some(11)),
            ]));
        }
        // It cannot succeed from a value the key did not hold.
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, cas(Some("x"), "c"), Outcome::Unknown, 2, None),
            (2, Call::Read, r(Some("c")), 10, Some(11)),
        ]));
    }

    #[test]
    fn failed_operations_took_no_effect() {
        assert!(linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, Call::Read, Outcome::Failed, 2, Some(3)),
            (2, Call::Read, r(Some("a")), 4, Some(5)),
        ]));
        assert!(!linearizable(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, w("b"), Outcome::Failed, 2, Some(3)),
            (2, Call::Read, r(Some("b")), 4, Some(5)),
        ]));
    }

    #[test]
    fn keys_are_independent_registers() {
        let mut ops = history(&[
            (0, w("a"), Outcome::Written, 0, Some(1)),
            (1, Call::Read, r(Some("a")), 2, Some(3)),
        ]);
        ops.push(Operation {
            client: 1,
            key: "other".to_owned(),
            call: Call::Read,
            outcome: Outcome::Read(None),
            invoked: 4,
            completed: Some(5),
        });
        let summary = check(&ops).unwrap();
        assert_eq!((summary.keys, summary.operations), (2, 3));
        ops[2].outcome = Outcome::Read(Some("a".to_owned()));
        let violation = check(&ops).unwrap_err();
        assert_eq!(violation.key, "other");
        assert!(!violation.gave_up);
    }

    /// Many clients and unknown writes on one key: the memoized search
    /// decides it quickly (a linearizable history, built by a sequential
    /// register with overlapping intervals around each step).
    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ops = Vec::new();
        let mut state: Option<String> = None;
        for step in 0..600u64 {
            // Each operation takes effect at time 10*step, but its interval
            // spreads up to 40 units either side: up to ~8 overlap.
            let at = 10 * step + 100;
            let invoked = at - next() % 40;
            let completed = at + next() % 40;
            let value = format!("v{step}");
            let (call, outcome) = match next() % 4 {
                0 => (Call::Read, Outcome::Read(state.clone())),
                1 => {
                    state = Some(value.clone());
                    (Call::Write(value), Outcome::Written)
                }
                2 => {
                    let expected = if next() % 2 == 0 {
                        state.clone()
                    } else {
                        Some("nope".to_owned())
                    };
                    let succeeded = expected == state;
                    if succeeded {
                        state = Some(value.clone());
                    }
                    (
                        Call::Cas {
                            expected,
                            new: value,
                        },
                        Outcome::Cas(succeeded),
                    )
                }
                _ if next() % 8 == 0 => (Call::Write(value), Outcome::Unknown),
                _ => (Call::Read, Outcome::Read(state.clone())),
            };
            let completed = (outcome != Outcome::Unknown).then_some(completed);
            ops.push(Operation {
                client: step as usize % 8,
                key: "k".to_owned(),
                call,
                outcome,
                invoked,
                completed,
            });
        }
        let started = Instant::now();
        let summary = check(&ops).unwrap_or_else(|v| panic!("{v}"));
        assert_eq!(summary.operations, 600);
        assert!(
            started.elapsed().as_secs() < 60,
            "took {:?}",
            started.elapsed()
        );
        // And one stale read in the middle is found.
        let read = ops
            .iter()
            .position(|op| op.invoked > 3_000 && matches!(op.outcome, Outcome::Read(Some(_))))
            .unwrap();
        let Call::Write(first) = ops
            .iter()
            .find(|op| op.outcome == Outcome::Written)
            .map(|op| op.call.clone())
            .unwrap()
        else {
            unreachable!()
        };
        ops[read].outcome = Outcome::Read(Some(first));
        let violation = check(&ops).unwrap_err();
        assert!(!violation.gave_up, "{violation}");
    }
}
