//! Inactivity TTL: auto-pause of idle capsules (spec §H "Auto-pause TTL", §F.3).
//!
//! The service calls [`Ttl::track`] on create and resume (both count as activity),
//! [`Ttl::touch`] on exec, exec stream, PTY attach/input, background start, process ops and
//! ping, and [`Ttl::untrack`] when it pauses or destroys a capsule itself. A reaper task ticks
//! every 2 s and pauses capsules idle longer than their `timeout_sec` (0 = never) through a
//! callback; successful auto-pauses are queued for `ListSandboxes.auto_paused_sandbox_ids`
//! ([`Ttl::drain_auto_paused`]). A failed pause destroys the capsule (spec: "pause failure →
//! destroy") — unless the service untracked it meanwhile (a user pause/destroy raced the reaper
//! and won), in which case the failure is the race, not a broken capsule.
//!
//! Proxy traffic and file operations do not reset the timer (as in the reference system).
//!
//! Wiring: `let ttl = Ttl::new();` and, at startup, `ttl.spawn_reaper(REAP_INTERVAL, pause,
//! destroy)` where the callbacks are closures over `Arc<Capsules<R>>` (see the
//! `capsules_fit_the_callbacks` check in the tests); the pause closure should also do the
//! service's pause bookkeeping (drain the proxy, stop metrics). `ListSandboxes` puts
//! `drain_auto_paused()` into `auto_paused_sandbox_ids`; `Capsules::recover` re-adoption uses
//! [`Ttl::track_since`] with the persisted `last_active_at_unix`.

use crate::id::CapsuleId;
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The reaper's period (spec §H).
pub const REAP_INTERVAL: Duration = Duration::from_secs(2);

/// Monotonic time source; a fake one makes the logic testable without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None` = never auto-pause.
    timeout: Option<Duration>,
    last_active: Instant,
    /// Distinguishes this tracking from an earlier one of the same id (pause → resume).
    generation: u64,
    /// The reaper is pausing it; not selected again.
    pausing: bool,
}

#[derive(Default)]
struct State {
    capsules: HashMap<CapsuleId, Entry>,
    auto_paused: Vec<CapsuleId>,
    next_generation: u64,
}

/// What one reaper round did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReapReport {
    pub paused: Vec<CapsuleId>,
    pub destroyed: Vec<CapsuleId>,
    /// Pause failed and so did destroy (or the capsule was untracked meanwhile).
    pub failed: Vec<CapsuleId>,
}

/// Activity tracker; cheap to clone (shared state).
#[derive(Clone)]
pub struct Ttl {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl Default for Ttl {
    fn default() -> Self {
        Self::new()
    }
}

impl Ttl {
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            clock: Arc::new(clock),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts tracking (create, resume, agent restart re-adoption) with activity = now.
    /// `timeout_sec` 0 disables auto-pause.
    pub fn track(&self, id: CapsuleId, timeout_sec: u64) {
        let now = self.clock.now();
        self.insert(id, timeout_sec, now);
    }

    /// Like [`Ttl::track`] with an earlier last activity: a restarted agent re-adopting a
    /// running capsule passes its persisted `last_active_at_unix`, so a restart does not reset
    /// the idle timer.
    pub fn track_since(&self, id: CapsuleId, timeout_sec: u64, last_active: SystemTime) {
        let now = self.clock.now();
        let idle = SystemTime::now()
            .duration_since(last_active)
            .unwrap_or_default();
        self.insert(id, timeout_sec, now.checked_sub(idle).unwrap_or(now));
    }

    fn insert(&self, id: CapsuleId, timeout_sec: u64, now: Instant) {
        let mut state = self.lock();
        state.next_generation += 1;
        let generation = state.next_generation;
        state.capsules.insert(
            id,
            Entry {
                timeout: (timeout_sec > 0).then(|| Duration::from_secs(timeout_sec)),
                last_active: now,
                generation,
                pausing: false,
            },
        );
    }

