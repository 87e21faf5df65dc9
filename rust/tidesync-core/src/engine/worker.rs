//! The worker thread (`tidesync-sync`): takes commands from the queue, or a poll when the queue
//! stays empty for the poll interval, and runs each one under `catch_unwind`.
//!
//! The wait for the next command is a timed wait on the state condvar (the queue must be
//! inspectable for coalescing, so it is a `VecDeque` under the state mutex rather than an mpsc
//! channel): a command, a new poll interval, a stop or a shutdown wakes it at once; nothing
//! sleeps.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Shared;
use super::command::{Command, EngineState, Job, Outcome, Reply};
use super::notifier::Delivery;
use super::run;
use crate::error::{Error, Result};
use crate::sync::{SyncClient, SyncOptions};

/// The worker's main loop; returns at shutdown.
pub(crate) fn run(shared: Arc<Shared>) {
    while let Some((job, epoch)) = next_job(&shared) {
        let Job { cmd, replies } = job;
        let outcome = catch_unwind(AssertUnwindSafe(|| execute(&shared, &cmd, epoch))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("the sync worker panicked running a command: {what}");
            Outcome::failed(
                &cmd,
                Error::Internal {
                    reason: format!("the command panicked: {what}"),
                },
            )
        });
        shared.gate.idle();
        {
            let mut st = shared.state.lock();
            st.finished += 1;
            st.running_sync = false;
            st.stats.commands_run += 1;
            st.phase = EngineState::Idle;
            st.next_poll = None;
            shared.state_cv.notify_all();
        }
        // After the state: a caller woken by its completion sees the engine idle (unless
        // another command started meanwhile).
        complete(&shared, replies, &outcome);
    }
    // Shutdown: whatever is still queued did not run.
    let rest: Vec<Job> = {
        let mut st = shared.state.lock();
        st.queue.drain(..).collect()
    };
    for job in rest {
        complete(&shared, job.replies, &Outcome::failed(&job.cmd, Error::Stopped));
    }
    {
        let mut st = shared.state.lock();
        st.phase = EngineState::Closed;
        shared.state_cv.notify_all();
    }
    shared.notifier.close();
    log::info!("sync worker stopped");
}

/// Hands the outcome to every caller waiting for it.
pub(crate) fn complete(shared: &Shared, replies: Vec<Reply>, outcome: &Outcome) {
    for r in replies {
        let o = outcome.clone();
        if r.direct {
            (r.f)(o);
        } else {
            let f = r.f;
            shared.notifier.push(Delivery::Call(Box::new(move || f(o))));
        }
    }
}

/// Waits for the next command (or poll); returns it with the stop epoch it runs under. The
/// epoch is read under the state lock, where `stop_sync` changes it, so a job either sees a
/// stop or was queued after it.
fn next_job(shared: &Shared) -> Option<(Job, u64)> {
    let mut st = shared.state.lock();
    loop {
        if st.shutdown {
            return None;
        }
        if let Some(job) = st.queue.pop_front() {
            st.phase = EngineState::Running;
            st.running_sync = job.cmd.is_sync();
            st.started += 1;
            if st.running_sync {
                st.stats.sync_runs += 1;
            }
            let epoch = shared.stop_epoch.load(Ordering::SeqCst);
            shared.state_cv.notify_all();
            return Some((job, epoch));
        }
        if st.poll_every.is_zero() {
            shared.state_cv.wait(&mut st);
            continue;
        }
        let now = Instant::now();
        let every = st.poll_every;
        let due = *st.next_poll.get_or_insert(now + every);
        if now >= due {
            st.next_poll = None;
            st.stats.polls += 1;
            log::debug!("poll: queueing a sync of all sources");
            st.enqueue(
                Command::SyncAll {
                    opts: SyncOptions::default(),
                    poll: true,
                },
                None,
            );
            continue;
        }
        shared.state_cv.wait_until(&mut st, due);
    }
}

/// Runs one command on the worker.
fn execute(shared: &Arc<Shared>, cmd: &Command, epoch: u64) -> Outcome {
    let client = shared.client();
    match cmd {
        Command::SyncAll { opts, poll } => Outcome::Run(run::sync_all(shared, &client, epoch, opts, *poll)),
        Command::SyncSource {
            source,
            opts,
            push_marker,
        } => Outcome::Source(run::sync_one(shared, &client, epoch, source, opts, *push_marker)),
        other => {
            if !enter(shared, epoch) {
                return Outcome::failed(other, Error::Stopped);
            }
            Outcome::Unit(match other {
                Command::Login { user, password } => client.login(user, password),
                Command::Logout { wipe_data } => client.logout(*wipe_data),
                Command::Reconfigure { new_account } => reconfigure(shared, *new_account),
                Command::SyncAll { .. } | Command::SyncSource { .. } => Ok(()),
            })
        }
    }
}

/// The gate at the start of a command or source: waits while the app holds the sync mutex.
/// False when stopped meanwhile.
pub(crate) fn enter(shared: &Shared, epoch: u64) -> bool {
    shared.gate.boundary(&|| shared.stopped_since(epoch), &|waiting| {
        let mut st = shared.state.lock();
        if st.phase != EngineState::Stopping {
            st.phase = if waiting {
                EngineState::WaitingForSyncLock
            } else {
                EngineState::Running
            };
            shared.state_cv.notify_all();
        }
    })
}

/// Rebuilds the sync client from the current settings (the old one is dropped when the last
/// app thread using it lets go). For a new server: a database client reset and no session.
fn reconfigure(shared: &Shared, new_account: bool) -> Result<()> {
    let config = shared.settings.lock().sync_config();
    // The same store (one writer connection per database file), a client with the new settings.
    let store = shared.client.read().store().clone();
    let client = Arc::new(SyncClient::with_store(store, config)?);
    *shared.client.write() = client.clone();
    if new_account {
        client.database_client_reset()?;
        client.logout(false)?;
        log::info!("sync server changed: client id, tokens and session cleared");
    }
    Ok(())
}
