//! The real io_uring driver, in process, without root: a Unix datagram
//! socketpair stands in for the TUN (it keeps packet boundaries like a TUN
//! does), UDP and TCP listen on 127.0.0.1, and clients are built from
//! ringway-proto. This exercises the ring code paths (slots, buffers, TCP
//! reassembly and send queues, teardown) that the namespace tests cover only
//! as root.
//!
//! Timing: every wait is for an event (a packet, a reply, a close) with a
//! generous bound, never a sleep; bounds are far above the server's own
//! deadlines, and why a connection was closed is read from the counters, not
//! from how fast it happened. Every test ends by stopping the loop and checking
//! that nothing is left in flight and every buffer is back.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::{InitPayload, Keypair, Timestamp};
use ringway_proto::wire::handshake::{INIT_LEN, RESP_LEN};
use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::transport::{HEADER_LEN, OVERHEAD};
use ringway_proto::wire::FrameType;
use ringway_proto::{Cipher, Session};
use ringway_server::config::{Peer, Settings, TcpSection, UringSection};
use ringway_server::metrics::{IoCounters, SessionCounters};
use ringway_server::outside::tcp::listener::Listener;
use ringway_server::outside::udp::Udp;
use ringway_server::sessions::Sessions;
use ringway_server::uring::{Driver, Fds, RingUsage, TcpLimits, Tunables};

/// Bound on any one wait for the server: far above anything it should take,
/// so only a hang fails it.
const TIMEOUT: Duration = Duration::from_secs(30);
const TX_SLOTS: u32 = 64;
const RX_SLOTS: u32 = 8;

fn server_keys() -> Keypair {
    Keypair::from_random([11; 32])
}

fn peer_keys(i: u8) -> Keypair {
    Keypair::from_random([20 + i; 32])
}

struct Server {
    udp: SocketAddr,
    tcp: SocketAddr,
    /// The TUN stand-in's other end.
    inside: UnixDatagram,
    stop: UnixDatagram,
    done: mpsc::Receiver<Stopped>,
}

/// What the loop left behind.
struct Stopped {
    counters: SessionCounters,
    io: IoCounters,
    usage: RingUsage,
}

/// What a test may change about the server.
struct Options {
    peers: u8,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            peers: 1,
            handshake_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(180),
            max_connections: 300,
        }
    }
}

impl Server {
    fn start(o: Options) -> Server {
        let Options {
            peers,
            handshake_timeout,
            idle_timeout,
            max_connections,
        } = o;
        let (tun_ours, inside) = UnixDatagram::pair().unwrap();
        // Non-blocking, as the server's TUN is by default: idle reads may
        // complete with EAGAIN and park on the readiness poll (how often
        // depends on timing, so no test asserts on it).
        tun_ours.set_nonblocking(true).unwrap();
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
            addr_tx
                .send((udp.local_addr().unwrap(), tcp.local_addr().unwrap()))
                .unwrap();
            let tunables = Tunables {
                ring_entries: 256,
                tun_rx_slots: RX_SLOTS,
                udp_rx_slots: RX_SLOTS,
                tx_slots: TX_SLOTS,
                sqpoll_idle_ms: 0,
            };
            let limits = TcpLimits {
                max_connections,
                handshake_timeout,
                send_queue_bytes: 64 * 1024,
                rx_buffer_bytes: 4096,
                max_frame: 1420 + OVERHEAD,
                socket_send_buffer: 0,
                socket_recv_buffer: 0,
                idle_timeout,
            };
            let fds = Fds {
                tun: tun_ours.as_raw_fd(),
                udp: Some(udp.fd()),
                tcp_listener: Some(tcp.fd()),
                signal: stop_theirs.as_raw_fd(),
            };
            let mut driver =
                Driver::new(&tunables, limits, 1420, fds, Sessions::new(&settings)).unwrap();
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
        let (udp, tcp) = addr_rx.recv_timeout(TIMEOUT).unwrap();
        Server {
            udp,
            tcp,
            inside,
            stop,
            done,
        }
    }

