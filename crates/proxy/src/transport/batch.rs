//! Reading many UDP datagrams per system call (Linux `recvmmsg`): under
//! load the socket holds dozens of datagrams at each wake-up, and one call
//! per datagram was a syscall and a readiness check each.
#![allow(
    unsafe_code,
    reason = "recvmmsg(2) has no safe wrapper in std or tokio; each block says why it is sound"
)]

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams read per call at most.
pub const BATCH: usize = 16;

/// Buffers for one receive loop: room for [`BATCH`] datagrams of the
/// largest UDP size, and their source addresses.
pub struct Batch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            bufs: (0..BATCH).map(|_| vec![0u8; 65_536]).collect(),
            // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        }
    }
}

impl Batch {
    /// Wait until `socket` is readable and read what it holds, up to
    /// [`BATCH`] datagrams: each as (bytes, source).
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
        socket
            .async_io(Interest::READABLE, || self.recv_now(socket))
            .await
    }

    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<Vec<(Vec<u8>, SocketAddr)>> {
        // SAFETY: iovec and mmsghdr are plain data; zeroed is valid, and
        // every pointer set below points into `self`, which outlives the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as for `iov`.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (buf, addr)) in self.bufs.iter_mut().zip(self.addrs.iter_mut()).enumerate() {
            iov[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let h = &mut headers[i].msg_hdr;
            h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: `headers` describes BATCH valid buffers and address slots.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::with_capacity(n as usize);
        for (h, (buf, addr)) in headers
            .iter()
            .zip(self.bufs.iter().zip(self.addrs.iter()))
            .take(n as usize)
        {
            let Some(source) = socket_addr(addr) else {
                continue;
            };
            let len = (h.msg_len as usize).min(buf.len());
            out.push((buf[..len].to_vec(), source));
        }
        Ok(out)
    }
}

/// The IPv4 or IPv6 address in `addr`.
fn socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
