use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child get SIGTERM when the thread that spawns it dies, so a killed `playpod demo`
/// never leaves Xvfb or the game running. Spawn from a thread that lives as long as the child
/// should (the main thread).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: prctl and reading errno are. It touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends SIGTERM to process `pid` (a child we started), asking it to exit cleanly.
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill takes plain integers; a stale pid at worst signals nothing (ESRCH).
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
