//! The decode loop allocates nothing: after the session is built and one token decoded
//! (warm-up: the thread pool's lazily created state), every further `Session::decode`
//! runs on the KV cache and scratch allocated up front. Counted with a global allocator
//! wrapper in its own test binary, without libtest's harness (whose threads allocate
//! while a test runs).

#[path = "../../bitnet-models/tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_gguf::GgmlType;
use bitnet_inference::{Session, SessionConfig};
use bitnet_models::{KvType, Model, Numerics};
use common::{write_tiny, Tiny};

/// Counts every allocation and reallocation made by any thread.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation is).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::F16] {
        let model = Model::load(write_tiny(dir.path(), &Tiny::new("bitnet", ty))).unwrap();
        for threads in [1, 2] {
            let mut cfg = SessionConfig::new(64);
            cfg.n_batch = 16;
            cfg.threads = Some(threads);
            cfg.numerics = Numerics {
                kv_type: KvType::F16,
                ..Numerics::default()
            };
            let mut session = Session::new(&model, &cfg).unwrap();
            session.eval_last(&[5, 17, 3, 42]).unwrap();
            session.decode(8).unwrap();
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for token in [91, 60, 7, 12, 33, 2, 70, 14] {
                let logits = session.decode(token).unwrap();
                assert!(logits.iter().all(|v| v.is_finite()));
            }
            let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(
                allocated, 0,
                "{ty:?}, {threads} threads: {allocated} allocations in 8 decode steps"
            );
            println!("{ty:?}, {threads} threads: 8 decode steps, 0 allocations");
        }
    }
}