    /// Asks the loop to stop and returns its counters, after checking that
    /// it stopped cleanly: every request completed (none was left to the
    /// shutdown grace period) and every buffer and tx slot is free.
    fn stop(self) -> (SessionCounters, IoCounters) {
        self.stop.send(b"x").unwrap();
        let s = self
            .done
            .recv_timeout(TIMEOUT)
            .expect("the driver did not stop (or its thread panicked)");
        let buffers = (2 * RX_SLOTS + TX_SLOTS) as usize;
        let idle = RingUsage {
            in_flight: 0,
            free_buffers: buffers,
            buffers,
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
struct Fixed(u8);

impl ringway_proto::Entropy for Fixed {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), ringway_proto::EntropyError> {
        dest.fill(self.0);
        Ok(())
    }
}

fn init(peer: u8, ts: u64) -> (ClientHandshake, [u8; INIT_LEN]) {
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

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, len: usize, tag: u8) -> Vec<u8> {
    let mut p = vec![tag; len];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn seal(s: &mut Session, packet: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; packet.len() + OVERHEAD];
    f[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
    let n = s
        .sealer
        .seal_data(&mut f, packet.len(), Instant::now())
        .unwrap();
    f.truncate(n);
    f
}

struct TcpClient {
    stream: TcpStream,
}

impl TcpClient {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        TcpClient { stream }
    }
    fn send(&mut self, frame: &[u8]) {
        let mut out = encode_prefix(frame.len()).unwrap().to_vec();
        out.extend_from_slice(frame);
        self.stream.write_all(&out).unwrap();
    }
    fn recv(&mut self) -> Vec<u8> {
        let mut len = [0u8; 2];
        self.stream.read_exact(&mut len).unwrap();
        let mut f = vec![0u8; u16::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut f).unwrap();
        f
    }
}

const SERVER_INNER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

#[test]
fn udp_and_tcp_clients_pass_packets_both_ways_at_once() {
    let server = Server::start(Options {
        peers: 2,
        ..Options::default()
    });

    // UDP client (peer 0).
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut hs, frame) = init(0, 1);
    udp.send_to(&frame, server.udp).unwrap();
    let mut resp = [0u8; 2048];
    let n = udp.recv(&mut resp).unwrap();
    assert_eq!(n, RESP_LEN);
    let (mut u, ucfg) = hs.handle_response(&resp[..n], Instant::now()).unwrap();

    // TCP client (peer 1).
    let mut tcp = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(1, 1);
    tcp.send(&frame);
    let resp = tcp.recv();
    let (mut t, tcfg) = hs.handle_response(&resp, Instant::now()).unwrap();
    assert_ne!(ucfg.client_addr, tcfg.client_addr);

    let mut buf = vec![0u8; 4096];
    for round in 0..200u32 {
        let tag = round as u8;
        // Outside to inside, each client.
        for (sess, cfg, is_tcp) in [(&mut u, &ucfg, false), (&mut t, &tcfg, true)] {
            let pkt = ipv4(
                cfg.client_addr,
                SERVER_INNER,
                100 + (round as usize % 1200),
                tag,
            );
            let f = seal(sess, &pkt);
            if is_tcp {
                tcp.send(&f);
            } else {
                udp.send_to(&f, server.udp).unwrap();
            }
            let n = server.inside.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &pkt[..], "round {round} tcp={is_tcp}");
        }
        // Inside to outside, each client.
        for (sess, cfg, is_tcp) in [(&mut u, &ucfg, false), (&mut t, &tcfg, true)] {
            let pkt = ipv4(
                SERVER_INNER,
                cfg.client_addr,
                60 + (round as usize % 1300),
                tag,
            );
            server.inside.send(&pkt).unwrap();
            let mut f = if is_tcp {
                tcp.recv()
            } else {
                let n = udp.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            };
            let opened = sess.opener.open(&mut f, Instant::now()).unwrap();
            assert_eq!(opened.kind, FrameType::Data);
            assert_eq!(&f[opened.payload], &pkt[..], "round {round} tcp={is_tcp}");
        }
    }
    let (counters, io) = server.stop();
    assert_eq!(counters.handshakes, 2);
    assert_eq!(counters.inside_tx_packets, 400);
    assert_eq!(counters.inside_rx_packets, 400);
    assert_eq!(io.tcp_accepted, 1);
}

