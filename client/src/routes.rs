//! Which routes `ringway up` adds, and taking every one of them away again.
//!
//! Split tunnel (the default) routes only what the server or the config
//! names: the tunnel subnet comes with the TUN's address, and each of the
//! config's `routes` is added through the TUN. Full tunnel sends everything
//! through the TUN without touching the default route, WireGuard-style, with
//! two halves that are more specific than any default:
//!
//! ```text
//!  <server>/32  via <outside gateway> dev <outside dev>   keeps the tunnel's own packets outside
//!  0.0.0.0/1    dev <tun>
//!  128.0.0.0/1  dev <tun>
//! ```
//!
//! The server's host route goes first, looked up before anything changed, so
//! that at no point does the path to the server lead into the tunnel. A split
//! tunnel whose `routes` cover the server gets the same host route.
//!
//! [`RouteTable`] records each route once the system accepted it and removes
//! them newest first: on a normal stop, on a signal and on an error. Routes
//! through the TUN would vanish with it anyway, but the server's host route
//! lives on the outside interface and would not. The system calls sit behind
//! [`RouteOps`], implemented per platform in [`crate::platform`], so the
//! bookkeeping is tested without root.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::platform::TunError;

/// An IPv4 prefix such as `10.0.0.0/8`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The prefix `addr/prefix_len`; `None` if the length is over 32 or host
    /// bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len > 32 || u32::from(addr) & !mask(prefix_len) != 0 {
            return None;
        }
        Some(Ipv4Cidr { addr, prefix_len })
    }

    /// The single address `addr/32`.
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Cidr {
            addr,
            prefix_len: 32,
        }
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.addr)
    }
}

/// The netmask of a prefix length (at most 32).
fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    /// `a.b.c.d/n`, or a bare address as `/32`. The reasons name what is
    /// wrong and suggest the fix.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 prefix (expected e.g. \"10.0.0.0/8\")"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|&n| n <= 32)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length (0 to 32)"))?;
        Ipv4Cidr::new(addr, len).ok_or_else(|| {
            let network = Ipv4Addr::from(u32::from(addr) & mask(len));
            format!("{s:?} has host bits set (did you mean \"{network}/{len}\"?)")
        })
    }
}

/// One route: a destination and how to get there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Where it leads.
    pub dest: Ipv4Cidr,
    /// The next hop, or `None` for a directly connected destination.
    pub via: Option<Ipv4Addr>,
    /// The interface.
    pub dev: String,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dest)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        write!(f, " dev {}", self.dev)
    }
}

/// How the system reaches an address right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsidePath {
    /// The gateway, if the address is not on a directly connected network.
    pub via: Option<Ipv4Addr>,
    /// The interface.
    pub dev: String,
}

/// The system calls behind [`RouteTable`].
pub trait RouteOps {
    /// How packets to `dst` leave now.
    fn lookup(&mut self, dst: Ipv4Addr) -> Result<OutsidePath, TunError>;
    /// Adds `route`; [`TunError::AlreadyExists`] if it is already there.
    fn add(&mut self, route: &Route) -> Result<(), TunError>;
    /// Removes `route`.
    fn delete(&mut self, route: &Route) -> Result<(), TunError>;
}

/// What to route through the tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Send everything through the TUN (keeping the server's own route outside).
    pub full_tunnel: bool,
    /// Extra prefixes to send through the TUN (the config's `routes`).
    pub extra: Vec<Ipv4Cidr>,
}

/// The two halves of the IPv4 space that together beat any default route.
pub const FULL_TUNNEL_HALVES: [&str; 2] = ["0.0.0.0/1", "128.0.0.0/1"];

/// Routes this process added, removed newest first by [`RouteTable::remove_all`].
#[derive(Debug)]
pub struct RouteTable<O: RouteOps> {
    ops: O,
    added: Vec<Route>,
    /// The path to the server found before full-tunnel routes went in.
    outside: Option<OutsidePath>,
}

impl<O: RouteOps> RouteTable<O> {
    /// An empty table adding and removing through `ops`.
    pub fn new(ops: O) -> Self {
        RouteTable {
            ops,
            added: Vec::new(),
            outside: None,
        }
    }

    /// Adds what `plan` asks for, for the TUN `tun` and the server at `server`
    /// (`None` for a server reached over IPv6, which the IPv4 routes do not
    /// affect). On error, the routes added so far stay recorded, so
    /// [`remove_all`](Self::remove_all) still takes them away.
    pub fn apply(
        &mut self,
        plan: &RoutePlan,
        tun: &str,
        server: Option<Ipv4Addr>,
    ) -> Result<(), TunError> {
        // Anything that would send the server itself into the tunnel needs
        // the server's own route pinned first.
        if let Some(server) = server {
            if plan.full_tunnel || plan.extra.iter().any(|r| r.contains(server)) {
                self.add_server_route(server, tun)?;
            }
        }
        if plan.full_tunnel {
            for half in FULL_TUNNEL_HALVES {
                let dest = half.parse().map_err(|e: String| TunError::Invalid(e))?;
                self.add(Route {
                    dest,
                    via: None,
                    dev: tun.to_owned(),
                })?;
            }
        }
        for &dest in &plan.extra {
            self.add(Route {
                dest,
                via: None,
                dev: tun.to_owned(),
            })?;
        }
        Ok(())
    }

