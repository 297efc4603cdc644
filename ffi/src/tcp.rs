//! What the kernel knows of a TCP connection (`TCP_INFO`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// What the kernel measures of a connection's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathInfo {
    /// The smoothed round-trip time in µs, from the peer's acknowledgements: it grows with
    /// the data queued in front of the slowest link on the way. 0 before the first sample.
    pub smoothed_rtt_us: u32,
    /// The latest delivery rate sample in bytes a second: while a queue stands in front of the
    /// slowest link, what that link carries.
    pub delivery_rate: u64,
}

/// The connection's [`PathInfo`] (`TCP_INFO`).
pub fn path_info(sock: BorrowedFd<'_>) -> io::Result<PathInfo> {
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `sock` is an open descriptor for as long as it is borrowed; the kernel writes at
    // most `len` bytes into `info`, which is that large and ours for the call.
    let status = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PathInfo {
        smoothed_rtt_us: info.tcpi_rtt,
        delivery_rate: info.tcpi_delivery_rate,
    })
}

/// Moves the calling thread (only it) into the network namespace `ns` (a file such as
/// `/run/netns/NAME`, as `ip netns add` makes): the sockets it makes from then on live there.
/// For tests that put a client behind a shaped link.
pub fn enter_network_namespace(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: `ns` is an open file for the call; setns reads only the descriptor and changes
    // only the calling thread's namespace, which no Rust invariant depends on.
    let status = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_loopback_connection_has_a_short_round_trip_and_a_rate_and_a_file_has_neither() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut served, _) = listener.accept().unwrap();
        use std::io::{Read, Write};
        for _ in 0..10 {
            served.write_all(b"ping").unwrap();
            let mut got = [0; 4];
            client.read_exact(&mut got).unwrap();
        }
        let path = path_info(served.as_fd()).unwrap();
        assert!(path.smoothed_rtt_us < 100_000, "{path:?} on loopback");
        assert!(path.delivery_rate > 0, "{path:?}: bytes were delivered");
        let file = tempfile::tempfile().unwrap();
        assert!(path_info(file.as_fd()).is_err());
    }
}