#[test]
fn tcp_frames_split_and_packed_across_reads() {
    let server = Server::start(Options::default());
    let mut tcp = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    tcp.send(&frame);
    let (mut s, cfg) = hs.handle_response(&tcp.recv(), Instant::now()).unwrap();
    // 50 frames in one stream, written in awkward chunk sizes.
    let mut stream = Vec::new();
    let mut packets = Vec::new();
    let mut ends = Vec::new();
    for i in 0..50u8 {
        let pkt = ipv4(cfg.client_addr, SERVER_INNER, 40 + i as usize * 20, i);
        let f = seal(&mut s, &pkt);
        stream.extend_from_slice(&encode_prefix(f.len()).unwrap());
        stream.extend_from_slice(&f);
        packets.push(pkt);
        ends.push(stream.len());
    }
    // After each chunk, wait for every packet it completed: the server has
    // then read up to there, so the next chunk arrives in a later read and
    // frames split across chunks are reassembled across reads.
    let mut buf = vec![0u8; 4096];
    let mut next = 0;
    let mut written = 0;
    for chunk in stream.chunks(777) {
        tcp.stream.write_all(chunk).unwrap();
        written += chunk.len();
        while next < packets.len() && ends[next] <= written {
            let n = server.inside.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &packets[next][..], "packet {next}");
            next += 1;
        }
    }
    assert_eq!(next, packets.len());
    let (counters, io) = server.stop();
    assert_eq!(counters.inside_tx_packets, 50);
    assert_eq!(io.tcp_closed_garbage, 0, "{io}");
}

/// Whether the server closes `stream` within `limit`. The limits tests use are
/// far above the server's deadlines: they catch a connection never closed,
/// and the counters say why one was.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut b = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn bad_tcp_peers_are_closed_and_good_ones_keep_working() {
    let server = Server::start(Options {
        handshake_timeout: Duration::from_secs(1),
        ..Options::default()
    });
    // Garbage: closed at once.
    let mut garbage = TcpStream::connect(server.tcp).unwrap();
    garbage.write_all(&[0xffu8; 4096]).unwrap();
    // A zero length, then an oversized one.
    let mut zero = TcpStream::connect(server.tcp).unwrap();
    zero.write_all(&[0, 0, 1, 2]).unwrap();
    let mut huge = TcpStream::connect(server.tcp).unwrap();
    huge.write_all(&[0xff, 0xff]).unwrap();
    // A valid prefix, then a stall mid-frame: closed at the handshake deadline.
    let mut stall = TcpStream::connect(server.tcp).unwrap();
    stall.write_all(&[0, 100, 1, 2, 3]).unwrap();
    // Silent connections.
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.tcp).unwrap())
        .collect();

    // Meanwhile a good client works.
    let mut good = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    good.send(&frame);
    let (mut s, cfg) = hs.handle_response(&good.recv(), Instant::now()).unwrap();

    for (name, c) in [
        ("garbage", &mut garbage),
        ("zero", &mut zero),
        ("huge", &mut huge),
        ("stall", &mut stall),
    ] {
        assert!(closed_within(c, TIMEOUT), "{name} was not closed");
    }
    for c in &mut idle {
        assert!(
            closed_within(c, TIMEOUT),
            "a silent connection was not closed"
        );
    }
    // Well past its own handshake deadline, the good client still works.
    let pkt = ipv4(cfg.client_addr, SERVER_INNER, 300, 9);
    good.send(&seal(&mut s, &pkt));
    let mut buf = vec![0u8; 2048];
    let n = server.inside.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &pkt[..]);
    let (_, io) = server.stop();
    // The three bad streams for what they sent; the stall and the silent ones
    // by the handshake deadline; the good one by none.
    assert_eq!(io.tcp_closed_garbage, 3, "{io}");
    assert_eq!(io.tcp_closed_handshake_timeout, 51, "{io}");
    assert_eq!(io.tcp_accepted, 55, "{io}");
}

