//! What `offload = auto | off` asks of the kernel, and what the kernel gave.
//!
//! With `IFF_VNET_HDR` every read from the TUN starts with a `struct virtio_net_hdr` and every
//! write must start with one; `TUNSETOFFLOAD` then tells the kernel which work it may leave to
//! us: checksums (`TUN_F_CSUM`), TCP segmentation (`TUN_F_TSO4/6`: one read can return a
//! superpacket of up to 64 KiB) and UDP segmentation (`TUN_F_USO4/6`, Linux 6.2+). Without the
//! header none of that is possible and each read is exactly one IP packet.
//!
//! The kernel answers each `TUNSETOFFLOAD` as a whole (unknown bits: EINVAL, nothing changed),
//! so [`enable`] asks for everything first and then for less. TSO without USO is still worth
//! having; without TSO the header would cost a copy for nothing, so the caller reopens the
//! device without it. The order and the fallbacks are decided here, behind [`OffloadIoctls`],
//! so they are tested without a kernel.
//!
//! ```text
//!  struct virtio_net_hdr (10 bytes, little-endian: we set TUNSETVNETLE)
//!  0        1        2                4                6                8               10
//!  +--------+--------+----------------+----------------+----------------+----------------+
//!  | flags  |gso_type|    hdr_len     |    gso_size    |   csum_start   |  csum_offset   |
//!  +--------+--------+----------------+----------------+----------------+----------------+
//! ```

use std::fmt;
use std::io;
use std::str::FromStr;

/// Length of the `virtio_net_hdr` in front of each packet when [`Offloads::vnet_hdr`] is on.
/// Set explicitly (`TUNSETVNETHDRSZ`), so a persistent device that someone configured with the
/// 12-byte variant cannot change the framing under us.
pub const VNET_HDR_LEN: usize = 10;

// linux/if_tun.h. Kernel ABI, so fixed; kept here (not from libc) so the bookkeeping below
// builds and is tested on every platform. A Linux test checks them against libc.
pub(crate) const TUN_F_CSUM: u32 = 0x01;
pub(crate) const TUN_F_TSO4: u32 = 0x02;
pub(crate) const TUN_F_TSO6: u32 = 0x04;
pub(crate) const TUN_F_USO4: u32 = 0x20;
pub(crate) const TUN_F_USO6: u32 = 0x40;
/// Checksum and TCP segmentation: TSO needs the checksum offload.
pub(crate) const TCP_OFFLOADS: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
/// UDP segmentation; the kernel takes the two only together.
pub(crate) const UDP_OFFLOADS: u32 = TUN_F_USO4 | TUN_F_USO6;

/// The offload mode asked for (`server.offload`, `ringway up --offload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offload {
    /// No `virtio_net_hdr`: each read and write is exactly one IP packet.
    Off,
    /// `IFF_VNET_HDR` with checksum and TSO offload, plus USO where the kernel has it; without
    /// TSO, falls back to [`Off`](Offload::Off) and says why in [`Offloads::refused`].
    #[default]
    Auto,
}

impl Offload {
    /// The config and command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Offload::Off => "off",
            Offload::Auto => "auto",
        }
    }
}

impl Offload {
    /// The mode to open with for a data path that does or does not handle the
    /// `virtio_net_hdr` yet: `self`, or [`Off`](Offload::Off) if it cannot, whatever was asked.
    pub fn for_data_path(self, handles_vnet_hdr: bool) -> Offload {
        if handles_vnet_hdr {
            self
        } else {
            Offload::Off
        }
    }

    /// The start-up line's value (after "TUN offload: "): what the device got and, when that
    /// is less than asked, why. `setting` names where the mode came from (`server.offload`).
    pub fn describe(self, setting: &str, handles_vnet_hdr: bool, got: &Offloads) -> String {
        match self {
            Offload::Off => format!("{got} ({setting} = off)"),
            Offload::Auto if !handles_vnet_hdr => format!(
                "{got} ({setting} = auto, but the data path does not handle virtio_net_hdr yet)"
            ),
            Offload::Auto => got.to_string(),
        }
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is neither `auto` nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown offload mode {0:?} (use \"auto\" or \"off\")")]
pub struct UnknownOffload(pub String);

impl FromStr for Offload {
    type Err = UnknownOffload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Offload::Auto),
            "off" => Ok(Offload::Off),
            _ => Err(UnknownOffload(s.to_owned())),
        }
    }
}

