//! A fixed pool of worker threads for the engine's parallel regions.
//!
//! A decode step of a 2B-parameter model runs about 240 small parallel regions (each
//! matmul's rows, attention's heads), each a few hundred microseconds of work or less.
//! A general work-stealing pool wakes sleeping workers through the kernel and allocates
//! now and then (deque buffers, epoch garbage); here the workers spin on a region counter
//! between regions (parking only after [`SPIN_BEFORE_PARK`] idle), the caller takes part
//! in every region, and items are handed out one by one from a shared iterator, so a
//! region costs a couple of atomic operations and allocates nothing.
//!
//! Which thread runs which item never matters to the engine (every item writes its own
//! outputs), so results do not depend on the thread count.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::PoisonError;
use std::time::Duration;

use sync::{thread, Arc, AtomicBool, AtomicU64, AtomicUsize, JoinHandle, Mutex, Ordering};

/// The synchronisation primitives: std's, or those of the loom model checker under
/// `--cfg loom` (`make loom`), which runs the pool's protocol through every interleaving of
/// its threads (see the `loom_tests` module).
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::{
        hint::spin_loop,
        sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        sync::{Arc, Mutex},
        thread::{self, JoinHandle},
    };
    #[cfg(not(loom))]
    pub(crate) use std::{
        hint::spin_loop,
        sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        sync::{Arc, Mutex},
        thread::{self, JoinHandle},
    };
}

/// How long an idle worker spins waiting for the next region before it parks.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_millis(2);

/// [`Shared::state`] flag: the region accepts workers.
const OPEN: usize = 1 << (usize::BITS - 1);

/// Spins between two reads of the clock while an idle worker waits for a region.
#[cfg_attr(loom, allow(dead_code))]
const SPINS_PER_CLOCK_CHECK: u32 = 1024;

/// Spins between yields while the caller waits for workers to leave a region.
const SPINS_BEFORE_YIELD: u32 = 256;

/// A region's work as the workers see it: the caller's closure with its lifetime erased.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn() + Sync + 'static));

// SAFETY: a `Job` points to a `Fn + Sync` closure, callable from any thread; the pool
// only dereferences it while the region that owns the closure is running (see `run`).
unsafe impl Send for Job {}

/// State shared by the caller and the workers.
struct Shared {
    /// Region counter: a worker runs the job once per new value.
    region: AtomicU64,
    /// The current region's job (set before `region` is bumped).
    job: Mutex<Option<Job>>,
    /// [`OPEN`] while the current region accepts workers, plus the number of workers
    /// inside it. A worker joins only while the region is open, so the caller never waits
    /// for a worker that has not started (e.g. one the OS has not scheduled yet): it closes
    /// the region once its own share is done and waits only for those inside.
    state: AtomicUsize,
    /// A worker's job panicked in the current region; its payload.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Set once, when the pool is dropped.
    shutdown: AtomicBool,
    /// Workers that have started (their thread set up and waiting for regions).
    started: AtomicUsize,
}