/// Connects and waits for the server's answer to an initiation from a key it
/// does not know (a reject): proof the connection was accepted and read.
fn connect_and_get_rejected(addr: SocketAddr) -> TcpClient {
    let mut c = TcpClient::connect(addr);
    let (_, frame) = init(UNKNOWN_PEER, 1);
    c.send(&frame);
    let reply = c.recv();
    assert_eq!(
        ringway_proto::wire::frame_type(&reply),
        Ok(FrameType::HandshakeReject)
    );
    c
}

/// A peer index no server in these tests lists.
const UNKNOWN_PEER: u8 = 200;

#[test]
fn tcp_connection_cap_refuses_cleanly() {
    let cap = 32;
    let server = Server::start(Options {
        max_connections: cap,
        ..Options::default()
    });
    // Each held connection is accepted and answered before the next opens.
    let held: Vec<TcpClient> = (0..cap)
        .map(|_| connect_and_get_rejected(server.tcp))
        .collect();
    // One more is accepted and closed at once.
    let mut extra = TcpStream::connect(server.tcp).unwrap();
    assert!(
        closed_within(&mut extra, TIMEOUT),
        "the connection over the cap stayed open"
    );
    let (counters, io) = server.stop();
    assert_eq!(io.tcp_refused, 1, "{io}");
    assert_eq!(io.tcp_accepted, u64::from(cap), "{io}");
    assert_eq!(counters.drop_unknown_peer, u64::from(cap));
    // None of the accepted ones was closed before the shutdown.
    let closed = io.tcp_closed_garbage
        + io.tcp_closed_handshake_timeout
        + io.tcp_closed_by_peer
        + io.tcp_closed_error
        + io.tcp_closed_idle;
    assert_eq!(closed, 0, "{io}");
    drop(held);
}

#[test]
fn stops_cleanly_with_requests_in_flight() {
    let server = Server::start(Options::default());
    // Twenty connections, each with a receive in flight and one reply sent;
    // a UDP datagram answered too.
    let _conns: Vec<TcpClient> = (0..20)
        .map(|_| connect_and_get_rejected(server.tcp))
        .collect();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (_, frame) = init(UNKNOWN_PEER, 1);
    udp.send_to(&frame, server.udp).unwrap();
    let mut reply = [0u8; 64];
    let n = udp.recv(&mut reply).unwrap();
    assert_eq!(
        ringway_proto::wire::frame_type(&reply[..n]),
        Ok(FrameType::HandshakeReject)
    );
    // `stop` checks that nothing is left in flight and every buffer is back.
    let (counters, io) = server.stop();
    assert_eq!(counters.drop_unknown_peer, 21);
    assert_eq!((io.tcp_accepted, io.udp_tx_frames), (20, 1), "{io}");
}

#[test]
fn tcp_connection_left_behind_by_its_session_is_closed_when_idle() {
    let server = Server::start(Options {
        idle_timeout: Duration::from_secs(2),
        ..Options::default()
    });
    // Handshake on A, then again on B: the session moves to B and A goes quiet.
    let mut a = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    a.send(&frame);
    hs.handle_response(&a.recv(), Instant::now()).unwrap();
    let mut b = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 2);
    b.send(&frame);
    let (mut s, cfg) = hs.handle_response(&b.recv(), Instant::now()).unwrap();
    // B stays busy; A is closed once silent for the idle timeout (2 s, checked
    // each second). The bound only catches a connection never closed.
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; 2048];
    a.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut a_closed = false;
    while Instant::now() < deadline && !a_closed {
        let pkt = ipv4(cfg.client_addr, SERVER_INNER, 64, 1);
        b.send(&seal(&mut s, &pkt));
        server.inside.recv(&mut buf).unwrap();
        let mut one = [0u8; 1];
        a_closed = matches!(a.stream.read(&mut one), Ok(0));
    }
    assert!(a_closed, "the abandoned connection was not closed");
    let (_, io) = server.stop();
    assert_eq!(io.tcp_closed_idle, 1, "{io}");
}