    /// Records activity. Returns false for an untracked capsule.
    pub fn touch(&self, id: &CapsuleId) -> bool {
        let now = self.clock.now();
        match self.lock().capsules.get_mut(id) {
            Some(entry) => {
                entry.last_active = now;
                true
            }
            None => false,
        }
    }

    /// Changes the timeout (e.g. a later `timeout_sec` from the control plane).
    pub fn set_timeout(&self, id: &CapsuleId, timeout_sec: u64) -> bool {
        match self.lock().capsules.get_mut(id) {
            Some(entry) => {
                entry.timeout = (timeout_sec > 0).then(|| Duration::from_secs(timeout_sec));
                true
            }
            None => false,
        }
    }

    /// Stops tracking: call before a user pause and on destroy, so the reaper neither pauses
    /// it nor destroys it after a failed pause that raced the user's.
    pub fn untrack(&self, id: &CapsuleId) -> bool {
        self.lock().capsules.remove(id).is_some()
    }

    /// The capsule's `timeout_sec` (0 = never), to send back on resume / in ListSandboxes.
    pub fn timeout_sec(&self, id: &CapsuleId) -> Option<u64> {
        self.lock()
            .capsules
            .get(id)
            .map(|e| e.timeout.map_or(0, |t| t.as_secs()))
    }

