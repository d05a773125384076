//! `--pin`: which CPUs the process may run on, and pinning a thread to
//! one (as nginx's `worker_cpu_affinity auto`).

use std::io;
use std::mem;

/// The CPUs this process may run on, in order (a container or `taskset`
/// may allow fewer than the machine has).
pub(crate) fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills
    // at most `size_of::<cpu_set_t>()` bytes of it, and CPU_ISSET reads
    // inside it for every index below CPU_SETSIZE.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        if libc::sched_getaffinity(
            0,
            mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let max = libc::CPU_SETSIZE as usize;
        Ok((0..max).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect())
    }
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no such CPU",
        ));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_SET writes inside the
    // set; pid 0 is the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set)
            != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
