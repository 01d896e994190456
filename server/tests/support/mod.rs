//! The in-process server both loopback test files drive: the real io_uring driver
//! on its own thread, a Unix datagram socketpair standing in for the TUN, UDP and TCP on
//! 127.0.0.1, and clients built from ringway-proto.
// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringway_offload::{VnetHdr, VNET_HDR_LEN};
use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::{InitPayload, Keypair, Timestamp};
use ringway_proto::wire::handshake::INIT_LEN;
use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::transport::{HEADER_LEN, OVERHEAD};
use ringway_proto::{Cipher, Session};
use ringway_server::config::{FairQueue, Peer, Settings, TcpSection, UringSection};
use ringway_server::metrics::{IoCounters, SessionCounters};
use ringway_server::outside::tcp::listener::Listener;
use ringway_server::outside::udp::Udp;
use ringway_server::sessions::Sessions;
use ringway_server::uring::{DataPath, Driver, Fds, RingUsage, TcpLimits, Tunables};

/// Bound on any one wait for the server: far above anything it should take,
/// so only a hang fails it.
pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const TX_SLOTS: u32 = 64;
pub const RX_SLOTS: u32 = 8;

pub fn server_keys() -> Keypair {
    Keypair::from_random([11; 32])
}

pub fn peer_keys(i: u8) -> Keypair {
    Keypair::from_random([20 + i; 32])
}

pub struct Server {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub offload: bool,
    /// The flow queue's packet limit, if it is on.
    pub fq_packets: Option<u32>,
    /// What the data path does (GSO and GRO as the kernel allowed).
    pub path: DataPath,
    /// The TUN stand-in's other end.
    pub inside: UnixDatagram,
    pub stop: UnixDatagram,
    pub done: mpsc::Receiver<Stopped>,
}

/// What the loop left behind.
pub struct Stopped {
    pub counters: SessionCounters,
    pub io: IoCounters,
    pub usage: RingUsage,
}

/// What a test may change about the server.
pub struct Options {
    pub peers: u8,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
    /// Connections from one address (all of a test's come from 127.0.0.1); `None`: the
    /// total cap.
    pub max_per_source: Option<u32>,
    /// The TUN stand-in carries a virtio_net_hdr in front of every packet, and the UDP
    /// socket gets UDP_GSO and UDP_GRO where the kernel has them (loopback does).
    pub offload: bool,
    /// With offload: use UDP_SEGMENT if the kernel has it (off: as on a kernel without).
    pub gso: bool,
    /// The flow queues (on by default, as in the server).
    pub fair_queue: Option<FairQueue>,
    /// SO_SNDBUF of accepted TCP connections (0: the kernel's autotuning).
    pub tcp_send_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            peers: 1,
            handshake_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(180),
            max_connections: 300,
            max_per_source: None,
            offload: false,
            gso: true,
            fair_queue: Some(FairQueue::default()),
            tcp_send_buffer: 0,
        }
    }
}

/// 64 KiB buffers beyond the receive slots' own, with offload.
pub const OFFLOAD_BUFFERS: u32 = 24;