    /// Wall-clock time of the last activity (`SandboxInfo.last_active_at_unix`).
    pub fn last_active(&self, id: &CapsuleId) -> Option<SystemTime> {
        let now = self.clock.now();
        let last = self.lock().capsules.get(id)?.last_active;
        let idle = now.saturating_duration_since(last);
        Some(
            SystemTime::now()
                .checked_sub(idle)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
    }

    /// Auto-paused capsules since the last call (`ListSandboxes.auto_paused_sandbox_ids`).
    pub fn drain_auto_paused(&self) -> Vec<CapsuleId> {
        std::mem::take(&mut self.lock().auto_paused)
    }

    /// Capsules idle past their timeout, marked as being paused (each is returned once).
    fn take_expired(&self) -> Vec<(CapsuleId, u64)> {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut expired = Vec::new();
        for (id, entry) in state.capsules.iter_mut() {
            let Some(timeout) = entry.timeout else {
                continue;
            };
            if !entry.pausing && now.saturating_duration_since(entry.last_active) >= timeout {
                entry.pausing = true;
                expired.push((id.clone(), entry.generation));
            }
        }
        expired.sort();
        expired
    }

    fn still_ours(&self, id: &CapsuleId, generation: u64) -> bool {
        self.lock()
            .capsules
            .get(id)
            .is_some_and(|e| e.generation == generation)
    }

    /// Removes the entry if it is still the one the reaper selected.
    fn finish(&self, id: &CapsuleId, generation: u64, auto_paused: bool) {
        let mut state = self.lock();
        if state
            .capsules
            .get(id)
            .is_some_and(|e| e.generation == generation)
        {
            state.capsules.remove(id);
        }
        if auto_paused {
            state.auto_paused.push(id.clone());
        }
    }

    /// One reaper round: pauses every expired capsule (concurrently) and waits for all.
    pub async fn reap_once<P, PF, PT, PE, D, DF, DT, DE>(
        &self,
        pause: &P,
        destroy: &D,
    ) -> ReapReport
    where
        P: Fn(CapsuleId) -> PF,
        PF: Future<Output = Result<PT, PE>>,
        PE: Display,
        D: Fn(CapsuleId) -> DF,
        DF: Future<Output = Result<DT, DE>>,
        DE: Display,
    {
        let expired = self.take_expired();
        let outcomes = expired
            .into_iter()
            .map(|(id, generation)| self.reap_one(id, generation, pause, destroy));
        let mut report = ReapReport::default();
        for (id, outcome) in join_all(outcomes).await {
            match outcome {
                Outcome::Paused => report.paused.push(id),
                Outcome::Destroyed => report.destroyed.push(id),
                Outcome::Failed => report.failed.push(id),
            }
        }
        report
    }

    async fn reap_one<P, PF, PT, PE, D, DF, DT, DE>(
        &self,
        id: CapsuleId,
        generation: u64,
        pause: &P,
        destroy: &D,
    ) -> (CapsuleId, Outcome)
    where
        P: Fn(CapsuleId) -> PF,
        PF: Future<Output = Result<PT, PE>>,
        PE: Display,
        D: Fn(CapsuleId) -> DF,
        DF: Future<Output = Result<DT, DE>>,
        DE: Display,
    {
        tracing::info!(%id, "auto-pausing idle capsule");
        let error = match pause(id.clone()).await {
            Ok(_) => {
                self.finish(&id, generation, true);
                return (id, Outcome::Paused);
            }
            Err(e) => e.to_string(),
        };
        if !self.still_ours(&id, generation) {
            tracing::info!(%id, %error, "auto-pause failed after the capsule was paused or destroyed elsewhere");
            return (id, Outcome::Failed);
        }
        tracing::warn!(%id, %error, "auto-pause failed; destroying the capsule");
        let outcome = match destroy(id.clone()).await {
            Ok(_) => Outcome::Destroyed,
            Err(e) => {
                tracing::error!(%id, error = %e, "destroy after failed auto-pause failed");
                Outcome::Failed
            }
        };
        self.finish(&id, generation, false);
        (id, outcome)
    }

    /// Every `interval`, starts a pause for each expired capsule until the handle is shut down
    /// or dropped. Each pause (and destroy after a failed one) runs in its own task: a slow
    /// pause does not hold up the others, and stopping the reaper never cancels a pause
    /// half-way (a checkpoint interrupted between steps would leave the capsule inconsistent).
    /// The service passes closures over its capsule registry, e.g.
    /// `move |id| { let c = capsules.clone(); async move { c.pause(&id).await } }`.
    pub fn spawn_reaper<P, PF, PT, PE, D, DF, DT, DE>(
        &self,
        interval: Duration,
        pause: P,
        destroy: D,
    ) -> ReaperHandle
    where
        P: Fn(CapsuleId) -> PF + Send + Sync + 'static,
        PF: Future<Output = Result<PT, PE>> + Send + 'static,
        PT: Send + 'static,
        PE: Display + Send + 'static,
        D: Fn(CapsuleId) -> DF + Send + Sync + 'static,
        DF: Future<Output = Result<DT, DE>> + Send + 'static,
        DT: Send + 'static,
        DE: Display + Send + 'static,
    {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let ttl = self.clone();
        let pause = Arc::new(pause);
        let destroy = Arc::new(destroy);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = ticker.tick() => {}
                }
                // Selected capsules are marked as pausing, so a pause still running at the
                // next tick is not started twice.
                for (id, generation) in ttl.take_expired() {
                    let (ttl, pause, destroy) = (ttl.clone(), pause.clone(), destroy.clone());
                    tokio::spawn(async move {
                        ttl.reap_one(id, generation, &*pause, &*destroy).await;
                    });
                }
            }
        });
        ReaperHandle {
            stop: Some(stop_tx),
            task: Some(task),
        }
    }
}

enum Outcome {
    Paused,
    Destroyed,
    Failed,
}

/// Polls all futures concurrently on the current task (no `futures` dependency; a round has a
/// handful of capsules at most).
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Cancel handle of the reaper task.
pub struct ReaperHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ReaperHandle {
    /// Stops the reaper (pauses already started run to completion).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ReaperHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Starts at a real `Instant` and only moves when told to.
    #[derive(Clone)]
    struct FakeClock {
        base: Instant,
        offset_ms: Arc<AtomicU64>,
    }

    impl FakeClock {
        fn new() -> Self {
            Self {
                base: Instant::now(),
                offset_ms: Arc::new(AtomicU64::new(0)),
            }
        }
        fn advance(&self, d: Duration) {
            self.offset_ms
                .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
        }
    }

