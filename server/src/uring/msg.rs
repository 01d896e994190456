//! The memory of one `sendmsg`/`recvmsg`: header, iovecs, socket address and
//! control-message space, all of which the kernel reads (send) or writes
//! (receive) while the request is in flight.
//!
//! Each field is an `UnsafeCell` and a [`MsgBuf`] lives in a [`KernelBox`], so
//! Rust only ever holds shared references to it. Writing it (before a
//! submission) and reading what the kernel wrote (after the completion) are
//! `unsafe fn`s whose contract is the one fact the caller must vouch for: no
//! request using this header is in flight.
//!
//! The control space is where segmentation offload plugs in: a `UDP_SEGMENT`
//! cmsg for a multi-datagram send, `UDP_GRO` segment sizes on receive.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::net::SocketAddr;

use socket2::SockAddr;

use super::kernel_box::KernelBox;

/// Bytes of control-message space per header (8-byte aligned, as `cmsghdr` needs).
pub(super) const CONTROL_LEN: usize = 64;

/// A message header with `IOVS` iovecs, at a fixed address.
pub(super) struct MsgBuf<const IOVS: usize> {
    hdr: UnsafeCell<libc::msghdr>,
    iov: UnsafeCell<[libc::iovec; IOVS]>,
    name: UnsafeCell<libc::sockaddr_storage>,
    control: UnsafeCell<[u64; CONTROL_LEN / 8]>,
}

/// What a completed `recvmsg` left in its header.
#[derive(Debug, Clone, Copy)]
pub(super) struct Received {
    /// `msg_flags` (`MSG_TRUNC` says the datagram did not fit).
    pub flags: i32,
    /// The sender, if its address family is one we know.
    pub from: Option<SocketAddr>,
    /// With `UDP_GRO` on, the size of every datagram but the last of a coalesced batch
    /// (the kernel's `UDP_GRO` control message); `None` for a single datagram.
    pub gro_size: Option<usize>,
}

/// `CMSG_LEN(2)`, `CMSG_SPACE(2)`: a control message carrying a `u16`.
fn cmsg_u16_sizes() -> (usize, usize) {
    // SAFETY: CMSG_LEN and CMSG_SPACE are arithmetic on their argument; they touch no memory.
    unsafe { (libc::CMSG_LEN(2) as usize, libc::CMSG_SPACE(2) as usize) }
}

impl<const IOVS: usize> MsgBuf<IOVS> {
    fn new() -> Self {
        // SAFETY: msghdr, iovec and sockaddr_storage are plain C structs for
        // which all-zero bytes are a valid (empty) value.
        let (hdr, iov, name) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        MsgBuf {
            hdr: UnsafeCell::new(hdr),
            iov: UnsafeCell::new([iov; IOVS]),
            name: UnsafeCell::new(name),
            control: UnsafeCell::new([0; CONTROL_LEN / 8]),
        }
    }

    /// `n` headers at fixed addresses.
    pub fn table(n: usize) -> KernelBox<[Self]> {
        KernelBox::new((0..n).map(|_| Self::new()).collect())
    }

    /// One header at a fixed address.
    pub fn boxed() -> KernelBox<Self> {
        KernelBox::new(Box::new(Self::new()))
    }

    /// The header, for a `SendMsg`/`RecvMsg` submission.
    pub fn header(&self) -> *mut libc::msghdr {
        self.hdr.get()
    }

    /// Writes the header fields from this buffer's own (stable) fields.
    ///
    /// # Safety
    ///
    /// No request using this header is in flight.
    unsafe fn set_header(&self, iovs: usize, namelen: libc::socklen_t, controllen: usize) {
        let name = if namelen > 0 {
            self.name.get().cast()
        } else {
            std::ptr::null_mut()
        };
        let control = if controllen > 0 {
            self.control.get().cast()
        } else {
            std::ptr::null_mut()
        };
        let hdr = libc::msghdr {
            msg_name: name,
            msg_namelen: namelen,
            msg_iov: self.iov.get().cast(),
            msg_iovlen: iovs as _,
            msg_control: control,
            msg_controllen: controllen as _,
            msg_flags: 0,
        };
        // SAFETY: the caller guarantees the kernel is not using this header,
        // and only shared references to this `MsgBuf` exist, none into `hdr`.
        unsafe { self.hdr.get().write(hdr) };
    }