impl Server {
    pub fn start(o: Options) -> Server {
        let Options {
            peers,
            handshake_timeout,
            idle_timeout,
            max_connections,
            max_per_source,
            offload,
            gso,
            fair_queue,
            tcp_send_buffer,
        } = o;
        let fq_packets = fair_queue.as_ref().map(|f| f.queue.limit_items);
        let (tun_ours, inside) = UnixDatagram::pair().unwrap();
        // Non-blocking, as the server's TUN is by default: idle reads may
        // complete with EAGAIN and park on the readiness poll (how often
        // depends on timing, so no test asserts on it). With offload the
        // TUN is read by one multishot read, which never parks; there the
        // stand-in stays blocking, so that a burst of writes waits for the
        // test to read (a socketpair queues only net.unix.max_dgram_qlen
        // datagrams, and a non-blocking write past that fails, where a real
        // TUN write never does).
        tun_ours.set_nonblocking(!offload).unwrap();
        let (stop_theirs, stop) = UnixDatagram::pair().unwrap();
        inside.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            let settings = Settings {
                listen_udp: Some("127.0.0.1:0".parse().unwrap()),
                listen_tcp: Some("127.0.0.1:0".parse().unwrap()),
                udp_socket_buffer: 1 << 20,
                secret_key: server_keys().secret,
                pool: "198.18.0.0/24".parse().unwrap(),
                tun_name: "unused".into(),
                offload: ringway_server::inside::tun::Offload::Off,
                mtu: 1420,
                keepalive_secs: 25,
                idle_timeout_secs: 180,
                cipher: Cipher::Aes256Gcm,
                rekey_after_secs: 0,
                uring: UringSection::default(),
                fair_queue: None,
                io: Default::default(),
                state_file: std::path::PathBuf::from("/nonexistent/last-handshakes"),
                tcp: TcpSection::default(),
                peers: (0..peers)
                    .map(|i| Peer {
                        name: format!("p{i}"),
                        public_key: peer_keys(i).public,
                        psk: None,
                    })
                    .collect(),
            };
            let udp = Udp::bind(settings.listen_udp.unwrap(), settings.udp_socket_buffer).unwrap();
            let tcp = Listener::bind(settings.listen_tcp.unwrap()).unwrap();
            let tunables = Tunables {
                ring_entries: 256,
                tun_rx_slots: RX_SLOTS,
                udp_rx_slots: RX_SLOTS,
                tx_slots: TX_SLOTS,
                sqpoll_idle_ms: 0,
                offload_buffers: OFFLOAD_BUFFERS,
                fair_queue,
            };
            let limits = TcpLimits {
                max_connections,
                max_per_source: max_per_source.unwrap_or(max_connections),
                handshake_timeout,
                send_queue_bytes: 64 * 1024,
                rx_buffer_bytes: if offload { 80 * 1024 } else { 4096 },
                max_frame: 1420 + OVERHEAD,
                socket_send_buffer: tcp_send_buffer,
                socket_recv_buffer: 0,
                idle_timeout,
            };
            let fds = Fds {
                tun: tun_ours.as_raw_fd(),
                udp: Some(udp.fd()),
                tcp_listener: Some(tcp.fd()),
                signal: stop_theirs.as_raw_fd(),
            };
            let path = if offload {
                DataPath {
                    mtu: 1420,
                    vnet_hdr: true,
                    uso: true,
                    udp_gso: gso && udp.probe_gso(),
                    udp_gro: udp.enable_gro(),
                }
            } else {
                DataPath::plain(1420)
            };
            addr_tx
                .send((udp.local_addr().unwrap(), tcp.local_addr().unwrap(), path))
                .unwrap();
            let mut driver =
                Driver::new(&tunables, limits, path, fds, Sessions::new(&settings)).unwrap();
            driver.run().unwrap();
            let stopped = Stopped {
                counters: driver.sessions().counters.clone(),
                io: driver.io_counters().clone(),
                usage: driver.usage(),
            };
            drop(driver);
            drop((tun_ours, stop_theirs, udp, tcp));
            done_tx.send(stopped).unwrap();
        });
        let (udp, tcp, path) = addr_rx.recv_timeout(TIMEOUT).unwrap();
        Server {
            udp,
            tcp,
            path,
            offload,
            fq_packets,
            inside,
            stop,
            done,
        }
    }

    /// Writes `packet` into the TUN stand-in (behind a zero virtio_net_hdr with offload).
    pub fn write_inside(&self, packet: &[u8]) {
        let mut p = Vec::with_capacity(VNET_HDR_LEN + packet.len());
        if self.offload {
            p.extend_from_slice(&[0; VNET_HDR_LEN]);
        }
        p.extend_from_slice(packet);
        self.inside.send(&p).unwrap();
    }

    /// Writes `packet` into the TUN stand-in behind `hdr` (offload only).
    pub fn write_inside_with(&self, hdr: &VnetHdr, packet: &[u8]) {
        assert!(
            self.offload,
            "a virtio_net_hdr for a server without offload"
        );
        let mut p = vec![0u8; VNET_HDR_LEN];
        hdr.emit(&mut p).unwrap();
        p.extend_from_slice(packet);
        self.inside.send(&p).unwrap();
    }

    /// Reads one packet the server wrote to the TUN; with offload, checks that it came
    /// behind a zero virtio_net_hdr (a single packet, not a superpacket).
    pub fn read_inside(&self) -> Vec<u8> {
        let (hdr, packet) = self.read_inside_offload();
        if let Some(hdr) = hdr {
            assert_eq!(hdr, VnetHdr::NONE, "a single packet came as a superpacket");
        }
        packet
    }

    /// Reads one write to the TUN: its virtio_net_hdr (with offload) and the packet.
    pub fn read_inside_offload(&self) -> (Option<VnetHdr>, Vec<u8>) {
        let mut buf = vec![0u8; 70_000];
        let n = self.inside.recv(&mut buf).unwrap();
        buf.truncate(n);
        if !self.offload {
            return (None, buf);
        }
        let hdr = VnetHdr::parse(&buf).expect("a write without a valid virtio_net_hdr");
        (Some(hdr), buf.split_off(VNET_HDR_LEN))
    }

    /// Asks the loop to stop and returns its counters, after checking that
    /// it stopped cleanly: every request completed (none was left to the
    /// shutdown grace period) and every buffer and tx slot is free.
    pub fn stop(self) -> (SessionCounters, IoCounters) {
        self.stop.send(b"x").unwrap();
        let s = self
            .done
            .recv_timeout(TIMEOUT)
            .expect("the driver did not stop (or its thread panicked)");
        let (mut buffers, mut large) = if self.offload {
            (TX_SLOTS as usize, (2 * RX_SLOTS + OFFLOAD_BUFFERS) as usize)
        } else {
            ((2 * RX_SLOTS + TX_SLOTS) as usize, 0)
        };
        if let Some(packets) = self.fq_packets {
            // One small buffer per slot of each direction's queue, and with offload
            // some large ones for queued superpackets (however many: all back in the
            // pool).
            buffers += 2 * packets as usize;
            if self.offload {
                assert!(
                    s.usage.large_buffers > large,
                    "no large buffers for the queue"
                );
                large = s.usage.large_buffers;
            }
        }
        let idle = RingUsage {
            in_flight: 0,
            free_buffers: buffers,
            buffers,
            free_large_buffers: large,
            large_buffers: large,
            free_tx_slots: TX_SLOTS as usize,
            tx_slots: TX_SLOTS as usize,
        };
        assert_eq!(
            s.usage, idle,
            "the loop stopped with work outstanding; {}",
            s.io
        );
        assert_eq!(s.io.unknown_completions, 0, "{}", s.io);
        (s.counters, s.io)
    }
}