    #[derive(Clone, Default)]
    struct Calls {
        paused: Arc<Mutex<Vec<CapsuleId>>>,
        destroyed: Arc<Mutex<Vec<CapsuleId>>>,
    }

    impl Calls {
        fn pause_ok(&self) -> impl Fn(CapsuleId) -> std::future::Ready<Result<(), String>> + use<> {
            let paused = self.paused.clone();
            move |id| {
                paused.lock().unwrap().push(id);
                std::future::ready(Ok(()))
            }
        }
        fn pause_err(
            &self,
        ) -> impl Fn(CapsuleId) -> std::future::Ready<Result<(), String>> + use<> {
            let paused = self.paused.clone();
            move |id| {
                paused.lock().unwrap().push(id);
                std::future::ready(Err("checkpoint failed".to_owned()))
            }
        }
        fn destroy(&self) -> impl Fn(CapsuleId) -> std::future::Ready<Result<(), String>> + use<> {
            let destroyed = self.destroyed.clone();
            move |id| {
                destroyed.lock().unwrap().push(id);
                std::future::ready(Ok(()))
            }
        }
    }

    /// Compile-time check that the service can hand `Capsules::pause` / `Capsules::destroy`
    /// (snapshot.rs, capsule.rs) to the reaper as they are.
    #[allow(dead_code)]
    fn capsules_fit_the_callbacks<R: crate::runtime::Runtime>(
        ttl: &Ttl,
        capsules: Arc<crate::capsule::Capsules<R>>,
    ) -> ReaperHandle {
        let for_pause = capsules.clone();
        ttl.spawn_reaper(
            REAP_INTERVAL,
            move |id: CapsuleId| {
                let capsules = for_pause.clone();
                async move { capsules.pause(&id).await }
            },
            move |id: CapsuleId| {
                let capsules = capsules.clone();
                async move { capsules.destroy(&id).await }
            },
        )
    }

    fn id(n: u128) -> CapsuleId {
        CapsuleId::from_u128(n)
    }

