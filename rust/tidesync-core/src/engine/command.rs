//! Commands for the worker, their completion callbacks, and the engine state they share.
//!
//! Coalescing (spec §11.1): a command equal to one already *queued* (same kind and parameters)
//! is not queued again; its callback is attached to the queued one and gets the same result.
//! The running command is not compared: a sync requested while one runs is queued once and
//! runs after it (so changes made meanwhile are pushed).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::protocol::SourceReport;
use crate::sync::{SyncOptions, SyncReport};

/// What the worker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Login {
        user: String,
        password: String,
    },
    Logout {
        wipe_data: bool,
    },
    SyncAll {
        opts: SyncOptions,
        /// Started by the poll timer: skipped silently when logged out.
        poll: bool,
    },
    SyncSource {
        source: String,
        opts: SyncOptions,
        /// `push_changes`: queue a push marker first.
        push_marker: bool,
    },
    /// Rebuild the sync client from the settings; with `new_account`, forget the client id,
    /// tokens, synced copies and session (a new server).
    Reconfigure {
        new_account: bool,
    },
}

impl Command {
    pub(crate) fn is_sync(&self) -> bool {
        matches!(self, Command::SyncAll { .. } | Command::SyncSource { .. })
    }

    /// True when a queued `self` can stand for `other` too.
    fn covers(&self, other: &Command) -> bool {
        match (self, other) {
            (Command::Reconfigure { .. }, Command::Reconfigure { .. }) => true,
            (Command::SyncAll { opts: a, .. }, Command::SyncAll { opts: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }

    /// Merges `other` (covered by `self`) into `self`.
    fn absorb(&mut self, other: &Command) {
        match (self, other) {
            (Command::Reconfigure { new_account: a }, Command::Reconfigure { new_account: b }) => *a |= *b,
            (Command::SyncAll { poll: a, .. }, Command::SyncAll { poll: b, .. }) => *a &= *b,
            _ => {}
        }
    }
}

/// The result a command produces (cloned for each coalesced caller).
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Unit(Result<()>),
    Run(Result<SyncReport>),
    Source(Result<SourceReport>),
}

impl Outcome {
    /// The outcome of `cmd` when it did not run (`e`).
    pub(crate) fn failed(cmd: &Command, e: Error) -> Outcome {
        match cmd {
            Command::SyncAll { .. } => Outcome::Run(Err(e)),
            Command::SyncSource { .. } => Outcome::Source(Err(e)),
            Command::Login { .. } | Command::Logout { .. } | Command::Reconfigure { .. } => Outcome::Unit(Err(e)),
        }
    }
}

/// Typed extraction of an [`Outcome`].
pub(crate) trait FromOutcome: Sized {
    fn from_outcome(o: Outcome) -> Result<Self>;
}

fn mismatch() -> Error {
    Error::Storage {
        reason: "internal: command outcome of the wrong kind".into(),
    }
}

impl FromOutcome for () {
    fn from_outcome(o: Outcome) -> Result<Self> {
        match o {
            Outcome::Unit(r) => r,
            Outcome::Run(r) => r.map(|_| ()),
            Outcome::Source(_) => Err(mismatch()),
        }
    }
}

impl FromOutcome for SyncReport {
    fn from_outcome(o: Outcome) -> Result<Self> {
        match o {
            Outcome::Run(r) => r,
            Outcome::Unit(_) | Outcome::Source(_) => Err(mismatch()),
        }
    }
}

impl FromOutcome for SourceReport {
    fn from_outcome(o: Outcome) -> Result<Self> {
        match o {
            Outcome::Source(r) => r,
            Outcome::Unit(_) | Outcome::Run(_) => Err(mismatch()),
        }
    }
}

/// A completion: `direct` ones run on the worker (a channel send for a blocking call made on
/// the notifier thread); the others are handed to the notifier thread, after the run's
/// notifications.
pub(crate) struct Reply {
    pub direct: bool,
    pub f: Box<dyn FnOnce(Outcome) + Send>,
}

impl Reply {
    pub(crate) fn new<T: FromOutcome + 'static>(direct: bool, done: impl FnOnce(Result<T>) + Send + 'static) -> Self {
        Self {
            direct,
            f: Box::new(move |o| done(T::from_outcome(o))),
        }
    }
}

/// A queued command and everyone waiting for it.
pub(crate) struct Job {
    pub cmd: Command,
    pub replies: Vec<Reply>,
}

/// What the engine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineState {
    /// Waiting for a command or the next poll.
    Idle,
    /// Running a command (login, logout, sync, reconfiguration).
    Running,
    /// A command waits at the sync mutex (held by the app).
    WaitingForSyncLock,
    /// A stop was requested; the running command ends at its next check.
    Stopping,
    /// Shut down.
    Closed,
}

