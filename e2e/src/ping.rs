//! `ping` through the tunnel and parsing of its summary.
//!
//! Ping is the smallest proof that both directions of the tunnel carry packets, and its
//! average RTT is the latency figure the demo reports. [`sample`] keeps every reply's RTT,
//! for the percentiles and loss a benchmark reports (idle, or beside bulk traffic).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::path::TunnelPath;
use crate::process::{self, Process, Signal};

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

/// Every reply's round-trip time and the loss of one ping run, from [`sample`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PingSample {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Each reply's RTT in milliseconds, in arrival order.
    pub rtts_ms: Vec<f64>,
}

impl PingSample {
    /// The `p`-th percentile RTT (0..=100, nearest rank), or `None` without replies.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let mut sorted = self.rtts_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        // Nearest rank: the smallest value with at least p % of the sample at or below it.
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, n) - 1])
    }

    /// The mean RTT, or `None` without replies.
    pub fn mean_ms(&self) -> Option<f64> {
        (!self.rtts_ms.is_empty())
            .then(|| self.rtts_ms.iter().sum::<f64>() / self.rtts_ms.len() as f64)
    }

    /// Lost requests, in percent of those sent.
    pub fn loss_pct(&self) -> f64 {
        if self.transmitted == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.transmitted.saturating_sub(self.received))
            / f64::from(self.transmitted)
    }
}

/// Pings the server end of `path` `count` times, one request every `interval` (below 200 ms
/// needs root, which the testbed has), and keeps every RTT. Total loss is a result here, not
/// an error; only a run without a summary fails. Bounded by `count * interval` plus the reply
/// wait and slack.
pub fn sample(path: &TunnelPath<'_>, count: u32, interval: Duration) -> Result<PingSample> {
    let (from, source, target) = (path.client_ns, path.client_ip, path.server_ip);
    let count = count.max(1);
    let limit = interval * count + Duration::from_secs(REPLY_WAIT_S + 10);
    let out = process::run(
        from.command("ping")
            .args(["-n", "-c", &count.to_string()])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .args(["-W", &REPLY_WAIT_S.to_string()])
            .args(["-I", &source.to_string()])
            .arg(target.to_string()),
        limit,
    )
    .context("running ping")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_sample(&stdout).with_context(|| {
        format!(
            "ping {target} from {source} in {} ({}): {}",
            from.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Parses the reply lines' `time=` and the summary's counts of iputils ping output.
pub fn parse_sample(output: &str) -> Result<PingSample> {
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
    let rtts_ms = output
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("time="))?
                .parse()
                .ok()
        })
        .collect();
    Ok(PingSample {
        transmitted,
        received,
        rtts_ms,
    })
}

/// Sends one echo request along `path` and waits up to `wait` (whole seconds, at least one)
/// for the reply; `Ok(false)` if none came (or ping could not send, e.g. no route yet).
pub fn ping_once(path: &TunnelPath<'_>, wait: Duration) -> Result<bool> {
    let secs = wait.as_secs().max(1);
    let out = process::run(
        path.client_ns
            .command("ping")
            .args(["-n", "-q", "-c", "1", "-W", &secs.to_string()])
            .args(["-I", &path.client_ip.to_string()])
            .arg(path.server_ip.to_string()),
        Duration::from_secs(secs + 10),
    )
    .context("running ping")?;
    Ok(out.status.success())
}

/// A `ping` left running in the background (one echo request every `interval`, for at most
/// `limit`), whose replies are read back with their arrival times; for watching traffic stop and
/// resume while something happens to the tunnel.
#[derive(Debug)]
pub struct PingStream {
    process: Process,
}

/// One echo reply of a [`PingStream`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reply {
    /// `icmp_seq`: the request's number, from 1, one per interval.
    pub seq: u32,
    /// When it arrived (ping's own `-D` timestamp).
    pub at: SystemTime,
}

impl PingStream {
    /// Starts pinging the server end of `path` from its client end, logging to `log`.
    pub fn start(
        path: &TunnelPath<'_>,
        interval: Duration,
        limit: Duration,
        log: &Path,
    ) -> Result<Self> {
        let mut cmd = path.client_ns.command("ping");
        cmd.args(["-n", "-D", "-W", "1"])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .args(["-w", &limit.as_secs().max(1).to_string()])
            .args(["-I", &path.client_ip.to_string()])
            .arg(path.server_ip.to_string());
        let process = Process::spawn("ping stream", &mut cmd, log)?;
        Ok(Self { process })
    }

