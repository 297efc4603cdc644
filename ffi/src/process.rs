use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd`'s child one that its parent supervises alone: it gets SIGTERM when the thread
/// that spawns it dies, so a killed `playpod demo` never leaves Xvfb or the game running, and it
/// runs in a process group of its own, so a terminal's Ctrl-C (sent to the whole foreground
/// group) reaches only playpod, which then stops its children in order: the stream first, the
/// sound server last. Spawn from a thread that lives as long as the child should (the main
/// thread).
pub fn supervised(cmd: &mut Command) {
    cmd.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: prctl, getppid and reading errno are. It touches no memory of the
    // parent but `parent`, a copy of a plain integer.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would ever send
            // the signal.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other(
                    "the parent exited while starting the child",
                ));
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