/// One step of turning offloads on; a [`Refused`] names the one the kernel said no to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadStep {
    /// `TUNSETVNETHDRSZ` to [`VNET_HDR_LEN`].
    HeaderLen,
    /// `TUNSETVNETLE`: header fields little-endian on every host.
    LittleEndian,
    /// `TUNSETOFFLOAD` with checksum and TSO4/6.
    Tso,
    /// `TUNSETOFFLOAD` with USO4/6 added.
    Uso,
}

impl fmt::Display for OffloadStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadStep::HeaderLen => "TUNSETVNETHDRSZ 10",
            OffloadStep::LittleEndian => "TUNSETVNETLE",
            OffloadStep::Tso => "TUNSETOFFLOAD csum+tso4/6",
            OffloadStep::Uso => "TUNSETOFFLOAD uso4/6",
        })
    }
}

/// The kernel's no to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// What was asked.
    pub step: OffloadStep,
    /// The errno it answered with (0 if there was none).
    pub errno: i32,
}

impl Refused {
    pub(crate) fn new(step: OffloadStep, e: &io::Error) -> Self {
        Refused {
            step,
            errno: e.raw_os_error().unwrap_or(0),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel refused {}: ", self.step)?;
        if self.errno == 0 {
            f.write_str("unknown error")
        } else {
            write!(f, "{}", io::Error::from_raw_os_error(self.errno))
        }
    }
}

/// What an open TUN really has. Its `Display` is the start-up log line's value:
/// `vnet_hdr+tso4/6+uso4/6`, `vnet_hdr+tso4/6 (no uso4/6: kernel refused ...)`, `off`, or
/// `off (kernel refused TUNSETOFFLOAD csum+tso4/6: ...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Every read and write carries a [`VNET_HDR_LEN`]-byte `virtio_net_hdr` first.
    pub vnet_hdr: bool,
    /// Checksum offload and TSO4/6: reads may be TCP superpackets with partial checksums.
    pub tso: bool,
    /// USO4/6: reads may be UDP superpackets.
    pub uso: bool,
    /// Why something [`Offload::Auto`] asks for is missing.
    pub refused: Option<Refused>,
}

impl Offloads {
    /// No header, nothing offloaded, nothing refused (what [`Offload::Off`] opens).
    pub const OFF: Offloads = Offloads {
        vnet_hdr: false,
        tso: false,
        uso: false,
        refused: None,
    };

    /// Bytes in front of every packet read or written: [`VNET_HDR_LEN`] or 0.
    pub fn header_len(&self) -> usize {
        if self.vnet_hdr {
            VNET_HDR_LEN
        } else {
            0
        }
    }
}

impl fmt::Display for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.vnet_hdr {
            f.write_str("off")?;
        } else {
            f.write_str("vnet_hdr")?;
            if self.tso {
                f.write_str("+tso4/6")?;
            }
            if self.uso {
                f.write_str("+uso4/6")?;
            }
        }
        match self.refused {
            Some(r) if self.vnet_hdr && r.step == OffloadStep::Uso => {
                write!(f, " (no uso4/6: {r})")
            }
            Some(r) => write!(f, " ({r})"),
            None => Ok(()),
        }
    }
}

