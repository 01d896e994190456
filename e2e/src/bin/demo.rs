//! `ringway-demo`: brings up the namespace testbed, measures it, and prints a summary.
//!
//! It shows a newcomer, in one command (`scripts/demo`), that the tunnel works and how fast it
//! is on this machine: ping latency and iperf3 goodput in both directions, per transport. It
//! builds nothing itself; the binaries must already exist (see `ringway_e2e::binaries`).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ringway_e2e::{interrupt, prereq, Testbed, TestbedOptions, Transport};

const PINGS: u32 = 10;
const IPERF_SECS: u32 = 5;

const USAGE: &str = "usage: ringway-demo [--transport udp|tcp|both]   (default: both)

Starts ringway-server and ringway in two throwaway network namespaces, pings through the
tunnel, runs iperf3 each way, prints a summary and tears everything down. Needs root, ip,
ping and iperf3, and binaries from `cargo build --release --bins` (or $RINGWAY_BIN_DIR).";

/// One transport's measurements.
#[derive(Debug)]
struct Row {
    transport: Transport,
    rtt_ms: f64,
    up_gbps: f64,
    down_gbps: f64,
}

fn main() -> ExitCode {
    let transports = match parse_args(std::env::args().skip(1)) {
        Ok(Some(t)) => t,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ringway-demo: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = prereq::missing(&["ping", "iperf3"]) {
        eprintln!("ringway-demo: cannot run: {why}");
        return ExitCode::FAILURE;
    }

    if let Err(e) = interrupt::catch() {
        eprintln!("ringway-demo: {e:#}");
        return ExitCode::FAILURE;
    }

    let mut rows = Vec::new();
    let mut failed = false;
    for transport in transports {
        println!("== {transport}: starting testbed");
        match measure(transport) {
            Ok(row) => rows.push(row),
            Err(_) if interrupt::interrupted() => {
                eprintln!("ringway-demo: interrupted; testbed torn down");
                return ExitCode::from(130);
            }
            Err(e) => {
                eprintln!("== {transport}: FAILED: {e:#}");
                failed = true;
            }
        }
    }
    print_table(&rows);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Vec<Transport>>> {
    let mut choice = "both".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--transport" => choice = args.next().context("--transport needs a value")?,
            other => match other.strip_prefix("--transport=") {
                Some(value) => choice = value.to_owned(),
                None => bail!("unexpected argument {other:?}"),
            },
        }
    }
    Ok(Some(match choice.as_str() {
        "both" => Transport::ALL.to_vec(),
        one => vec![one.parse().context("--transport takes udp, tcp or both")?],
    }))
}

/// Fails if Ctrl-C was pressed, so the caller unwinds and the guards tear down.
fn check_interrupt() -> Result<()> {
    if interrupt::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the whole measurement on a fresh testbed, which is torn down on return.
fn measure(transport: Transport) -> Result<Row> {
    let mut bed = Testbed::start(TestbedOptions::new(transport))?;
    check_interrupt()?;
    println!(
        "== {transport}: up (namespaces {} and {}, client {})",
        bed.server_ns().name(),
        bed.client_ns().name(),
        bed.client_tunnel_ip()
    );
    let ping = bed.ping(PINGS)?;
    check_interrupt()?;
    println!(
        "== {transport}: ping {}/{} replies, avg {:.3} ms",
        ping.received, ping.transmitted, ping.avg_rtt_ms
    );
    let mut gbps = [0.0; 2];
    for (slot, reverse) in gbps.iter_mut().zip([false, true]) {
        let report = bed.iperf3(reverse, IPERF_SECS)?;
        check_interrupt()?;
        let dir = if reverse {
            "server->client"
        } else {
            "client->server"
        };
        let retr = report
            .retransmits
            .map_or_else(String::new, |r| format!(", {r} retransmits"));
        println!(
            "== {transport}: iperf3 {dir} {:.3} Gbit/s{retr}",
            report.gbps()
        );
        *slot = report.gbps();
    }
    Ok(Row {
        transport,
        rtt_ms: ping.avg_rtt_ms,
        up_gbps: gbps[0],
        down_gbps: gbps[1],
    })
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<10} {:>16} {:>22} {:>22}",
        "transport", "ping avg RTT ms", "client->server Gbps", "server->client Gbps"
    );
    for r in rows {
        println!(
            "{:<10} {:>16.3} {:>22.3} {:>22.3}",
            r.transport.as_str(),
            r.rtt_ms,
            r.up_gbps,
            r.down_gbps
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Vec<Transport>>> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_to_both() {
        assert_eq!(parse(&[]).unwrap(), Some(Transport::ALL.to_vec()));
    }

    #[test]
    fn accepts_each_choice() {
        assert_eq!(
            parse(&["--transport", "tcp"]).unwrap(),
            Some(vec![Transport::Tcp])
        );
        assert_eq!(
            parse(&["--transport", "udp"]).unwrap(),
            Some(vec![Transport::Udp])
        );
        assert_eq!(
            parse(&["--transport=both"]).unwrap(),
            Some(Transport::ALL.to_vec())
        );
        assert_eq!(parse(&["-h"]).unwrap(), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["--transport", "quic"]).is_err());
        assert!(parse(&["--transport"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