    #[tokio::test]
    async fn pauses_only_after_the_timeout_and_touch_resets_it() {
        let clock = FakeClock::new();
        let ttl = Ttl::with_clock(clock.clone());
        let calls = Calls::default();
        ttl.track(id(1), 60);
        ttl.track(id(2), 0);
        ttl.track(id(3), 30);

        clock.advance(Duration::from_secs(29));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert_eq!(report, ReapReport::default());

        clock.advance(Duration::from_secs(1));
        assert!(ttl.touch(&id(1)));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert_eq!(report.paused, vec![id(3)]);

        // id(1) was touched at t=30: due at t=90, not 60.
        clock.advance(Duration::from_secs(45));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert!(report.paused.is_empty());
        clock.advance(Duration::from_secs(15));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert_eq!(report.paused, vec![id(1)]);

        // Timeout 0: never, however long.
        clock.advance(Duration::from_secs(365 * 24 * 3600));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert_eq!(report, ReapReport::default());
        assert_eq!(ttl.timeout_sec(&id(2)), Some(0));

        assert_eq!(*calls.paused.lock().unwrap(), vec![id(3), id(1)]);
        assert_eq!(ttl.drain_auto_paused(), vec![id(3), id(1)]);
        assert!(ttl.drain_auto_paused().is_empty());
        // Paused capsules are no longer tracked; touching them is a no-op.
        assert!(!ttl.touch(&id(3)));
        assert!(calls.destroyed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failed_pause_destroys_and_is_not_reported_as_auto_paused() {
        let clock = FakeClock::new();
        let ttl = Ttl::with_clock(clock.clone());
        let calls = Calls::default();
        ttl.track(id(7), 10);
        clock.advance(Duration::from_secs(10));
        let report = ttl.reap_once(&calls.pause_err(), &calls.destroy()).await;
        assert_eq!(report.destroyed, vec![id(7)]);
        assert_eq!(*calls.destroyed.lock().unwrap(), vec![id(7)]);
        assert!(ttl.drain_auto_paused().is_empty());
        assert_eq!(ttl.timeout_sec(&id(7)), None);
    }

    #[tokio::test]
    async fn user_pause_racing_the_reaper_is_not_destroyed() {
        let clock = FakeClock::new();
        let ttl = Ttl::with_clock(clock.clone());
        let calls = Calls::default();
        ttl.track(id(4), 5);
        clock.advance(Duration::from_secs(6));
        // The pause callback fails because the user paused first (the service untracked it).
        let racing = ttl.clone();
        let pause = move |cid: CapsuleId| {
            racing.untrack(&cid);
            std::future::ready(Err::<(), _>("capsule is pausing"))
        };
        let report = ttl.reap_once(&pause, &calls.destroy()).await;
        assert_eq!(report.failed, vec![id(4)]);
        assert!(calls.destroyed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn resume_starts_a_fresh_timer_and_pausing_capsules_are_not_reselected() {
        let clock = FakeClock::new();
        let ttl = Ttl::with_clock(clock.clone());
        ttl.track(id(5), 10);
        clock.advance(Duration::from_secs(11));
        // Take it as the reaper would, then resume (track) before the pause "finishes".
        let expired = ttl.take_expired();
        assert_eq!(expired.len(), 1);
        assert!(ttl.take_expired().is_empty(), "marked as pausing");
        ttl.track(id(5), 10);
        // The stale round finishing must not remove the new tracking.
        ttl.finish(&id(5), expired[0].1, false);
        assert_eq!(ttl.timeout_sec(&id(5)), Some(10));
        assert!(ttl.take_expired().is_empty());
        clock.advance(Duration::from_secs(10));
        assert_eq!(ttl.take_expired().len(), 1);
        let last = ttl.last_active(&id(5)).unwrap();
        let age = SystemTime::now().duration_since(last).unwrap();
        assert!(
            age >= Duration::from_secs(9) && age <= Duration::from_secs(12),
            "{age:?}"
        );
    }

    #[tokio::test]
    async fn readoption_keeps_the_persisted_idle_time() {
        let clock = FakeClock::new();
        // The fake clock must be able to go back 50 s from its start.
        clock.advance(Duration::from_secs(3600));
        let ttl = Ttl::with_clock(clock.clone());
        let calls = Calls::default();
        ttl.track_since(id(6), 60, SystemTime::now() - Duration::from_secs(50));
        clock.advance(Duration::from_secs(5));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert!(report.paused.is_empty());
        clock.advance(Duration::from_secs(6));
        let report = ttl.reap_once(&calls.pause_ok(), &calls.destroy()).await;
        assert_eq!(report.paused, vec![id(6)]);
    }

    #[tokio::test]
    async fn reaper_task_runs_and_stops() {
        let ttl = Ttl::new();
        let calls = Calls::default();
        ttl.track(id(9), 1);
        let handle = ttl.spawn_reaper(Duration::from_millis(50), calls.pause_ok(), calls.destroy());
        let deadline = Instant::now() + Duration::from_secs(5);
        while ttl.timeout_sec(&id(9)).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        handle.shutdown().await;
        assert_eq!(ttl.drain_auto_paused(), vec![id(9)]);
        assert_eq!(*calls.paused.lock().unwrap(), vec![id(9)]);
    }

    #[tokio::test]
    async fn slow_pauses_run_concurrently() {
        let clock = FakeClock::new();
        let ttl = Ttl::with_clock(clock.clone());
        for n in 0..5 {
            ttl.track(id(n), 1);
        }
        clock.advance(Duration::from_secs(2));
        let pause = |_id: CapsuleId| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<(), String>(())
        };
        let destroy = |_id: CapsuleId| async { Ok::<(), String>(()) };
        let started = Instant::now();
        let report = ttl.reap_once(&pause, &destroy).await;
        assert_eq!(report.paused.len(), 5);
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
    }
}
