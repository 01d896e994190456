//! What a program changed in a namespace's network configuration.
//!
//! The client adds an address to its TUN, routes (the pool, and with `--full-tunnel` a host
//! route to the server plus the two halves of the address space), and must take all of it away
//! when it exits. [`NetState::capture`] records links, addresses, routes of every table and
//! policy rules as `ip` prints them, one normalised line each, so that a snapshot taken before
//! the client started can be compared with one taken after it stopped.
//!
//! IPv6 link-local addresses and their routes are left out: the kernel adds them to every link
//! on its own, and their flags (`tentative` until duplicate address detection finishes) change
//! with time, not with anything the client does. [`route_get`] asks the kernel which way one
//! destination would go.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::netns::Netns;

/// The network configuration of a namespace at one moment, as sets of `ip` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetState {
    sections: Vec<(&'static str, BTreeSet<String>)>,
}

/// What one section (`links`, `routes`, ...) gained or lost between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Which section.
    pub section: &'static str,
    /// Lines present only in the later snapshot.
    pub added: Vec<String>,
    /// Lines present only in the earlier snapshot.
    pub removed: Vec<String>,
}

/// The `ip` invocations behind each section.
const SECTIONS: &[(&str, &[&str])] = &[
    ("links", &["-o", "link", "show"]),
    ("addresses", &["-o", "addr", "show"]),
    ("ipv4 routes", &["-4", "route", "show", "table", "all"]),
    ("ipv6 routes", &["-6", "route", "show", "table", "all"]),
    ("ipv4 rules", &["-4", "rule", "show"]),
    ("ipv6 rules", &["-6", "rule", "show"]),
];

impl NetState {
    /// Reads links, addresses, routes (all tables) and rules of `ns`.
    pub fn capture(ns: &Netns) -> Result<Self> {
        let mut sections = Vec::with_capacity(SECTIONS.len());
        for (name, args) in SECTIONS {
            let out = ns
                .ip(args)
                .with_context(|| format!("reading {name} of {}", ns.name()))?;
            sections.push((*name, normalise(name, &out)));
        }
        Ok(Self { sections })
    }

    /// What changed from `self` (earlier) to `later`; empty if nothing did.
    pub fn changes(&self, later: &NetState) -> Vec<Change> {
        self.sections
            .iter()
            .zip(&later.sections)
            .filter_map(|((section, before), (_, after))| {
                let added: Vec<String> = after.difference(before).cloned().collect();
                let removed: Vec<String> = before.difference(after).cloned().collect();
                (!added.is_empty() || !removed.is_empty()).then_some(Change {
                    section,
                    added,
                    removed,
                })
            })
            .collect()
    }

    /// Every line mentioning the word `word` (e.g. an interface name), for messages and checks.
    pub fn lines_mentioning(&self, word: &str) -> Vec<String> {
        self.sections
            .iter()
            .flat_map(|(section, lines)| {
                lines
                    .iter()
                    .filter(|l| {
                        l.split_whitespace()
                            .any(|w| w.trim_end_matches(':') == word)
                    })
                    .map(move |l| format!("{section}: {l}"))
            })
            .collect()
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.section)?;
        for l in &self.added {
            write!(f, "\n  + {l}")?;
        }
        for l in &self.removed {
            write!(f, "\n  - {l}")?;
        }
        Ok(())
    }
}

/// Formats a list of changes, one section after another.
pub fn describe(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes".to_owned();
    }
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One set of lines per section, without what changes by itself (see the module doc).
fn normalise(section: &str, out: &str) -> BTreeSet<String> {
    out.lines()
        .map(|l| {
            let mut words: Vec<&str> = l.split_whitespace().collect();
            match section {
                // Flags (NO-CARRIER until the veth peer is up, ...), state and counters move
                // on their own; which links exist is what matters.
                "links" => words.truncate(2),
                // `ip -o addr` ends each line with lifetimes and a `\` continuation.
                "addresses" => {
                    if let Some(end) = words.iter().position(|w| *w == "valid_lft" || *w == "\\") {
                        words.truncate(end);
                    }
                }
                _ => {}
            }
            // Flags that DAD and the link state toggle over time.
            words.retain(|w| !matches!(*w, "tentative" | "linkdown" | "dadfailed"));
            words.join(" ")
        })
        .filter(|l| !l.is_empty() && !is_link_local_v6(l))
        .collect()
}

/// Whether a line is about IPv6 link-local or multicast addressing, which the kernel manages.
fn is_link_local_v6(line: &str) -> bool {
    line.split_whitespace().any(|w| {
        let w = w.to_ascii_lowercase();
        w.starts_with("fe80:") || w.starts_with("ff00::") || w.starts_with("multicast")
    })
}

/// Where the kernel would send a packet to one destination: the answer of `ip route get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChoice {
    /// The outgoing interface.
    pub dev: String,
    /// The next hop, if the route has a gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The source address the kernel would pick.
    pub prefsrc: Option<Ipv4Addr>,
}

