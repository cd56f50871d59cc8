//! Deadlines on the host calls a guest can block in. Epoch interruption
//! stops a guest only while it runs wasm code; a guest asleep in a host
//! call would outlive its time limit, so every WASI call that can wait is
//! bounded here by the deadline of the guest call it was made from.
//!
//! Of WASI preview 1, only `poll_oneoff` waits (`std::thread::sleep`, and
//! any timer, becomes one on `wasm32-wasip1`): a stage's stdin is empty,
//! its stdout and stderr never block, and granted files are read as
//! regular files. It is replaced by the implementation below, which sleeps
//! at most until the deadline and then ends the call as a timeout, exactly
//! as the epoch would have in wasm code.

use super::sandbox::StageState;
use anyhow::Result;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::{Caller, Linker, Trap};

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;
const TAG_CLOCK: u8 = 0;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;

/// Replaces WASI's `poll_oneoff` in `linker` with one bounded by the
/// guest call's deadline. Call after the WASI functions are added.
pub fn add_to_linker(linker: &mut Linker<StageState>) -> Result<()> {
    linker.allow_shadowing(true);
    linker
        .func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)
        .map_err(anyhow::Error::from)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `poll_oneoff(in, out, nsubscriptions, nevents) -> errno`.
///
/// File-descriptor subscriptions are reported ready at once: nothing a
/// stage can read or write in its sandbox blocks. With only clock
/// subscriptions, it sleeps until the earliest, or until the deadline,
/// whichever comes first; past the deadline the call traps with
/// [`Trap::Interrupt`], which the instance reports as a timeout.
fn poll_oneoff(
    mut caller: Caller<'_, StageState>,
    subs_ptr: i32,
    events_ptr: i32,
    count: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller
        .get_export("memory")
        .and_then(wasmtime::Extern::into_memory)
    else {
        return Ok(ERRNO_FAULT);
    };
    let count = count as u32 as usize;
    if count == 0 {
        return Ok(ERRNO_INVAL);
    }
    let Some(subs) = count
        .checked_mul(SUBSCRIPTION_SIZE)
        .and_then(|len| read(memory.data(&caller), subs_ptr, len))
    else {
        return Ok(ERRNO_FAULT);
    };
    let state = caller.data();
    let now = Instant::now();
    let mut ready: Vec<(u64, u8)> = Vec::new();
    let mut earliest: Option<(u64, Duration)> = None;
    for sub in subs.chunks_exact(SUBSCRIPTION_SIZE) {
        let userdata = u64::from_le_bytes(sub[0..8].try_into().expect("8 bytes"));
        let tag = sub[8];
        if tag != TAG_CLOCK {
            ready.push((userdata, tag));
            continue;
        }
        let clock = u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes"));
        let timeout = u64::from_le_bytes(sub[24..32].try_into().expect("8 bytes"));
        let flags = u16::from_le_bytes(sub[40..42].try_into().expect("2 bytes"));
        let wait = if flags & SUBSCRIPTION_CLOCK_ABSTIME == 0 {
            Duration::from_nanos(timeout)
        } else {
            Duration::from_nanos(timeout).saturating_sub(clock_now(state, clock, now))
        };
        if earliest.is_none_or(|(_, w)| wait < w) {
            earliest = Some((userdata, wait));
        }
    }
    if ready.is_empty() {
        let (userdata, wait) = earliest.expect("at least one subscription, all clocks");
        let left = state.deadline.saturating_duration_since(now);
        if wait >= left {
            std::thread::sleep(left);
            return Err(Trap::Interrupt.into());
        }
        std::thread::sleep(wait);
        ready.push((userdata, TAG_CLOCK));
    }
    let mut events = vec![0u8; ready.len() * EVENT_SIZE];
    for (ev, (userdata, tag)) in events.chunks_exact_mut(EVENT_SIZE).zip(&ready) {
        ev[0..8].copy_from_slice(&userdata.to_le_bytes());
        ev[10] = *tag;
    }
    let written = events_ptr
        .try_into()
        .ok()
        .and_then(|at: u32| memory.write(&mut caller, at as usize, &events).ok());
    let counted = nevents_ptr.try_into().ok().and_then(|at: u32| {
        memory
            .write(
                &mut caller,
                at as usize,
                &(ready.len() as u32).to_le_bytes(),
            )
            .ok()
    });
    Ok(match (written, counted) {
        (Some(()), Some(())) => ERRNO_SUCCESS,
        _ => ERRNO_FAULT,
    })
}

/// What the guest's clock `clock` reads now: zero when the sandbox
/// freezes its clocks, else the host's.
fn clock_now(state: &StageState, clock: u32, now: Instant) -> Duration {
    if !state.clock {
        return Duration::ZERO;
    }
    match clock {
        CLOCK_REALTIME => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
        CLOCK_MONOTONIC => now.saturating_duration_since(state.started),
        _ => Duration::ZERO,
    }
}

fn read(mem: &[u8], ptr: i32, len: usize) -> Option<Vec<u8>> {
    let start = ptr as u32 as usize;
    mem.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
}
