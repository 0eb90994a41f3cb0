//! Keeps the probe's ringing thread and the vCPU the guest probe spins on
//! on different host cores, and puts the ringing thread back where it was
//! when the guard goes, on every path. No guest protocol here.

/// The CPU set of the calling thread.
fn own_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: sched_getaffinity into a zeroed set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

fn pin(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: sched_setaffinity with a set we filled.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The calling thread's pinning; dropping it restores the CPU set it had.
pub struct Pinned {
    from: Option<libc::cpu_set_t>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(set) = self.from.take() {
            // SAFETY: restoring the set sched_getaffinity gave us.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        }
    }
}

/// Pins QEMU's vCPU `smp - 1` thread (of process `pid`) to the last host
/// core and the calling thread to core 0, where there are two cores and two
/// vCPUs. Says what it did.
pub fn pin_apart(pid: Option<u32>, smp: u8) -> (Pinned, String) {
    let unpinned = Pinned { from: None };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || smp < 2 {
        return (unpinned, format!("not pinned ({cores} host cores, {smp} vCPUs)"));
    }
    let Some(pid) = pid else { return (unpinned, "not pinned (QEMU gone)".into()) };
    let vcpu = format!("CPU {}/", smp - 1);
    let tid = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        comm.starts_with(&vcpu).then(|| t.file_name().to_string_lossy().parse::<libc::pid_t>().ok()).flatten()
    });
    let Some(tid) = tid else { return (unpinned, format!("not pinned (no thread named {vcpu}... in QEMU)")) };
    let before = Pinned { from: own_cpus() };
    if pin(tid, cores - 1) && pin(0, 0) {
        (before, format!("QEMU's vCPU {} thread on host core {}, the ringing thread on core 0", smp - 1, cores - 1))
    } else {
        (before, "not pinned (sched_setaffinity refused)".into())
    }
}