/// Asks the kernel in `ns` which way a packet to `dst` would go (`ip -j route get`).
pub fn route_get(ns: &Netns, dst: Ipv4Addr) -> Result<RouteChoice> {
    let json = ns.ip(&["-j", "route", "get", &dst.to_string()])?;
    parse_route_get(&json).with_context(|| format!("route to {dst} in {}: {json}", ns.name()))
}

/// The interface index of `link` in `ns`, or `None` if there is no such link. A device that
/// was deleted and created again gets a new index, so equal indices mean the same device.
pub fn link_index(ns: &Netns, link: &str) -> Result<Option<u64>> {
    let json = match ns.ip(&["-j", "link", "show", "dev", link]) {
        Ok(json) => json,
        // `ip` fails for a missing device; tell that apart from other failures by asking for
        // the whole list, which fails only if `ip` itself does.
        Err(e) => {
            let all = ns.ip(&["-o", "link", "show"]).context(e)?;
            let present = all.lines().any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.trim_end_matches(':').split('@').next() == Some(link))
            });
            if present {
                bail!(
                    "`ip link show dev {link}` failed though {link} exists in {}",
                    ns.name()
                );
            }
            return Ok(None);
        }
    };
    let v: Value = serde_json::from_str(&json).context("`ip -j link` output is not JSON")?;
    Ok(v.pointer("/0/ifindex").and_then(Value::as_u64))
}

fn parse_route_get(json: &str) -> Result<RouteChoice> {
    let v: Value = serde_json::from_str(json).context("`ip -j route get` output is not JSON")?;
    let route = v.get(0).context("no route in the answer")?;
    let text = |key: &str| route.get(key).and_then(Value::as_str);
    Ok(RouteChoice {
        dev: text("dev").context("no dev in the answer")?.to_owned(),
        gateway: text("gateway").and_then(|g| g.parse().ok()),
        prefsrc: text("prefsrc").and_then(|g| g.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(sections: &[(&'static str, &str)]) -> NetState {
        NetState {
            sections: sections
                .iter()
                .map(|(name, out)| (*name, normalise(name, out)))
                .collect(),
        }
    }

    #[test]
    fn ignores_lifetimes_link_local_and_dad_flags() {
        let before = state(&[
            (
                "addresses",
                "2: veth-rw-c    inet 192.0.2.2/24 scope global veth-rw-c\\       valid_lft forever preferred_lft forever\n\
                 2: veth-rw-c    inet6 fe80::1/64 scope link tentative \\       valid_lft forever preferred_lft forever\n",
            ),
            ("ipv6 routes", "fe80::/64 dev veth-rw-c proto kernel metric 256 pref medium\n"),
        ]);
        let after = state(&[
            (
                "addresses",
                "2: veth-rw-c    inet 192.0.2.2/24 scope global veth-rw-c\\       valid_lft forever preferred_lft forever\n",
            ),
            ("ipv6 routes", "multicast ff00::/8 dev veth-rw-c table local proto kernel metric 256 pref medium\n"),
        ]);
        assert_eq!(before.changes(&after), vec![]);
    }

    #[test]
    fn reports_added_and_removed_lines() {
        let before = state(&[(
            "ipv4 routes",
            "192.0.2.0/24 dev veth-rw-c proto kernel scope link src 192.0.2.2\n",
        )]);
        let after = state(&[(
            "ipv4 routes",
            "192.0.2.0/24 dev veth-rw-c proto kernel scope link src 192.0.2.2\n\
             192.0.2.1 dev veth-rw-c scope link\n\
             0.0.0.0/1 dev ringway0 scope link\n",
        )]);
        let changes = before.changes(&after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].added.len(), 2);
        assert!(changes[0].removed.is_empty());
        let text = describe(&changes);
        assert!(
            text.contains("+ 0.0.0.0/1 dev ringway0 scope link"),
            "{text}"
        );
        assert_eq!(after.lines_mentioning("ringway0").len(), 1);
        assert_eq!(describe(&[]), "no changes");
    }

    #[test]
    fn link_lines_keep_name_only() {
        let s = state(&[(
            "links",
            "7: ringway0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel state UNKNOWN\n",
        )]);
        assert_eq!(s.lines_mentioning("ringway0"), ["links: 7: ringway0:"]);
    }

    #[test]
    fn parses_route_get() {
        let json = r#"[{"dst":"192.0.2.1","dev":"veth-rw-c","prefsrc":"192.0.2.2","flags":[],"uid":0,"cache":[]}]"#;
        let r = parse_route_get(json).unwrap();
        assert_eq!(r.dev, "veth-rw-c");
        assert_eq!(r.gateway, None);
        assert_eq!(r.prefsrc, Some(Ipv4Addr::new(192, 0, 2, 2)));
        let via =
            r#"[{"dst":"203.0.113.5","gateway":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.2"}]"#;
        assert_eq!(
            parse_route_get(via).unwrap().gateway,
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert!(parse_route_get("[]").is_err());
    }
}
