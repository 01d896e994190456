//! Real TUN devices: with `offload = auto` every packet is framed by a 10-byte
//! `virtio_net_hdr` (a zero header in, a zero header out for a plain ICMP echo, a
//! "needs checksum" header on a TCP SYN the kernel left to us); with `off` packets are bare;
//! a taken name is reported as in use.
//!
//! Needs root: runs under the e2e harness, which reports these as ignored (with the reason)
//! without it, or fails them under `CI`. Each scenario makes a network namespace of its own
//! (`Netns`, deleted on drop, also on panic) and does all its work on a thread that entered
//! it: the TUN, its address and route, and the packets exist only there. The root namespace is
//! never touched. Reads wait with `poll(2)` bounded by a deadline far above any real delay.
#![allow(unsafe_code)] // one poll(2) call, argued below

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    println!("ringway-tun root tests: Linux only");
    std::process::ExitCode::SUCCESS
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::os::fd::AsRawFd;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context, Result};
    use ringway_e2e::harness::{self, Scenario};
    use ringway_e2e::icmp::{echo_request, parse_echo_reply};
    use ringway_e2e::netns::Netns;
    use ringway_tun::{ip, LinkConfig, Offload, Offloads, Tun, TunError, TunOptions, VNET_HDR_LEN};

    const TUN: &str = "rwt0";
    /// The TUN's address; the kernel routes 198.18.0.0/24 into it.
    const OURS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    /// A peer "behind" the TUN: packets from it are written by the test.
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const ECHO_ID: u16 = 0x7277;
    /// Bound for one scenario's work in its namespace.
    const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
    /// Bound for one expected packet; it normally comes back within microseconds.
    const READ_LIMIT: Duration = Duration::from_secs(10);
    /// `virtio_net_hdr.flags`: the checksum at csum_start + csum_offset is left to the reader.
    const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

    pub fn main() -> ExitCode {
        harness::main([
            Scenario::testbed(
                "auto_offload_frames_packets_with_a_vnet_header",
                &[],
                |_| in_namespace(auto_offload),
            ),
            Scenario::testbed("off_reads_and_writes_bare_ip_packets", &[], |_| {
                in_namespace(offload_off)
            }),
            Scenario::testbed("a_taken_name_is_in_use", &[], |_| in_namespace(taken_names)),
        ])
    }

    fn in_namespace(f: fn() -> Result<()>) -> Result<()> {
        let [ns] = Netns::create_set(["tun"])?;
        ns.run_inside(SCENARIO_LIMIT, f)
    }

    /// Creates the TUN, non-blocking, and configures it as the server would (plus a short
    /// queue, to see `txqueuelen` applied).
    fn open(offload: Offload) -> Result<Tun> {
        let tun = Tun::create(
            TUN,
            &TunOptions {
                offload,
                blocking: false,
            },
        )?;
        tun.configure(&LinkConfig {
            addr: OURS,
            prefix_len: 24,
            mtu: 1420,
            txqueuelen: Some(64),
        })?;
        Ok(tun)
    }

    fn auto_offload() -> Result<()> {
        let tun = open(Offload::Auto)?;
        let offloads = *tun.offloads();
        println!("TUN offload: {offloads}");
        // This kernel (6.18) has every offload; an older one would show what it refused.
        ensure!(
            offloads.vnet_hdr && offloads.tso,
            "expected vnet_hdr and TSO on this kernel, got: {offloads}"
        );
        let link = ip::run(&["-o", "link", "show", "dev", TUN])?;
        ensure!(link.contains("qlen 64"), "txqueuelen not applied: {link}");

        // A zero header (no offload asked) in front of an echo request from the peer to us...
        let request = echo_request(PEER, OURS, ECHO_ID, 1, b"ringway-tun");
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&request);
        let written = tun
            .write(&frame)
            .context("writing the framed echo request")?;
        ensure!(
            written == frame.len(),
            "wrote {written} of {} bytes",
            frame.len()
        );

        // ...comes back as a zero header in front of the kernel's echo reply.
        let mut buf = vec![0u8; 65_536 + VNET_HDR_LEN];
        let frame = read_matching(&tun, &mut buf, "the echo reply", |f| {
            f.get(VNET_HDR_LEN..)
                .is_some_and(|p| parse_echo_reply(p).is_ok_and(|r| r.id == ECHO_ID))
        })?;
        let (hdr, packet) = frame.split_at(VNET_HDR_LEN);
        ensure!(
            hdr == [0; VNET_HDR_LEN],
            "echo reply header not zero: {hdr:02x?}"
        );
        let reply = parse_echo_reply(packet).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(
            (reply.src, reply.dst, reply.seq, reply.payload)
                == (OURS, PEER, 1, b"ringway-tun".as_slice()),
            "unexpected reply: {reply:?}"
        );

        // Checksum offload is on: a TCP SYN towards the peer leaves the kernel with its
        // checksum to fill in, which only a virtio_net_hdr can say.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        let target = SocketAddrV4::new(PEER, 9);
        match socket.connect(&target.into()) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            other => bail!("non-blocking connect to {target}: expected EINPROGRESS, got {other:?}"),
        }
        let frame = read_matching(&tun, &mut buf, "the TCP SYN", |f| {
            f.get(VNET_HDR_LEN..).is_some_and(|p| is_syn_to(p, target))
        })?;
        let flags = frame[0];
        let gso_type = frame[1];
        let csum_start = u16::from_le_bytes([frame[6], frame[7]]);
        let csum_offset = u16::from_le_bytes([frame[8], frame[9]]);
        ensure!(
            flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
                && gso_type == 0
                && csum_start == 20
                && csum_offset == 16,
            "SYN header should ask for the TCP checksum at 20 + 16: flags {flags:#x}, gso_type \
             {gso_type}, csum_start {csum_start}, csum_offset {csum_offset}"
        );
        Ok(())
    }

    fn offload_off() -> Result<()> {
        let tun = open(Offload::Off)?;
        ensure!(
            *tun.offloads() == Offloads::OFF,
            "offload off, yet: {}",
            tun.offloads()
        );
        let request = echo_request(PEER, OURS, ECHO_ID, 2, b"bare");
        let written = tun.write(&request)?;
        ensure!(
            written == request.len(),
            "wrote {written} of {}",
            request.len()
        );
        let mut buf = vec![0u8; 65_536];
        // Nothing in front: the read starts with the IPv4 header.
        let packet = read_matching(&tun, &mut buf, "the echo reply", |p| {
            parse_echo_reply(p).is_ok_and(|r| r.id == ECHO_ID)
        })?;
        let reply = parse_echo_reply(packet).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        ensure!(
            (reply.src, reply.dst, reply.seq) == (OURS, PEER, 2),
            "unexpected reply: {reply:?}"
        );
        Ok(())
    }

    fn taken_names() -> Result<()> {
        let options = TunOptions {
            offload: Offload::Auto,
            blocking: false,
        };
        let first = Tun::create(TUN, &options)?;
        ensure!(first.name() == TUN, "got name {}", first.name());
        for name in [TUN, "lo"] {
            match Tun::create(name, &options) {
                Err(e @ TunError::Busy { .. }) => {
                    ensure!(e.is_in_use());
                    println!("{name}: {e}");
                }
                other => bail!("{name}: expected Busy, got {other:?}"),
            }
        }
        drop(first);
        // Closing the only descriptor deleted the device: the name is free again.
        let again = Tun::create(TUN, &options)?;
        ensure!(again.name() == TUN);
        Ok(())
    }

    /// An IPv4 TCP SYN (without ACK) to `target`.
    fn is_syn_to(p: &[u8], target: SocketAddrV4) -> bool {
        if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
            return false;
        }
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let port = u16::from_be_bytes([p[22], p[23]]);
        let flags = p[33];
        dst == *target.ip() && port == target.port() && flags & 0x12 == 0x02
    }

    /// Reads frames until one satisfies `wanted` (others are printed and skipped), for at most
    /// [`READ_LIMIT`].
    fn read_matching<'a>(
        tun: &Tun,
        buf: &'a mut [u8],
        what: &str,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<&'a [u8]> {
        let deadline = Instant::now() + READ_LIMIT;
        loop {
            match tun.read(buf) {
                Ok(n) if wanted(&buf[..n]) => return Ok(&buf[..n]),
                Ok(n) => println!("skipping a {n}-byte frame: {:02x?}", &buf[..n.min(48)]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_readable(tun, left)? {
                        bail!("{what} did not arrive within {READ_LIMIT:?}");
                    }
                }
                Err(e) => return Err(e).context(format!("reading {what}")),
            }
        }
    }

    /// Waits up to `limit` for the TUN to have a packet; `false` on timeout.
    fn wait_readable(tun: &Tun, limit: Duration) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(limit.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll reads and writes the one `pollfd` at the pointer (nfds = 1) during the
        // call only; `pfd` is a live local. Its descriptor stays open: `tun` is borrowed.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            0 => Ok(false),
            1.. => Ok(true),
            _ => Err(std::io::Error::last_os_error()).context("poll on the TUN"),
        }
    }
}