    /// Points the header at `len` bytes at `data` and at the name and control
    /// space for the kernel to fill.
    ///
    /// # Safety
    ///
    /// No request using this header is in flight.
    pub unsafe fn prepare_recv(&self, data: *mut u8, len: usize) {
        let iov = libc::iovec {
            iov_base: data.cast(),
            iov_len: len,
        };
        // SAFETY: no request uses this header (the caller's promise), so the
        // kernel is not reading or writing the iovec; no reference into it exists.
        unsafe { self.iov.get().cast::<libc::iovec>().write(iov) };
        let namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: as above.
        unsafe { self.set_header(1, namelen, CONTROL_LEN) };
    }

    /// Sets the header up as the template of a multishot `recvmsg`: the kernel takes
    /// `namelen` bytes of name and [`CONTROL_LEN`] bytes of control space from it and
    /// writes both, with the payload, into each buffer it picks from the ring (see
    /// [`MultishotLayout`]).
    ///
    /// # Safety
    ///
    /// No request using this header is in flight.
    pub unsafe fn prepare_multishot_recv(&self, namelen: libc::socklen_t) {
        // SAFETY: the caller's promise.
        unsafe { self.set_header(0, namelen, CONTROL_LEN) };
    }

    /// Points the header at `len` bytes at `data`, to be sent to `to`: one datagram, or
    /// with `segment` (`UDP_SEGMENT`) datagrams of `segment` bytes each, the last possibly
    /// shorter.
    ///
    /// # Safety
    ///
    /// No request using this header is in flight.
    pub unsafe fn prepare_send(
        &self,
        data: *mut u8,
        len: usize,
        to: SocketAddr,
        segment: Option<u16>,
    ) {
        let to = SockAddr::from(to);
        let iov = libc::iovec {
            iov_base: data.cast(),
            iov_len: len,
        };
        // SAFETY: no request uses this header (the caller's promise), so the
        // kernel is not reading the iovec or the name; `to` is at most a
        // sockaddr_storage long, the size of `name`; no reference into either exists.
        unsafe {
            self.iov.get().cast::<libc::iovec>().write(iov);
            std::ptr::copy_nonoverlapping(
                to.as_ptr().cast::<u8>(),
                self.name.get().cast::<u8>(),
                to.len() as usize,
            );
        }
        let controllen = match segment {
            Some(size) => {
                let (len, space) = cmsg_u16_sizes();
                let control = self.control.get().cast::<u8>();
                // SAFETY: as above, the control space is ours to write; it is 8-byte
                // aligned (an array of u64) as cmsghdr needs, and CMSG_SPACE(2) (24 bytes
                // on 64-bit Linux) fits its CONTROL_LEN bytes. The data follows the header
                // at CMSG_LEN(0).
                unsafe {
                    let cmsg = control.cast::<libc::cmsghdr>();
                    std::ptr::write_bytes(control, 0, space);
                    (*cmsg).cmsg_len = len as _;
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    let data = control.add(libc::CMSG_LEN(0) as usize);
                    data.cast::<u16>().write_unaligned(size);
                }
                space
            }
            None => 0,
        };
        // SAFETY: as above.
        unsafe { self.set_header(1, to.len(), controllen) };
    }

    /// Lets `fill` write up to `IOVS` iovecs (it returns how many), then
    /// points the header at them with no name (a connected socket).
    ///
    /// # Safety
    ///
    /// No request using this header is in flight.
    pub unsafe fn prepare_gather(&self, fill: impl FnOnce(&mut [libc::iovec]) -> usize) -> usize {
        // SAFETY: no request uses this header (the caller's promise), so the
        // kernel is not reading the iovecs, and this `&mut` is the only
        // reference into them; it ends when `fill` returns.
        let n = fill(unsafe { &mut *self.iov.get() }).min(IOVS);
        // SAFETY: as above.
        unsafe { self.set_header(n, 0, 0) };
        n
    }

    /// What the kernel wrote: flags and sender.
    ///
    /// # Safety
    ///
    /// The `recvmsg` using this header has completed and no other request
    /// using it is in flight.
    pub unsafe fn received(&self) -> Received {
        // SAFETY: the receive completed (the caller's promise): the kernel has
        // finished writing the header and the name and holds no pointer to them.
        let (flags, namelen, storage) = unsafe {
            let hdr = &*self.hdr.get();
            (hdr.msg_flags, hdr.msg_namelen, *self.name.get())
        };
        // SAFETY: the kernel wrote a socket address of `namelen` bytes into
        // `storage`, which is a sockaddr_storage and so large enough for any family.
        let from = unsafe { SockAddr::new(storage, namelen) }.as_socket();
        // SAFETY: as above, the kernel is done with the header and the control space.
        let gro_size = unsafe { self.gro_size() };
        Received {
            flags,
            from,
            gro_size,
        }
    }

