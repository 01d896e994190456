//! `ping` through the tunnel and parsing of its summary.
//!
//! Ping is the smallest proof that both directions of the tunnel carry packets, and its
//! average RTT is the latency figure the demo reports.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::path::TunnelPath;
use crate::process;

/// Interval between echo requests, in seconds (iputils accepts 0.2 without special privileges).
const INTERVAL_S: f64 = 0.2;
/// Per-reply wait (`-W`), in seconds.
const REPLY_WAIT_S: u64 = 2;

/// The summary of one ping run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round-trip time in milliseconds.
    pub avg_rtt_ms: f64,
}

/// Pings the server end of `path` `count` times from its client end (source bound to the
/// client's inside address); fails if no reply arrives at all.
pub fn ping(path: &TunnelPath<'_>, count: u32) -> Result<PingStats> {
    let (from, source, target) = (path.client_ns, path.client_ip, path.server_ip);
    let count = count.max(1);
    let limit = Duration::from_secs_f64(f64::from(count) * INTERVAL_S)
        + Duration::from_secs(REPLY_WAIT_S + 10);
    let out = process::run(
        from.command("ping")
            .args(["-n", "-c", &count.to_string()])
            .args(["-i", &INTERVAL_S.to_string()])
            .args(["-W", &REPLY_WAIT_S.to_string()])
            .args(["-I", &source.to_string()])
            .arg(target.to_string()),
        limit,
    )
    .context("running ping")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stats = parse(&stdout).with_context(|| {
        format!(
            "ping {target} from {source} in {} ({}): {}{}",
            from.name(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok(stats)
}

/// Parses iputils (or busybox) ping output; fails on total loss or a missing summary.
pub fn parse(output: &str) -> Result<PingStats> {
    let counts = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .context("no `packets transmitted` summary line")?;
    let mut fields = counts.split(',').map(str::trim);
    let transmitted = leading_number(fields.next().unwrap_or_default())
        .context("unparsable transmitted count")?;
    let received = fields
        .find(|f| f.ends_with("received"))
        .and_then(leading_number)
        .context("unparsable received count")?;
    if received == 0 {
        bail!("100% loss: {transmitted} sent, none received");
    }
    let rtt = output
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .context("no rtt summary line")?;
    let avg_rtt_ms = rtt
        .split_once('=')
        .and_then(|(_, values)| values.trim().split('/').nth(1))
        .and_then(|avg| avg.trim().parse::<f64>().ok())
        .with_context(|| format!("unparsable rtt line {rtt:?}"))?;
    Ok(PingStats {
        transmitted,
        received,
        avg_rtt_ms,
    })
}

fn leading_number(field: &str) -> Option<u32> {
    field.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_summary() {
        let out = "PING 198.18.0.1 (198.18.0.1) 56(84) bytes of data.\n\
                   64 bytes from 198.18.0.1: icmp_seq=1 ttl=64 time=0.061 ms\n\n\
                   --- 198.18.0.1 ping statistics ---\n\
                   3 packets transmitted, 2 received, +1 errors, 33.3333% packet loss, time 401ms\n\
                   rtt min/avg/max/mdev = 0.045/0.061/0.080/0.012 ms\n";
        let s = parse(out).unwrap();
        assert_eq!((s.transmitted, s.received), (3, 2));
        assert!((s.avg_rtt_ms - 0.061).abs() < 1e-9);
    }

    #[test]
    fn parses_busybox_summary() {
        let out = "--- 10.0.0.1 ping statistics ---\n\
                   2 packets transmitted, 2 packets received, 0% packet loss\n\
                   round-trip min/avg/max = 0.1/1.5/2.9 ms\n";
        let s = parse(out).unwrap();
        assert_eq!(s.received, 2);
        assert!((s.avg_rtt_ms - 1.5).abs() < 1e-9);
    }

    #[test]
    fn total_loss_is_an_error() {
        let out = "--- x ping statistics ---\n\
                   5 packets transmitted, 0 received, 100% packet loss, time 4000ms\n";
        assert!(parse(out).unwrap_err().to_string().contains("100% loss"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("connect: Network is unreachable").is_err());
    }
}