    /// The replies logged so far, in arrival order.
    pub fn replies(&self) -> Vec<Reply> {
        let text = std::fs::read_to_string(self.process.log_path()).unwrap_or_default();
        parse_replies(&text)
    }

    /// Stops it with SIGINT (ping then prints its summary) and returns every reply.
    pub fn stop(mut self) -> Result<Vec<Reply>> {
        self.process.signal(Signal::Int)?;
        if self.process.wait_timeout(Duration::from_secs(5))?.is_none() {
            bail!("ping ignored SIGINT for 5 s");
        }
        Ok(self.replies())
    }

    /// The last lines of its output, for messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// Parses the reply lines of `ping -D`:
/// `[1732384823.123456] 64 bytes from 198.18.0.1: icmp_seq=7 ttl=64 time=0.061 ms`.
pub fn parse_replies(output: &str) -> Vec<Reply> {
    output
        .lines()
        .filter_map(|line| {
            let stamp = line.strip_prefix('[')?.split_once(']')?.0;
            let secs: f64 = stamp.parse().ok()?;
            let rest = line.split_once(" bytes from ")?.1;
            let seq = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))?
                .parse()
                .ok()?;
            let at = UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
            Some(Reply { seq, at })
        })
        .collect()
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
    fn parses_timestamped_replies() {
        let out = "PING 198.18.0.1 (198.18.0.1) from 198.18.0.2 : 56(84) bytes of data.\n\
                   [1732384823.500000] 64 bytes from 198.18.0.1: icmp_seq=1 ttl=64 time=0.061 ms\n\
                   [1732384824.000000] From 198.18.0.2 icmp_seq=2 Destination Host Unreachable\n\
                   [1732384827.250000] 64 bytes from 198.18.0.1: icmp_seq=9 ttl=64 time=1.2 ms\n\
                   --- 198.18.0.1 ping statistics ---\n";
        let r = parse_replies(out);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].seq, r[1].seq), (1, 9));
        let gap = r[1].at.duration_since(r[0].at).unwrap();
        assert!((gap.as_secs_f64() - 3.75).abs() < 1e-3, "{gap:?}");
        assert!(parse_replies("no replies here").is_empty());
    }

    #[test]
    fn samples_every_rtt() {
        let out = "PING 198.18.0.1 (198.18.0.1) from 198.18.0.2 : 56(84) bytes of data.\n\
                   64 bytes from 198.18.0.1: icmp_seq=1 ttl=64 time=0.300 ms\n\
                   64 bytes from 198.18.0.1: icmp_seq=2 ttl=64 time=0.100 ms\n\
                   64 bytes from 198.18.0.1: icmp_seq=4 ttl=64 time=0.200 ms\n\
                   64 bytes from 198.18.0.1: icmp_seq=5 ttl=64 time=1.00 ms\n\n\
                   --- 198.18.0.1 ping statistics ---\n\
                   5 packets transmitted, 4 received, 20% packet loss, time 4ms\n\
                   rtt min/avg/max/mdev = 0.100/0.400/1.000/0.3 ms\n";
        let s = parse_sample(out).unwrap();
        assert_eq!((s.transmitted, s.received), (5, 4));
        assert_eq!(s.rtts_ms, [0.3, 0.1, 0.2, 1.0]);
        assert_eq!(s.percentile_ms(50.0), Some(0.2));
        assert_eq!(s.percentile_ms(99.0), Some(1.0));
        assert_eq!(s.percentile_ms(0.0), Some(0.1));
        assert!((s.mean_ms().unwrap() - 0.4).abs() < 1e-9);
        assert!((s.loss_pct() - 20.0).abs() < 1e-9);

        let lost = "--- x ping statistics ---\n\
                    5 packets transmitted, 0 received, 100% packet loss, time 4000ms\n";
        let s = parse_sample(lost).unwrap();
        assert_eq!((s.percentile_ms(50.0), s.mean_ms()), (None, None));
        assert_eq!(s.loss_pct(), 100.0);
        assert!(parse_sample("connect: Network is unreachable").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("connect: Network is unreachable").is_err());
    }
}