    /// The `UDP_GRO` segment size among the control messages the kernel wrote.
    ///
    /// # Safety
    ///
    /// As [`MsgBuf::received`]: the receive has completed.
    unsafe fn gro_size(&self) -> Option<usize> {
        let hdr = self.hdr.get();
        // SAFETY: the caller's promise: the kernel has finished with the header, which it
        // left pointing at our control space with `msg_controllen` set to the bytes it
        // wrote there (at most CONTROL_LEN; 0 without control messages). CMSG_FIRSTHDR and
        // CMSG_NXTHDR stay within those bytes, and each cmsghdr they return lies in them.
        unsafe {
            if (*hdr).msg_control.is_null() {
                return None;
            }
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                let c = cmsg.read_unaligned();
                if c.cmsg_level == libc::SOL_UDP
                    && c.cmsg_type == libc::UDP_GRO
                    && c.cmsg_len as usize >= libc::CMSG_LEN(4) as usize
                {
                    let size = libc::CMSG_DATA(cmsg).cast::<i32>().read_unaligned();
                    return usize::try_from(size).ok().filter(|&s| s > 0);
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }
}

/// Where a multishot `recvmsg` puts things in each provided buffer:
///
/// ```text
///  0                16                  16 + NAME          PAYLOAD
/// +-----------------+-------------------+------------------+--------------------+
/// | recvmsg_out     | name (sockaddr_in6| control (UDP_GRO | the datagrams      |
/// | namelen, ctllen,|  size, truncated  |  cmsg)           |                    |
/// | payloadlen, flg |  or zero-padded)  |                  |                    |
/// +-----------------+-------------------+------------------+--------------------+
/// ```
#[derive(Debug, Clone, Copy)]
pub(super) struct MultishotLayout;

impl MultishotLayout {
    /// `struct io_uring_recvmsg_out`.
    const OUT: usize = 16;
    /// Name space asked for: any IPv4 or IPv6 address.
    pub const NAME: usize = std::mem::size_of::<libc::sockaddr_in6>();
    /// Where the payload starts.
    pub const PAYLOAD: usize = Self::OUT + Self::NAME + CONTROL_LEN;

    /// Reads what the kernel wrote in front of the payload: `None` if `bytes` is too
    /// short to hold it.
    pub fn parse(bytes: &[u8]) -> Option<MultishotRecv> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
        };
        let (namelen, controllen) = (word(0)? as usize, word(4)? as usize);
        let (payload_len, flags) = (word(8)? as usize, word(12)?);
        let name = bytes.get(Self::OUT..Self::OUT + namelen.min(Self::NAME))?;
        let control = bytes.get(Self::OUT + Self::NAME..)?;
        let control = control.get(..controllen.min(CONTROL_LEN))?;
        Some(MultishotRecv {
            from: parse_sockaddr(name),
            gro_size: parse_gro(control),
            payload_len,
            truncated: flags & libc::MSG_TRUNC as u32 != 0,
        })
    }
}

/// What one multishot completion's buffer says about its datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MultishotRecv {
    /// The sender.
    pub from: Option<SocketAddr>,
    /// The `UDP_GRO` segment size, for a coalesced batch.
    pub gro_size: Option<usize>,
    /// Bytes of datagrams at [`MultishotLayout::PAYLOAD`].
    pub payload_len: usize,
    /// They did not fit the buffer.
    pub truncated: bool,
}

/// A `sockaddr_in` or `sockaddr_in6` as the kernel writes it.
fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::from((ip, port)))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
            let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// The `UDP_GRO` size among control messages laid out as the kernel lays them out.