/// The ioctls [`enable`] needs, on a descriptor opened with `IFF_VNET_HDR`.
pub(crate) trait OffloadIoctls {
    /// `TUNSETVNETHDRSZ`.
    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()>;
    /// `TUNSETVNETLE 1`.
    fn set_vnet_le(&mut self) -> io::Result<()>;
    /// `TUNSETOFFLOAD flags`.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

/// Turns on what [`Offload::Auto`] wants on a descriptor opened with `IFF_VNET_HDR`: the
/// header length and byte order, then checksum + TSO + USO, or checksum + TSO if the kernel
/// refuses USO. `Err` if a step short of TSO is refused: the caller then reopens without the
/// header and reports the refusal.
pub(crate) fn enable(dev: &mut impl OffloadIoctls) -> Result<Offloads, Refused> {
    dev.set_vnet_hdr_len(VNET_HDR_LEN)
        .map_err(|e| Refused::new(OffloadStep::HeaderLen, &e))?;
    dev.set_vnet_le()
        .map_err(|e| Refused::new(OffloadStep::LittleEndian, &e))?;
    let uso_refused = match dev.set_offload(TCP_OFFLOADS | UDP_OFFLOADS) {
        Ok(()) => None,
        Err(e) => Some(Refused::new(OffloadStep::Uso, &e)),
    };
    if uso_refused.is_some() {
        dev.set_offload(TCP_OFFLOADS)
            .map_err(|e| Refused::new(OffloadStep::Tso, &e))?;
    }
    Ok(Offloads {
        vnet_hdr: true,
        tso: true,
        uso: uso_refused.is_none(),
        refused: uso_refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EINVAL: i32 = 22;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Call {
        HeaderLen(usize),
        Le,
        Offload(u32),
    }

    /// A kernel that accepts every offload mask `accepts` says yes to.
    struct FakeTun {
        calls: Vec<Call>,
        accepts: fn(&Call) -> bool,
    }

    impl FakeTun {
        fn answer(&mut self, call: Call) -> io::Result<()> {
            self.calls.push(call);
            if (self.accepts)(&call) {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(EINVAL))
            }
        }
    }

    impl OffloadIoctls for FakeTun {
        fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()> {
            self.answer(Call::HeaderLen(len))
        }
        fn set_vnet_le(&mut self) -> io::Result<()> {
            self.answer(Call::Le)
        }
        fn set_offload(&mut self, flags: u32) -> io::Result<()> {
            self.answer(Call::Offload(flags))
        }
    }

    fn run(accepts: fn(&Call) -> bool) -> (Result<Offloads, Refused>, Vec<Call>) {
        let mut tun = FakeTun {
            calls: Vec::new(),
            accepts,
        };
        let r = enable(&mut tun);
        (r, tun.calls)
    }

    fn einval() -> String {
        io::Error::from_raw_os_error(EINVAL).to_string()
    }

    #[test]
    fn a_kernel_with_everything_gets_everything_in_one_call() {
        let (r, calls) = run(|_| true);
        assert_eq!(
            calls,
            [
                Call::HeaderLen(10),
                Call::Le,
                Call::Offload(0x01 | 0x02 | 0x04 | 0x20 | 0x40)
            ]
        );
        let o = r.unwrap();
        assert_eq!(
            o,
            Offloads {
                vnet_hdr: true,
                tso: true,
                uso: true,
                refused: None
            }
        );
        assert_eq!(o.to_string(), "vnet_hdr+tso4/6+uso4/6");
        assert_eq!(o.header_len(), VNET_HDR_LEN);
    }

    #[test]
    fn a_kernel_without_uso_keeps_tso_and_says_why() {
        // Before Linux 6.2: the USO bits are unknown, so the whole mask is refused.
        let (r, calls) = run(|c| !matches!(c, Call::Offload(f) if f & UDP_OFFLOADS != 0));
        assert_eq!(
            calls,
            [
                Call::HeaderLen(10),
                Call::Le,
                Call::Offload(TCP_OFFLOADS | UDP_OFFLOADS),
                Call::Offload(TCP_OFFLOADS)
            ]
        );
        let o = r.unwrap();
        assert!(o.vnet_hdr && o.tso && !o.uso, "{o:?}");
        assert_eq!(
            o.refused,
            Some(Refused {
                step: OffloadStep::Uso,
                errno: EINVAL
            })
        );
        assert_eq!(
            o.to_string(),
            format!(
                "vnet_hdr+tso4/6 (no uso4/6: kernel refused TUNSETOFFLOAD uso4/6: {})",
                einval()
            )
        );
    }

    #[test]
    fn a_kernel_without_tso_is_refused_so_the_caller_reopens_without_the_header() {
        let (r, calls) = run(|c| !matches!(c, Call::Offload(_)));
        assert_eq!(calls.len(), 4, "{calls:?}");
        let refused = r.unwrap_err();
        assert_eq!(refused.step, OffloadStep::Tso);
        let o = Offloads {
            refused: Some(refused),
            ..Offloads::OFF
        };
        assert_eq!(o.header_len(), 0);
        assert_eq!(
            o.to_string(),
            format!(
                "off (kernel refused TUNSETOFFLOAD csum+tso4/6: {})",
                einval()
            )
        );
    }

    #[test]
    fn a_refused_header_setting_stops_before_any_offload() {
        let (r, calls) = run(|c| *c != Call::Le);
        assert_eq!(calls, [Call::HeaderLen(10), Call::Le]);
        assert_eq!(r.unwrap_err().step, OffloadStep::LittleEndian);
        let (r, calls) = run(|c| !matches!(c, Call::HeaderLen(_)));
        assert_eq!(calls, [Call::HeaderLen(10)]);
        assert_eq!(r.unwrap_err().step, OffloadStep::HeaderLen);
    }

    #[test]
    fn off_says_off() {
        assert_eq!(Offloads::OFF.to_string(), "off");
        assert_eq!(Offloads::OFF.header_len(), 0);
        assert_eq!(Offloads::default(), Offloads::OFF);
        let r = Refused {
            step: OffloadStep::Tso,
            errno: 0,
        };
        assert_eq!(
            r.to_string(),
            "kernel refused TUNSETOFFLOAD csum+tso4/6: unknown error"
        );
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [Offload::Auto, Offload::Off] {
            assert_eq!(m.as_str().parse::<Offload>(), Ok(m));
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(Offload::default(), Offload::Auto);
        for bad in ["", "on", "Auto", " off", "tso"] {
            let e = bad.parse::<Offload>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("unknown offload mode {bad:?} (use \"auto\" or \"off\")")
            );
        }
    }

    #[test]
    fn offload_stays_off_for_a_data_path_without_the_header() {
        assert_eq!(Offload::Auto.for_data_path(false), Offload::Off);
        assert_eq!(Offload::Off.for_data_path(false), Offload::Off);
        assert_eq!(Offload::Auto.for_data_path(true), Offload::Auto);
        assert_eq!(Offload::Off.for_data_path(true), Offload::Off);
    }

    #[test]
    fn the_start_up_line_says_why_offload_is_off() {
        let off = Offloads::OFF;
        assert_eq!(
            Offload::Auto.describe("server.offload", false, &off),
            "off (server.offload = auto, but the data path does not handle virtio_net_hdr yet)"
        );
        assert_eq!(
            Offload::Off.describe("--offload", true, &off),
            "off (--offload = off)"
        );
        let all = Offloads {
            vnet_hdr: true,
            tso: true,
            uso: true,
            refused: None,
        };
        assert_eq!(
            Offload::Auto.describe("server.offload", true, &all),
            "vnet_hdr+tso4/6+uso4/6"
        );
        let refused = Offloads {
            refused: Some(Refused {
                step: OffloadStep::Tso,
                errno: EINVAL,
            }),
            ..Offloads::OFF
        };
        assert!(Offload::Auto
            .describe("server.offload", true, &refused)
            .starts_with("off (kernel refused TUNSETOFFLOAD csum+tso4/6: "));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn flags_match_the_kernel_headers() {
        assert_eq!(TUN_F_CSUM, libc::TUN_F_CSUM);
        assert_eq!(TUN_F_TSO4, libc::TUN_F_TSO4);
        assert_eq!(TUN_F_TSO6, libc::TUN_F_TSO6);
        assert_eq!(TUN_F_USO4, libc::TUN_F_USO4);
        assert_eq!(TUN_F_USO6, libc::TUN_F_USO6);
    }
}
