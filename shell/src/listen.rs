//! Listening sockets. `[::]:PORT` takes IPv6 and IPv4 alike (IPV6_V6ONLY off, whatever the
//! host's default), and where the host has no IPv6 at all (the kernel booted without it) it
//! falls back to `0.0.0.0:PORT` with a warning. So one address, `[::]:8080`, serves IPv4-only,
//! IPv6-only and dual-stack clusters.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections waiting to be accepted.
const BACKLOG: i32 = 1024;

/// Binds and listens on `addr` (blocking mode, as `std::net::TcpListener::bind` leaves it).
/// `[::]` also takes IPv4, or becomes `0.0.0.0` on a host without IPv6; the listener's
/// `local_addr` says which.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, |domain| {
        Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
    })
}

/// [`bind`] with the socket maker given, so that a host without IPv6 can be played in tests.
fn bind_with(
    addr: SocketAddr,
    new_socket: impl Fn(Domain) -> io::Result<Socket>,
) -> io::Result<TcpListener> {
    let any_v6 = addr.ip() == Ipv6Addr::UNSPECIFIED;
    let socket = match new_socket(Domain::for_address(addr)) {
        Ok(socket) => socket,
        Err(err) if any_v6 => {
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            tracing::warn!(%addr, %err, "this host has no IPv6: listening on {v4} instead");
            return listen(new_socket(Domain::IPV4)?, v4);
        }
        Err(err) => return Err(err),
    };
    if any_v6 {
        socket.set_only_v6(false)?;
    }
    listen(socket, addr)
}

/// Unsent bytes a connection's kernel buffer may hold before the socket stops taking more.
///
/// The kernel otherwise grows a connection's send buffer up to `net.ipv4.tcp_wmem`'s maximum
/// (4 MiB by default): a viewer on a link slower than the stream would have seconds of video
/// queued there, out of reach (measured: frames 3-4 s old on a 1.5 Mbit/s link at 2.5 Mbit/s).
/// With the bound, the queue stays in the ring, where a viewer that falls behind skips to the
/// next keyframe. 16 KiB is three frames at 2.5 Mbit/s and 60 fps, and a few milliseconds of
/// sending at LAN speeds: enough that a fast viewer never waits on it.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Settings for an accepted connection: no Nagle delay, and at most [`NOTSENT_LOWAT`] unsent
/// bytes queued in the kernel. Failures are logged, not fatal: the connection still works.
pub fn tune_accepted(tcp: &tokio::net::TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    if let Err(err) = sock
        .set_tcp_nodelay(true)
        .and_then(|()| sock.set_tcp_notsent_lowat(NOTSENT_LOWAT))
    {
        tracing::debug!(%err, "cannot tune an accepted connection");
    }
}

fn listen(socket: Socket, addr: SocketAddr) -> io::Result<TcpListener> {
    // As std does on Unix: a restarted server takes its port back at once.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// Accepts one connection on `listener` from `from` and checks bytes cross it.
    fn round_trip(listener: &TcpListener, from: SocketAddr) {
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(SocketAddr::new(from.ip(), port))
            .unwrap_or_else(|e| panic!("connect from {from} to port {port}: {e}"));
        let (mut served, _) = listener.accept().unwrap();
        client.write_all(b"hi").unwrap();
        let mut got = [0; 2];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    fn has_ipv6() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[test]
    fn any_v6_takes_ipv4_and_ipv6() {
        if !has_ipv6() {
            eprintln!("skipped: this host has no IPv6 loopback");
            return;
        }
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        assert!(listener.local_addr().unwrap().is_ipv6());
        round_trip(&listener, "127.0.0.1:0".parse().unwrap());
        round_trip(&listener, "[::1]:0".parse().unwrap());
    }

    #[test]
    fn any_v6_falls_back_to_ipv4_on_a_host_without_ipv6() {
        let no_ipv6 = |domain: Domain| {
            if domain == Domain::IPV6 {
                Err(io::Error::from_raw_os_error(97)) // EAFNOSUPPORT
            } else {
                Socket::new(domain, Type::STREAM, None)
            }
        };
        let listener = bind_with("[::]:0".parse().unwrap(), no_ipv6).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::UNSPECIFIED, "{addr}");
        round_trip(&listener, "127.0.0.1:0".parse().unwrap());
        // Only the unspecified address falls back: a named IPv6 address is an error.
        let err = bind_with("[::1]:0".parse().unwrap(), no_ipv6).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(97));
    }

    #[test]
    fn a_taken_port_is_an_error_not_a_fallback() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        round_trip(&taken, "127.0.0.1:0".parse().unwrap());
    }
}