/// A fixed set of worker threads; the thread calling [`Pool::try_for_each`] is one more.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// A region is running (nested or concurrent calls run serially instead).
    busy: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool running regions on `threads` threads in all: the caller and `threads - 1`
    /// workers (`threads` 0 counts as 1).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            region: AtomicU64::new(0),
            job: Mutex::new(None),
            state: AtomicUsize::new(0),
            panic: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            started: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("bitnet-pool-{i}"))
                    .spawn(move || worker(&shared))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        // Ready means started: a thread's own set-up (and its allocations) is over before
        // the first region, which then never waits for a thread still being created.
        while shared.started.load(Ordering::Acquire) < workers.len() {
            thread::yield_now();
        }
        Ok(Pool {
            shared,
            workers,
            busy: AtomicBool::new(false),
        })
    }

    /// Threads that run each region (the caller included).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f` on every item of `items`, spread over the pool's threads, and returns
    /// when all calls have returned: the first error stops handing out items and is
    /// returned. Items are taken one at a time in iterator order.
    pub fn try_for_each<I, E, F>(&self, items: I, f: F) -> Result<(), E>
    where
        I: Iterator + Send,
        I::Item: Send,
        E: Send,
        F: Fn(I::Item) -> Result<(), E> + Sync,
    {
        let queue = Mutex::new(items);
        let error = Mutex::new(None);
        let failed = AtomicBool::new(false);
        let drain = || {
            while !failed.load(Ordering::Relaxed) {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some(item) = next else { break };
                if let Err(e) = f(item) {
                    failed.store(true, Ordering::Relaxed);
                    error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(e);
                }
            }
        };
        self.run(&drain);
        match error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`Pool::try_for_each`] for infallible work.
    pub fn for_each<I, F>(&self, items: I, f: F)
    where
        I: Iterator + Send,
        I::Item: Send,
        F: Fn(I::Item) + Sync,
    {
        let _ = self.try_for_each(items, |item| {
            f(item);
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Runs `job` on every thread of the pool and returns when all have finished; a
    /// panic in any of them is resumed here.
    fn run(&self, job: &(dyn Fn() + Sync)) {
        if self.workers.is_empty() || self.busy.swap(true, Ordering::Acquire) {
            // One thread, or called from inside a region: no hand-off.
            job();
            return;
        }
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased. Workers dereference the pointer only after
        // joining the region (while it is open) and before leaving it, and this function
        // does not return (so `job` stays borrowed and alive) until the region is closed
        // and empty, even when `job` panics on this thread.
        let erased: *const (dyn Fn() + Sync + 'static) = unsafe { std::mem::transmute(job) };
        *s.job.lock().unwrap_or_else(PoisonError::into_inner) = Some(Job(erased));
        s.state.store(OPEN, Ordering::Release);
        s.region.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        let mine = catch_unwind(AssertUnwindSafe(job));
        // Close the region, then wait for the workers inside it.
        s.state.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while s.state.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                // A worker inside may have been descheduled: give it the core.
                thread::yield_now();
            } else {
                sync::spin_loop();
            }
        }
        *s.job.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.busy.store(false, Ordering::Release);
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if let Some(payload) = s
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            resume_unwind(payload);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.region.fetch_add(1, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            // A worker only exits through the shutdown check; its panics were caught.
            let _ = w.join();
        }
    }
}

/// A worker: waits for each new region (spinning, then parked), runs its job, reports.
fn worker(s: &Shared) {
    s.started.fetch_add(1, Ordering::Release);
    let mut seen = 0u64;
    loop {
        seen = next_region(s, seen);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        if !join(&s.state) {
            // The region closed before this worker got to it.
            continue;
        }
        let job = *s.job.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(Job(f)) = job {
            // SAFETY: `Pool::run` keeps the closure alive until the region is closed and
            // empty, which needs this worker's leave below.
            let f = unsafe { &*f };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
                s.panic
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(payload);
            }
        }
        s.state.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until `region` moves past `seen` (spinning, then parked) and returns it.
#[cfg(not(loom))]
fn next_region(s: &Shared, seen: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut spins = 0u32;
    loop {
        let r = s.region.load(Ordering::Acquire);
        if r != seen {
            return r;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(SPINS_PER_CLOCK_CHECK) && start.elapsed() > SPIN_BEFORE_PARK {
            // `Pool::run` unparks every worker after bumping `region`, so a bump between
            // the load above and this park wakes it at once.
            thread::park();
        } else {
            sync::spin_loop();
        }
    }
}

/// [`next_region`] for the model checker, which has no clock: every wait parks, so the
/// unpark after each bump of `region` is what is checked.
#[cfg(loom)]
fn next_region(s: &Shared, seen: u64) -> u64 {
    loop {
        let r = s.region.load(Ordering::Acquire);
        if r != seen {
            return r;
        }
        thread::park();
    }
}

/// Enters the open region (counted in `state`), or returns false if it is closed.
fn join(state: &AtomicUsize) -> bool {
    let mut v = state.load(Ordering::Acquire);
    loop {
        if v & OPEN == 0 {
            return false;
        }
        match state.compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => v = now,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_exactly_once_on_any_thread_count() {
        for threads in [1, 2, 3, 8] {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for n in [0, 1, 5, 64, 1000] {
                let mut out = vec![0u32; n];
                pool.for_each(out.chunks_mut(7).enumerate(), |(c, chunk)| {
                    for (i, v) in chunk.iter_mut().enumerate() {
                        *v += (c * 7 + i) as u32 + 1;
                    }
                });
                let want: Vec<u32> = (1..=n as u32).collect();
                assert_eq!(out, want, "{threads} threads, {n} items");
            }
        }
    }

    #[test]
    fn the_first_error_stops_the_region_and_is_returned() {
        let pool = Pool::new(2).unwrap();
        let ran = AtomicUsize::new(0);
        let r = pool.try_for_each(0..10_000, |i| {
            ran.fetch_add(1, Ordering::Relaxed);
            if i == 10 {
                Err(format!("item {i}"))
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err("item 10".to_string()));
        assert!(ran.load(Ordering::Relaxed) < 10_000);
        // The pool is still usable.
        assert_eq!(pool.try_for_each(0..3, |_| Ok::<(), ()>(())), Ok(()));
    }

    #[test]
    fn a_panic_in_a_region_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(0..64, |i| {
                if i == 63 {
                    panic!("item {i}");
                }
            })
        }));
        assert!(r.is_err());
        let sum = AtomicUsize::new(0);
        pool.for_each(0..100, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn nested_regions_run_inline_instead_of_deadlocking() {
        let pool = Pool::new(2).unwrap();
        let sum = AtomicUsize::new(0);
        pool.for_each(0..4, |_| {
            pool.for_each(0..4, |j| {
                sum.fetch_add(j, Ordering::Relaxed);
            });
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4 * 6);
    }

    #[test]
    fn parked_workers_wake_for_the_next_region() {
        let pool = Pool::new(2).unwrap();
        std::thread::sleep(SPIN_BEFORE_PARK * 3);
        // 20 items of 1 ms: the caller alone cannot drain them before a woken worker joins
        // (a wake-up takes microseconds), so a worker that stayed parked fails the test
        // instead of being covered for by the caller.
        let by_worker = AtomicUsize::new(0);
        let sum = AtomicUsize::new(0);
        let caller = std::thread::current().id();
        pool.for_each(0..20, |i| {
            std::thread::sleep(Duration::from_millis(1));
            if std::thread::current().id() != caller {
                by_worker.fetch_add(1, Ordering::Relaxed);
            }
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 190);
        assert!(
            by_worker.load(Ordering::Relaxed) > 0,
            "the parked worker ran none of the region's items"
        );
    }
}

/// The pool's protocol under the loom model checker (`make loom`: `--cfg loom`): every
/// interleaving of the caller and a worker, up to loom's preemption bound, through two
/// regions and the shutdown. What it checks: each item runs exactly once; no job runs
/// after its region has returned (the lifetime erasure in `Pool::run` relies on that);
/// a worker parked between regions is woken for the next one; and `Drop` ends every
/// worker (a lost wake-up would leave loom with a deadlock, which fails the model).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// Runs `body` under loom with a preemption bound that keeps the search to seconds.
    fn model(body: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(body);
    }

    #[test]
    fn items_run_once_and_never_after_their_region() {
        model(|| {
            let pool = Pool::new(2).unwrap();
            for region in 0..2usize {
                let alive = Arc::new(AtomicBool::new(true));
                let ran = Arc::new(AtomicUsize::new(0));
                let (a, r) = (Arc::clone(&alive), Arc::clone(&ran));
                pool.for_each(0..2usize, move |_| {
                    assert!(
                        a.load(Ordering::SeqCst),
                        "region {region}'s job ran after it returned"
                    );
                    r.fetch_add(1, Ordering::SeqCst);
                });
                alive.store(false, Ordering::SeqCst);
                assert_eq!(ran.load(Ordering::SeqCst), 2, "region {region}");
            }
            drop(pool);
        });
    }

    #[test]
    fn a_parked_worker_is_woken_when_the_caller_needs_it() {
        model(|| {
            let pool = Pool::new(2).unwrap();
            // Whoever takes item 0 waits for item 1, so when the caller takes item 0 only the
            // worker can run item 1: without its wake-up the model never ends, and fails.
            let other_ran = Arc::new(AtomicBool::new(false));
            let o = Arc::clone(&other_ran);
            pool.for_each(0..2usize, move |i| {
                if i == 0 {
                    while !o.load(Ordering::SeqCst) {
                        thread::yield_now();
                    }
                } else {
                    o.store(true, Ordering::SeqCst);
                }
            });
            assert!(other_ran.load(Ordering::SeqCst));
            drop(pool);
        });
    }

    #[test]
    fn a_panicking_job_reaches_the_caller_and_the_workers_still_stop() {
        model(|| {
            let pool = Pool::new(2).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.for_each(0..2usize, |i| assert!(i != 1, "item {i}"));
            }));
            assert!(r.is_err());
            drop(pool);
        });
    }
}