/// The client's random source: a fixed byte per handshake is enough here.
pub struct Fixed(u8);

impl ringway_proto::Entropy for Fixed {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), ringway_proto::EntropyError> {
        dest.fill(self.0);
        Ok(())
    }
}

pub fn init(peer: u8, ts: u64) -> (ClientHandshake, [u8; INIT_LEN]) {
    let keys = ClientKeys {
        secret: peer_keys(peer).secret,
        server_public: server_keys().public,
        psk: None,
    };
    let mut buf = [0u8; INIT_LEN];
    let payload = InitPayload {
        timestamp: Timestamp { secs: ts, nanos: 0 },
        cipher: None,
    };
    let hs = ClientHandshake::initiate(&keys, payload, &mut Fixed(77), &mut buf).unwrap();
    (hs, buf)
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, len: usize, tag: u8) -> Vec<u8> {
    let mut p = vec![tag; len];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

pub fn seal(s: &mut Session, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; packet.len() + OVERHEAD];
    f[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
    let n = s
        .sealer
        .seal_data(&mut f, packet.len(), Instant::now())
        .unwrap();
    f.truncate(n);
    f
}

pub struct TcpClient {
    pub stream: TcpStream,
}

impl TcpClient {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        TcpClient { stream }
    }
    pub fn send(&mut self, frame: &[u8]) {
        let mut out = encode_prefix(frame.len()).unwrap().to_vec();
        out.extend_from_slice(frame);
        self.stream.write_all(&out).unwrap();
    }
    pub fn recv(&mut self) -> Vec<u8> {
        let mut len = [0u8; 2];
        self.stream.read_exact(&mut len).unwrap();
        let mut f = vec![0u8; u16::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut f).unwrap();
        f
    }
}

pub const SERVER_INNER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
