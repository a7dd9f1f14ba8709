//! Shared memory sized when the server starts: segments whose size a
//! setting or the number of backends decides (pgrx's own shared statics have
//! a size fixed at compile time). Requested and attached through Postgres'
//! shared memory hooks, which need `shared_preload_libraries`.

use pgrx::pg_sys;
use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// A named segment of shared memory, zeroed when the server starts, with
/// one lightweight lock of its own.
pub struct Segment {
    name: &'static CStr,
    /// Its size in bytes, worked out when the server starts.
    size: fn() -> usize,
    base: AtomicPtr<u8>,
    len: AtomicUsize,
    lock: AtomicPtr<pg_sys::LWLock>,
}

impl Segment {
    pub const fn new(name: &'static CStr, size: fn() -> usize) -> Self {
        Segment {
            name,
            size,
            base: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
            lock: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// The segment's bytes and lock, once the server has attached it: None
    /// without `shared_preload_libraries`.
    pub fn get(&self) -> Option<(*mut u8, usize, *mut pg_sys::LWLock)> {
        let base = self.base.load(Ordering::Acquire);
        (!base.is_null()).then(|| {
            (
                base,
                self.len.load(Ordering::Acquire),
                self.lock.load(Ordering::Acquire),
            )
        })
    }
}

static mut SEGMENTS: &[&Segment] = &[];
static mut PREVIOUS_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREVIOUS_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Registers `segments` with Postgres. Called once, from `_PG_init`, while
/// the postmaster preloads the library.
#[allow(unsafe_code)]
pub fn register(segments: &'static [&'static Segment]) {
    // SAFETY: the postmaster is single-threaded while it preloads
    // libraries; the hooks are chained to those installed before.
    unsafe {
        SEGMENTS = segments;
        PREVIOUS_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request);
        PREVIOUS_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup);
    }
}

#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn request() {
    // SAFETY: called by the postmaster once, in its shared memory request
    // phase, where MaxBackends is known.
    unsafe {
        if let Some(previous) = PREVIOUS_REQUEST {
            previous();
        }
        for s in SEGMENTS {
            pg_sys::RequestAddinShmemSpace((s.size)());
            pg_sys::RequestNamedLWLockTranche(s.name.as_ptr(), 1);
        }
    }
}

#[allow(unsafe_code)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn startup() {
    // SAFETY: called by the postmaster once shared memory exists, under
    // AddinShmemInitLock (lock 21 of the main array, as pgrx does); the
    // segment is zeroed the first time it is created. Backends inherit the
    // pointers when they are forked.
    unsafe {
        if let Some(previous) = PREVIOUS_STARTUP {
            previous();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for s in SEGMENTS {
            let size = (s.size)();
            let mut found = false;
            let base = pg_sys::ShmemInitStruct(s.name.as_ptr(), size, &mut found).cast::<u8>();
            if !found {
                std::ptr::write_bytes(base, 0, size);
            }
            let lock = &raw mut (*pg_sys::GetNamedLWLockTranche(s.name.as_ptr())).lock;
            s.len.store(size, Ordering::Release);
            s.lock.store(lock, Ordering::Release);
            s.base.store(base, Ordering::Release);
        }
        pg_sys::LWLockRelease(init_lock);
    }
}
