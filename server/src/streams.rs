//! How long-lived streams end (`STYLE.md` §12): every Put, Get and Watch
//! stream has an idle timeout and a deadline, holds its budget only while it
//! lives (its permit is dropped with the task or handler that serves it),
//! and is ended by shutdown within a grace period.
//!
//! Shutdown moves the node through four [`Phase`]s, forward only:
//!
//! - `Serving`: streams run under their idle timeout and deadline.
//! - `Draining`, from the stop signal: the listeners accept nothing new;
//!   Watch streams end at once, cleanly (`OK`: nothing is left to finish);
//!   Put and Get streams may finish.
//! - `Cancelling`, once the grace period (`limits.shutdown_grace_ms`) after
//!   the stop signal is over: Put and Get streams still open end with
//!   `UNAVAILABLE`.
//! - `Abandoning`, [`TEARDOWN`] later: whatever has still not finished (a
//!   connection whose client reads nothing) is abandoned
//!   ([`within_grace`]), so the node can sync the log and exit.
//!
//! [`Lifecycle`] owns the phase (a `tokio::sync::watch` channel); only
//! [`spawn_shutdown`] advances it, every stream reads it.
//!
//! How each stream ends, and what its client sees:
//!
//! | end | Put | Get | Watch |
//! |-----|-----|-----|-------|
//! | the client left | — | — | — |
//! | idle: no message from the client (Put), or none taken by it while one waits (Get, Watch) | `DEADLINE_EXCEEDED` | `DEADLINE_EXCEEDED` | `DEADLINE_EXCEEDED` |
//! | deadline | `DEADLINE_EXCEEDED` | `DEADLINE_EXCEEDED` | `OK` (subscribe again) |
//! | shutdown | `UNAVAILABLE` after the grace period | `UNAVAILABLE` after the grace period | `OK` at once |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::config::Limits;

/// How long after the grace period handlers get to return and connections
/// to close before the node abandons them and exits.
pub(crate) const TEARDOWN: Duration = Duration::from_secs(1);

/// Where the node is in its life; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Streams run under their own bounds.
    Serving,
    /// Shutdown began: Watch streams end, Put and Get streams may finish.
    Draining,
    /// The grace period is over: every stream ends.
    Cancelling,
    /// Teardown is over: the node stops waiting for its connections.
    Abandoning,
}

/// The node's [`Phase`], shared by every stream.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: watch::Sender<Phase>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            phase: watch::Sender::new(Phase::Serving),
        }
    }

    /// Moves to `to` unless the node is there or further already.
    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            let forward = *phase < to;
            if forward {
                *phase = to;
            }
            forward
        });
    }

    /// Resolves once the node reached `phase`.
    pub(crate) async fn reached(&self, phase: Phase) {
        let mut phases = self.phase.subscribe();
        // The sender lives in `self`, so the channel cannot close meanwhile.
        let _ = phases.wait_for(|now| *now >= phase).await;
    }
}

/// Advances `lifecycle` once `stopped` resolves: draining at once,
/// cancelling after `grace`.
pub(crate) fn spawn_shutdown(
    lifecycle: Arc<Lifecycle>,
    stopped: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    tokio::spawn(async move {
        stopped.await;
        tracing::info!(
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "pagoda draining: watches end now, puts and gets get the grace period"
        );
        lifecycle.advance(Phase::Draining);
        tokio::time::sleep(grace).await;
        lifecycle.advance(Phase::Cancelling);
        tracing::info!("grace period over: cancelling the streams still open");
        tokio::time::sleep(TEARDOWN).await;
        lifecycle.advance(Phase::Abandoning);
    });
}

/// `future`'s output, or `None` when it has not finished by the time
/// shutdown abandons what is left, [`TEARDOWN`] after the grace period (the
/// caller then drops it).
pub(crate) async fn within_grace<F: Future>(future: F, lifecycle: &Lifecycle) -> Option<F::Output> {
    tokio::select! {
        // What finished wins over giving up on it.
        biased;
        output = future => Some(output),
        () = lifecycle.reached(Phase::Abandoning) => None,
    }
}

/// Why a stream ended before its work was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The client cancelled or disconnected.
    ClientGone,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The stream's deadline passed.
    Deadline,
    /// The node is shutting down.
    Shutdown,
}

/// Which rules of the module docs' table a stream follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Put and Get: work that finishes; shutdown waits for it within the
    /// grace period, and any forced end is an error.
    Data,
    /// Watch: a subscription with nothing to finish; shutdown and the
    /// deadline end it cleanly.
    Watch,
}

