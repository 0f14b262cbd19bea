//! Batched UDP sends: `sendmmsg(2)` behind a safe function (nix's wrapper reads address slots of
//! its result that a send never fills, so it is not used).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};

/// Datagrams per `sendmmsg` call (the kernel's `UIO_MAXIOV` bounds a call at 1024).
const MAX_BATCH: usize = 64;

/// Sends each `(payload, peer)` as one datagram on `socket`, in order, with as few system calls
/// as the kernel allows. Returns how many were sent: all of them, unless the kernel refused one,
/// in which case the ones before it were sent and the error is returned when none was.
pub fn send_batch(socket: &UdpSocket, datagrams: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in datagrams.chunks(MAX_BATCH) {
        let addrs: Vec<SockaddrStorage> = chunk.iter().map(|(_, peer)| SockaddrStorage::from(*peer)).collect();
        let mut iovecs: Vec<libc::iovec> =
            chunk.iter().map(|(payload, _)| libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() }).collect();
        // SAFETY: `mmsghdr` is plain old data for which all-zero bytes are a valid value (null
        // pointers, zero lengths and flags).
        #[allow(unsafe_code)]
        let mut headers: Vec<libc::mmsghdr> = (0..chunk.len()).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }).collect();
        for ((header, iovec), addr) in headers.iter_mut().zip(iovecs.iter_mut()).zip(&addrs) {
            header.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_namelen = addr.len();
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        let mut offset = 0;
        while offset < headers.len() {
            let remaining = &mut headers[offset..];
            // SAFETY: every header points at one `iovec` of `iovecs` and one address of `addrs`,
            // which outlive the call and are not moved during it; each `iovec` describes a slice
            // borrowed for the whole function (the kernel only reads it); the count passed is the
            // length of `remaining`. The kernel writes only `msg_len` of the headers it sent.
            #[allow(unsafe_code)]
            let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), remaining.as_mut_ptr(), remaining.len() as libc::c_uint, 0) };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if sent > 0 { Ok(sent) } else { Err(error) };
            }
            offset += n as usize;
            sent += n as usize;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_every_datagram_in_order_to_its_peer() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payloads: Vec<Vec<u8>> = (0..150u32).map(|i| i.to_be_bytes().repeat(1 + (i as usize % 5))).collect();
        let datagrams: Vec<(&[u8], SocketAddr)> =
            payloads.iter().enumerate().map(|(i, p)| (p.as_slice(), if i % 3 == 0 { b.local_addr().unwrap() } else { a.local_addr().unwrap() })).collect();
        assert_eq!(send_batch(&sender, &datagrams).unwrap(), 150);
        let mut buf = [0u8; 64];
        for (i, p) in payloads.iter().enumerate() {
            let socket = if i % 3 == 0 { &b } else { &a };
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], p.as_slice(), "datagram {i}");
            assert_eq!(from, sender.local_addr().unwrap());
        }
    }

    #[test]
    fn nothing_to_send() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(send_batch(&sender, &[]).unwrap(), 0);
    }
}