fn parse_gro(mut c: &[u8]) -> Option<usize> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    while c.len() >= HDR {
        let len = usize::from_ne_bytes(c[..8].try_into().ok()?);
        let level = i32::from_ne_bytes(c[8..12].try_into().ok()?);
        let kind = i32::from_ne_bytes(c[12..16].try_into().ok()?);
        if len < HDR || len > c.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == libc::UDP_GRO && len >= HDR + 4 {
            let size = i32::from_ne_bytes(c[HDR..HDR + 4].try_into().ok()?);
            return usize::try_from(size).ok().filter(|&s| s > 0);
        }
        c = c.get(len.next_multiple_of(8)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multishot_buffers_parse() {
        let mut b = vec![0u8; MultishotLayout::PAYLOAD + 10];
        let put = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        put(&mut b, 0, 16); // namelen: a sockaddr_in
        put(&mut b, 4, 24); // controllen: one UDP_GRO message
        put(&mut b, 8, 10);
        put(&mut b, 12, 0);
        let name = 16;
        b[name..name + 2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[name + 2..name + 4].copy_from_slice(&4000u16.to_be_bytes());
        b[name + 4..name + 8].copy_from_slice(&[192, 0, 2, 7]);
        let c = 16 + MultishotLayout::NAME;
        b[c..c + 8].copy_from_slice(&20usize.to_ne_bytes());
        b[c + 8..c + 12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        b[c + 12..c + 16].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        b[c + 16..c + 20].copy_from_slice(&1452i32.to_ne_bytes());
        let got = MultishotLayout::parse(&b).unwrap();
        assert_eq!(
            got,
            MultishotRecv {
                from: Some("192.0.2.7:4000".parse().unwrap()),
                gro_size: Some(1452),
                payload_len: 10,
                truncated: false
            }
        );
        // No control message, an IPv6 sender, truncated.
        put(&mut b, 4, 0);
        put(&mut b, 0, 28);
        put(&mut b, 12, libc::MSG_TRUNC as u32);
        b[name..name + 2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[name + 4..name + 8].fill(0); // flow info
        b[name + 8..name + 24]
            .copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let got = MultishotLayout::parse(&b).unwrap();
        assert_eq!(got.from, Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!((got.gro_size, got.truncated), (None, true));
        // Garbage lengths are refused, not trusted.
        put(&mut b, 4, 24);
        b[c..c + 8].copy_from_slice(&9999usize.to_ne_bytes());
        assert_eq!(MultishotLayout::parse(&b).unwrap().gro_size, None);
        assert!(MultishotLayout::parse(&b[..10]).is_none());
    }

    #[test]
    fn headers_point_into_their_own_buffer() {
        let t = MsgBuf::<1>::table(2);
        let m = &t.get()[1];
        let mut data = [0u8; 8];
        let to: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        // SAFETY: no request uses this header: it was never submitted.
        unsafe { m.prepare_send(data.as_mut_ptr(), 8, to, None) };
        // SAFETY: as above; reading our own writes.
        let hdr = unsafe { &*m.header() };
        assert_eq!(hdr.msg_iov, m.iov.get().cast());
        assert_eq!(hdr.msg_iovlen, 1);
        assert_eq!(hdr.msg_name, m.name.get().cast());
        assert!(hdr.msg_control.is_null());
        // SAFETY: as above: the name holds what prepare_send wrote.
        assert_eq!(unsafe { m.received() }.from, Some(to));

        // With a segment size, one UDP_SEGMENT control message carries it.
        // SAFETY: as above.
        unsafe { m.prepare_send(data.as_mut_ptr(), 8, to, Some(1452)) };
        // SAFETY: as above; reading our own writes.
        let hdr = unsafe { &*m.header() };
        #[allow(clippy::unnecessary_cast)] // socklen_t on some libcs
        let controllen = hdr.msg_controllen as usize;
        assert_eq!(controllen, cmsg_u16_sizes().1);
        // SAFETY: as above; the control space holds the message just written.
        let (c, size) = unsafe {
            let c = libc::CMSG_FIRSTHDR(m.header());
            (c.read(), libc::CMSG_DATA(c).cast::<u16>().read_unaligned())
        };
        assert_eq!(
            (c.cmsg_level, c.cmsg_type),
            (libc::SOL_UDP, libc::UDP_SEGMENT)
        );
        assert_eq!(size, 1452);

        // SAFETY: as above.
        unsafe { m.prepare_recv(data.as_mut_ptr(), 8) };
        // SAFETY: as above.
        let hdr = unsafe { &*m.header() };
        #[allow(clippy::unnecessary_cast)] // socklen_t on some libcs
        let controllen = hdr.msg_controllen as usize;
        assert_eq!(controllen, CONTROL_LEN);
        assert_eq!(hdr.msg_control, m.control.get().cast());

        let g = MsgBuf::<4>::boxed();
        // SAFETY: as above.
        let n = unsafe { g.get().prepare_gather(|iov| iov.len() + 3) };
        assert_eq!(n, 4, "a fill reporting more than it has is clamped");
    }
}