/// The idle timeout, deadline and shutdown phase of one stream.
#[derive(Debug)]
pub(crate) struct Bounds {
    rpc: &'static str,
    kind: Kind,
    idle: Duration,
    deadline: Instant,
    deadline_ms: u64,
    lifecycle: Arc<Lifecycle>,
}

impl Bounds {
    /// The bounds of a stream of `kind` opened now.
    pub(crate) fn new(
        rpc: &'static str,
        kind: Kind,
        limits: &Limits,
        lifecycle: &Arc<Lifecycle>,
    ) -> Self {
        let deadline = match kind {
            Kind::Data => limits.stream_deadline(),
            Kind::Watch => limits.watch_deadline(),
        };
        Bounds {
            rpc,
            kind,
            idle: limits.stream_idle_timeout(),
            deadline: Instant::now() + deadline,
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            lifecycle: Arc::clone(lifecycle),
        }
    }

    /// Resolves when the stream must end whatever it is doing: its deadline,
    /// or the shutdown phase that ends its kind.
    async fn over(&self) -> End {
        let phase = match self.kind {
            Kind::Data => Phase::Cancelling,
            Kind::Watch => Phase::Draining,
        };
        tokio::select! {
            () = tokio::time::sleep_until(self.deadline) => End::Deadline,
            () = self.lifecycle.reached(phase) => End::Shutdown,
        }
    }

    /// What the client is told when the stream ends for `end` (`None`: a
    /// clean end, or nobody left to tell).
    fn status(&self, end: End) -> Option<Status> {
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        match (self.kind, end) {
            (_, End::ClientGone) | (Kind::Watch, End::Deadline | End::Shutdown) => None,
            (_, End::Idle) => Some(Status::deadline_exceeded(format!(
                "the {} stream was idle for {idle_ms} ms (limits.stream_idle_timeout_ms)",
                self.rpc
            ))),
            (Kind::Data, End::Deadline) => Some(Status::deadline_exceeded(format!(
                "the {} stream lasted {} ms, its deadline (limits.stream_deadline_ms)",
                self.rpc, self.deadline_ms
            ))),
            (Kind::Data, End::Shutdown) => Some(Status::unavailable(
                "the node is shutting down and its grace period is over; retry elsewhere",
            )),
        }
    }

    /// Logs why the stream ended early.
    fn note(&self, end: End) {
        match end {
            End::ClientGone | End::Shutdown => {
                tracing::debug!(rpc = self.rpc, ?end, "stream ended");
            }
            End::Idle | End::Deadline => {
                tracing::info!(rpc = self.rpc, ?end, "stream ended by its limits");
            }
        }
    }

    /// The next message of a client stream (a Put): `None` at its end, an
    /// error status when the client sent nothing for the idle timeout, the
    /// deadline passed or shutdown cancels it.
    pub(crate) async fn receive<T>(&self, stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
        let end = tokio::select! {
            message = tokio::time::timeout(self.idle, stream.message()) => match message {
                Ok(message) => return message,
                Err(_) => End::Idle,
            },
            end = self.over() => end,
        };
        self.note(end);
        Err(self
            .status(end)
            .unwrap_or_else(|| Status::cancelled("the stream ended")))
    }
}

/// The sending side of a server stream (Get, Watch) under its [`Bounds`].
///
/// Every item goes out through a reservation of two slots, one of them
/// given back at once, so at most `capacity - 1` items ever wait in the
/// channel: the last slot is kept for the status that ends the stream,
/// which can then always be queued even when the client reads nothing.
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    sender: mpsc::Sender<Result<T, Status>>,
    bounds: Bounds,
}