    /// Pins the route to `server` to the way it leaves now: a host route via
    /// the current gateway and interface. Looked up once; later servers (a
    /// new address after a reconnect) reuse that path, since by then the
    /// lookup would find the tunnel.
    pub fn add_server_route(&mut self, server: Ipv4Addr, tun: &str) -> Result<(), TunError> {
        let dest = Ipv4Cidr::host(server);
        if self.added.iter().any(|r| r.dest == dest) {
            return Ok(());
        }
        let outside = match &self.outside {
            Some(path) => path.clone(),
            None => {
                let path = self.ops.lookup(server)?;
                if path.dev == tun {
                    return Err(TunError::Invalid(format!(
                        "the route to the server {server} already leads into {tun}"
                    )));
                }
                self.outside = Some(path.clone());
                path
            }
        };
        self.add(Route {
            dest,
            via: outside.via,
            dev: outside.dev,
        })
    }

    /// Adds one route and records it.
    pub fn add(&mut self, route: Route) -> Result<(), TunError> {
        self.ops.add(&route)?;
        tracing::info!(route = %route, "added route");
        self.added.push(route);
        Ok(())
    }

    /// The routes added and not yet removed, oldest first.
    pub fn added(&self) -> &[Route] {
        &self.added
    }

    /// Removes every recorded route, newest first, carrying on past failures
    /// (a route through a TUN that is already gone fails harmlessly), and
    /// returns those that failed.
    pub fn remove_all(&mut self) -> Vec<(Route, TunError)> {
        let mut failed = Vec::new();
        while let Some(route) = self.added.pop() {
            match self.ops.delete(&route) {
                Ok(()) => tracing::info!(route = %route, "removed route"),
                Err(e) => {
                    tracing::debug!(route = %route, error = %e, "could not remove route");
                    failed.push((route, e));
                }
            }
        }
        failed
    }
}