/// Counters, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Commands run.
    pub commands_run: u64,
    /// Sync runs (all sources, one source, push) run, polls included.
    pub sync_runs: u64,
    /// Requests merged into an equal queued command.
    pub coalesced_requests: u64,
    /// Polls that queued a sync.
    pub polls: u64,
    /// `in_progress` events merged with the previous one (notification queue full).
    pub progress_coalesced: u64,
    /// `in_progress` events dropped (notification queue full).
    pub progress_dropped: u64,
}

/// The worker's state and queue (one mutex with the state condvar).
pub(crate) struct State {
    pub phase: EngineState,
    pub queue: VecDeque<Job>,
    pub poll_every: Duration,
    pub next_poll: Option<Instant>,
    pub shutdown: bool,
    /// The job running now is a sync.
    pub running_sync: bool,
    /// Jobs started / finished (a stop waits for the job running when it was asked).
    pub started: u64,
    pub finished: u64,
    pub stats: EngineStats,
}

impl State {
    pub(crate) fn new(poll_seconds: u32) -> Self {
        Self {
            phase: EngineState::Idle,
            queue: VecDeque::new(),
            poll_every: Duration::from_secs(poll_seconds.into()),
            next_poll: None,
            shutdown: false,
            running_sync: false,
            started: 0,
            finished: 0,
            stats: EngineStats::default(),
        }
    }

    /// Queues `cmd`, or attaches `reply` to an equal queued command.
    pub(crate) fn enqueue(&mut self, cmd: Command, reply: Option<Reply>) {
        if let Some(job) = self.queue.iter_mut().find(|j| j.cmd.covers(&cmd)) {
            job.cmd.absorb(&cmd);
            job.replies.extend(reply);
            self.stats.coalesced_requests += 1;
            return;
        }
        self.queue.push_back(Job {
            cmd,
            replies: reply.into_iter().collect(),
        });
    }

    /// Removes the queued syncs (a stop, login or logout cancels them).
    pub(crate) fn take_queued_syncs(&mut self) -> Vec<Job> {
        let (syncs, rest): (Vec<Job>, Vec<Job>) = self.queue.drain(..).partition(|j| j.cmd.is_sync());
        self.queue = rest.into();
        syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_all() -> Command {
        Command::SyncAll {
            opts: SyncOptions::default(),
            poll: false,
        }
    }

    #[test]
    fn engine_queue_coalesces_equal_commands_only() {
        let mut st = State::new(0);
        let noop = || Some(Reply::new::<SyncReport>(true, |_| {}));
        st.enqueue(sync_all(), noop());
        st.enqueue(sync_all(), noop());
        st.enqueue(
            Command::SyncSource {
                source: "Product".into(),
                opts: SyncOptions::default(),
                push_marker: false,
            },
            None,
        );
        st.enqueue(Command::Reconfigure { new_account: false }, None);
        st.enqueue(Command::Reconfigure { new_account: true }, None);
        assert_eq!(st.queue.len(), 3);
        assert_eq!(st.queue[0].replies.len(), 2);
        assert_eq!(st.queue[2].cmd, Command::Reconfigure { new_account: true });
        assert_eq!(st.stats.coalesced_requests, 2);
        let syncs = st.take_queued_syncs();
        assert_eq!(syncs.len(), 2);
        assert_eq!(st.queue.len(), 1);
    }
}