impl<T: Send + 'static> Outbox<T> {
    /// An outbox of `capacity` slots (at least 2) and the stream its
    /// response carries.
    pub(crate) fn new(
        bounds: Bounds,
        capacity: usize,
    ) -> (Self, ReceiverStream<Result<T, Status>>) {
        assert!(
            capacity >= 2,
            "an outbox keeps one slot for its ending status"
        );
        let (sender, receiver) = mpsc::channel(capacity);
        (Outbox { sender, bounds }, ReceiverStream::new(receiver))
    }

    /// Queues `item`, waiting at most the idle timeout for the client to
    /// take what is queued. On `Err` the stream is over (its ending status
    /// queued) and the caller stops.
    pub(crate) async fn send(&self, item: Result<T, Status>) -> Result<(), End> {
        let end = tokio::select! {
            reserved = tokio::time::timeout(self.bounds.idle, self.sender.reserve_many(2)) => {
                match reserved {
                    Ok(Ok(mut permits)) => {
                        if let Some(permit) = permits.next() {
                            permit.send(item);
                        }
                        return Ok(());
                    }
                    Ok(Err(_)) => End::ClientGone,
                    Err(_) => End::Idle,
                }
            }
            end = self.bounds.over() => end,
        };
        Err(self.finish(end))
    }

    /// Resolves when the stream must end while it has nothing to send (a
    /// Watch waiting for events): the client left, the deadline passed or
    /// shutdown ends it. Hand the result to [`Outbox::finish`].
    pub(crate) async fn interrupted(&self) -> End {
        tokio::select! {
            () = self.sender.closed() => End::ClientGone,
            end = self.bounds.over() => end,
        }
    }

    /// Ends the stream for `end`: queues its ending status, if any, in the
    /// slot kept for it, and logs why.
    pub(crate) fn finish(&self, end: End) -> End {
        self.bounds.note(end);
        if let Some(status) = self.bounds.status(end) {
            // Fails only when the client is gone: nobody to tell.
            let _ = self.sender.try_send(Err(status));
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt as _;

    use super::*;

    fn limits(idle_ms: u64, deadline_ms: u64) -> Limits {
        Limits {
            stream_idle_timeout_ms: idle_ms,
            stream_deadline_ms: deadline_ms,
            watch_deadline_ms: deadline_ms,
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_reader_still_gets_the_idle_status() {
        // The outbox once filled every slot of its channel, so a client that
        // stopped reading never learned why its stream ended.
        let lifecycle = Arc::new(Lifecycle::new());
        let bounds = Bounds::new("get", Kind::Data, &limits(1_000, 60_000), &lifecycle);
        let (outbox, mut stream) = Outbox::new(bounds, 3);
        assert_eq!(outbox.send(Ok(1u32)).await, Ok(()));
        assert_eq!(outbox.send(Ok(2)).await, Ok(()));
        assert_eq!(outbox.send(Ok(3)).await, Err(End::Idle));
        drop(outbox);
        assert_eq!(stream.next().await.map(Result::ok), Some(Some(1)));
        assert_eq!(stream.next().await.map(Result::ok), Some(Some(2)));
        let last = stream.next().await.and_then(Result::err);
        assert_eq!(
            last.map(|status| status.code()),
            Some(tonic::Code::DeadlineExceeded)
        );
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_watch_at_once_and_a_get_after_the_grace() {
        // A node once waited forever on its open streams at SIGTERM.
        let lifecycle = Arc::new(Lifecycle::new());
        let (watch, _watch_stream) = Outbox::<u32>::new(
            Bounds::new("watch", Kind::Watch, &limits(1_000, 60_000), &lifecycle),
            4,
        );
        let (get, mut get_stream) = Outbox::<u32>::new(
            Bounds::new("get", Kind::Data, &limits(1_000, 60_000), &lifecycle),
            4,
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        spawn_shutdown(
            Arc::clone(&lifecycle),
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        );
        let started = Instant::now();
        let _ = stop.send(());
        assert_eq!(watch.interrupted().await, End::Shutdown);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(watch.bounds.status(End::Shutdown).map(|s| s.code()), None);
        assert_eq!(get.interrupted().await, End::Shutdown);
        assert!(started.elapsed() >= Duration::from_secs(5));
        get.finish(End::Shutdown);
        let last = get_stream.next().await.and_then(Result::err);
        assert_eq!(
            last.map(|status| status.code()),
            Some(tonic::Code::Unavailable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_what_never_finishes_a_teardown_after_the_grace() {
        // A node once waited for its connections to close with no bound, so
        // one client that never read kept it from exiting.
        let lifecycle = Arc::new(Lifecycle::new());
        spawn_shutdown(Arc::clone(&lifecycle), async {}, Duration::from_secs(5));
        let started = Instant::now();
        let finished = within_grace(std::future::pending::<()>(), &lifecycle).await;
        assert_eq!(finished, None);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(5) + TEARDOWN, "{waited:?}");
        assert!(waited < Duration::from_secs(5) + 2 * TEARDOWN, "{waited:?}");
        let finished = within_grace(async { 7 }, &lifecycle).await;
        assert_eq!(finished, Some(7), "what is ready still finishes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_deadline_is_a_clean_end_and_a_get_deadline_an_error() {
        let lifecycle = Arc::new(Lifecycle::new());
        let (watch, _watch_stream) = Outbox::<u32>::new(
            Bounds::new("watch", Kind::Watch, &limits(1_000, 2_000), &lifecycle),
            4,
        );
        assert_eq!(watch.interrupted().await, End::Deadline);
        assert_eq!(watch.bounds.status(End::Deadline).map(|s| s.code()), None);
        let get = Bounds::new("get", Kind::Data, &limits(1_000, 2_000), &lifecycle);
        assert_eq!(
            get.status(End::Deadline).map(|s| s.code()),
            Some(tonic::Code::DeadlineExceeded)
        );
    }
}