impl<O: RouteOps> Drop for RouteTable<O> {
    /// Whatever path the process leaves by, nothing it added stays behind.
    fn drop(&mut self) {
        for (route, e) in self.remove_all() {
            tracing::warn!(route = %route, "could not remove route: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A routing table in memory, logging every call.
    #[derive(Debug, Default, Clone)]
    struct Fake {
        log: Rc<RefCell<Vec<String>>>,
        table: Rc<RefCell<Vec<Route>>>,
        fail_add: Option<&'static str>,
    }

    impl RouteOps for Fake {
        fn lookup(&mut self, dst: Ipv4Addr) -> Result<OutsidePath, TunError> {
            self.log.borrow_mut().push(format!("get {dst}"));
            Ok(OutsidePath {
                via: Some(Ipv4Addr::new(192, 0, 2, 254)),
                dev: "eth0".into(),
            })
        }
        fn add(&mut self, route: &Route) -> Result<(), TunError> {
            if self.fail_add == Some(&*route.dest.to_string()) {
                return Err(TunError::AlreadyExists {
                    what: route.to_string(),
                });
            }
            self.log.borrow_mut().push(format!("add {route}"));
            self.table.borrow_mut().push(route.clone());
            Ok(())
        }
        fn delete(&mut self, route: &Route) -> Result<(), TunError> {
            self.log.borrow_mut().push(format!("del {route}"));
            let mut t = self.table.borrow_mut();
            let at = t.iter().position(|r| r == route).ok_or(TunError::Command {
                command: format!("ip route del {route}"),
                detail: "No such process".into(),
            })?;
            t.remove(at);
            Ok(())
        }
    }

    fn server() -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(203, 0, 113, 5))
    }

    #[test]
    fn cidrs_parse_and_explain() {
        let c: Ipv4Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(Ipv4Addr::new(10, 9, 8, 7)));
        assert!(!c.contains(Ipv4Addr::new(11, 0, 0, 0)));
        assert_eq!("192.0.2.7".parse::<Ipv4Cidr>().unwrap().prefix_len(), 32);
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().prefix_len(), 0);
        let e = "10.1.2.3/8".parse::<Ipv4Cidr>().unwrap_err();
        assert!(e.contains("did you mean \"10.0.0.0/8\""), "{e}");
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Cidr>().is_err());
        assert!("2001:db8::/32".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn split_tunnel_adds_only_the_extra_routes() {
        let fake = Fake::default();
        let mut t = RouteTable::new(fake.clone());
        let plan = RoutePlan {
            full_tunnel: false,
            extra: vec!["10.0.0.0/8".parse().unwrap()],
        };
        t.apply(&plan, "rw0", server()).unwrap();
        assert_eq!(*fake.log.borrow(), ["add 10.0.0.0/8 dev rw0"]);
        drop(t);
        assert!(fake.table.borrow().is_empty());
    }

    #[test]
    fn a_split_route_covering_the_server_pins_it_too() {
        let fake = Fake::default();
        let mut t = RouteTable::new(fake.clone());
        let plan = RoutePlan {
            full_tunnel: false,
            extra: vec!["203.0.113.0/24".parse().unwrap()],
        };
        t.apply(&plan, "rw0", server()).unwrap();
        assert_eq!(
            *fake.log.borrow(),
            [
                "get 203.0.113.5",
                "add 203.0.113.5/32 via 192.0.2.254 dev eth0",
                "add 203.0.113.0/24 dev rw0"
            ]
        );
    }

    #[test]
    fn full_tunnel_pins_the_server_first_and_removes_everything_newest_first() {
        let fake = Fake::default();
        let mut t = RouteTable::new(fake.clone());
        let plan = RoutePlan {
            full_tunnel: true,
            extra: vec!["172.16.0.0/12".parse().unwrap()],
        };
        t.apply(&plan, "rw0", server()).unwrap();
        assert_eq!(t.added().len(), 4);
        // A reconnect to the same server adds nothing; a new address reuses the path.
        t.add_server_route(Ipv4Addr::new(203, 0, 113, 5), "rw0")
            .unwrap();
        t.add_server_route(Ipv4Addr::new(203, 0, 113, 6), "rw0")
            .unwrap();
        assert!(t.remove_all().is_empty());
        assert_eq!(
            *fake.log.borrow(),
            [
                "get 203.0.113.5",
                "add 203.0.113.5/32 via 192.0.2.254 dev eth0",
                "add 0.0.0.0/1 dev rw0",
                "add 128.0.0.0/1 dev rw0",
                "add 172.16.0.0/12 dev rw0",
                "add 203.0.113.6/32 via 192.0.2.254 dev eth0",
                "del 203.0.113.6/32 via 192.0.2.254 dev eth0",
                "del 172.16.0.0/12 dev rw0",
                "del 128.0.0.0/1 dev rw0",
                "del 0.0.0.0/1 dev rw0",
                "del 203.0.113.5/32 via 192.0.2.254 dev eth0",
            ]
        );
        assert!(fake.table.borrow().is_empty());
        // Removing twice does nothing.
        assert!(t.remove_all().is_empty());
    }

    #[test]
    fn a_failure_midway_still_removes_what_went_in() {
        let fake = Fake {
            fail_add: Some("128.0.0.0/1"),
            ..Fake::default()
        };
        let mut t = RouteTable::new(fake.clone());
        let plan = RoutePlan {
            full_tunnel: true,
            extra: vec![],
        };
        let e = t.apply(&plan, "rw0", server()).unwrap_err();
        assert!(matches!(e, TunError::AlreadyExists { .. }), "{e}");
        assert_eq!(fake.table.borrow().len(), 2);
        drop(t);
        assert!(fake.table.borrow().is_empty(), "{:?}", fake.table.borrow());
    }

    #[test]
    fn removal_carries_on_past_failures() {
        let fake = Fake::default();
        let mut t = RouteTable::new(fake.clone());
        let plan = RoutePlan {
            full_tunnel: true,
            extra: vec![],
        };
        t.apply(&plan, "rw0", server()).unwrap();
        // The TUN went away and took its routes with it.
        fake.table.borrow_mut().retain(|r| r.dev != "rw0");
        let failed = t.remove_all();
        assert_eq!(failed.len(), 2);
        assert!(fake.table.borrow().is_empty());
    }

    #[test]
    fn ipv6_server_gets_no_host_route() {
        let fake = Fake::default();
        let mut t = RouteTable::new(fake.clone());
        let plan = RoutePlan {
            full_tunnel: true,
            extra: vec![],
        };
        t.apply(&plan, "rw0", None).unwrap();
        assert_eq!(
            *fake.log.borrow(),
            ["add 0.0.0.0/1 dev rw0", "add 128.0.0.0/1 dev rw0"]
        );
    }

    #[test]
    fn a_server_behind_the_tunnel_is_refused() {
        #[derive(Debug)]
        struct IntoTun;
        impl RouteOps for IntoTun {
            fn lookup(&mut self, _: Ipv4Addr) -> Result<OutsidePath, TunError> {
                Ok(OutsidePath {
                    via: None,
                    dev: "rw0".into(),
                })
            }
            fn add(&mut self, _: &Route) -> Result<(), TunError> {
                panic!("nothing may be added")
            }
            fn delete(&mut self, _: &Route) -> Result<(), TunError> {
                Ok(())
            }
        }
        let mut t = RouteTable::new(IntoTun);
        let plan = RoutePlan {
            full_tunnel: true,
            extra: vec![],
        };
        assert!(t.apply(&plan, "rw0", server()).is_err());
    }
}
