//! `ringway-tunnel-bench`: raw veth against Ringway over UDP and TCP (and build against build,
//! and against other VPNs: wireguard-go, boringtun, OpenVPN, fastd), in throwaway network
//! namespaces, alternating systems run by run. `scripts/bench` installs the tools, builds and
//! runs this; see `ringway_benches::tunnel` for the design.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use ringway_benches::tunnel::build::Build;
use ringway_benches::tunnel::report::{self, Machine, RunRecord, METRICS};
use ringway_benches::tunnel::system::{
    self, Running, System, ToolCache, TunnelProcess, DEFAULT_SYSTEMS,
};
use ringway_benches::tunnel::test::{Metrics, Test, ALL_TESTS, DEFAULT_TESTS};
use ringway_benches::tunnel::{chart, plan, ratios, rss};
use ringway_e2e::{binaries, interrupt, prereq, TempDir};
use serde_json::json;

const DEFAULT_REPS: u32 = 3;
/// The files written into `--out`.
const JSON_FILE: &str = "results.json";
const MARKDOWN_FILE: &str = "results.md";
const CHART_FILE: &str = "chart.svg";
const DEFAULT_SECONDS: u32 = 5;
const QUICK_REPS: u32 = 1;
const QUICK_SECONDS: u32 = 3;

/// Measures raw veth, Ringway (UDP, TCP) and other VPNs in two network namespaces: iperf3
/// TCP each way (1 or more streams), CPU-seconds per GB and peak memory of each tunnel
/// process, the server's packets per system call, ping RTT idle and under load, and the
/// highest UDP packet rate with < 1 % loss. Systems alternate run by run (A B C A B C); the
/// tables show medians with min–max; every run goes to JSON, the tables to Markdown, and a
/// chart to SVG. Needs root, iperf3, ping and ip; installs the other VPNs it is asked for.
#[derive(Debug, Parser)]
#[command(name = "ringway-tunnel-bench", version)]
struct Args {
    /// A Ringway build to measure, as LABEL=DIR (DIR holds ringway-server and ringway).
    /// Repeat to compare builds side by side in one run, e.g. `--build base=/work/baseline
    /// --build new=target/release`. Default: `local=$RINGWAY_BIN_DIR` or target/release.
    #[arg(long = "build", value_name = "LABEL=DIR")]
    builds: Vec<String>,
    /// Same as --build; a bare DIR is labelled build1, build2, ... by position.
    #[arg(long = "ringway-bin-dir", value_name = "[LABEL=]DIR")]
    bin_dirs: Vec<String>,
    /// Extra `ringway-server run` arguments for one build, as LABEL=ARGS (split on spaces),
    /// e.g. `--build fq=target/release --build nofq=target/release --server-args
    /// 'nofq=--fair-queue off'` measures a feature on and off with the same binaries.
    #[arg(long = "server-args", value_name = "LABEL=ARGS")]
    server_args: Vec<String>,
    /// Extra `ringway up` arguments for one build, as LABEL=ARGS.
    #[arg(long = "client-args", value_name = "LABEL=ARGS")]
    client_args: Vec<String>,
    /// Systems to compare, comma-separated: raw-veth, ringway-udp, ringway-tcp,
    /// ringway-udp-tokio, ringway-tcp-tokio (server with `--io tokio`), wireguard-go,
    /// boringtun, openvpn, fastd; `all` for every one.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SYSTEMS.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())]
    systems: Vec<String>,
    /// Tests, comma-separated: iperf-tcp-N[-reverse], ping-idle, ping-under-load,
    /// ping-under-tcp-N[-reverse], udp-pps-SIZE (IP packet bytes, 44 to 1420); `all` adds
    /// iperf-tcp-4 and -4-reverse to the default: iperf-tcp-1, iperf-tcp-1-reverse,
    /// ping-idle, ping-under-load, udp-pps-1400, udp-pps-64.
    #[arg(long, value_delimiter = ',')]
    tests: Vec<String>,
    /// Repetitions of every test on every system [default: 3; 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: Option<u32>,
    /// Seconds of traffic per run [default: 5; 3 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: Option<u32>,
    /// A smoke run: one repetition of 3 s unless --reps / --seconds say otherwise.
    #[arg(long)]
    quick: bool,
    /// Print the plan and the time estimate, then stop (nothing is installed or run).
    #[arg(long)]
    dry_run: bool,
    /// A directory for results.json (every run), results.md (the tables) and chart.svg
    /// [default: target/bench/tunnel-<time>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where tools the benchmark builds itself (boringtun, with cargo) are kept
    /// [default: $RINGWAY_BENCH_TOOLS or ~/.cache/ringway-bench].
    #[arg(long, value_name = "DIR")]
    tools_dir: Option<PathBuf>,
}

/// What the arguments resolve to.
struct Setup {
    builds: Vec<Build>,
    systems: Vec<Box<dyn System>>,
    tests: Vec<Test>,
    reps: u32,
    seconds: u32,
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let setup = match resolve(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringway-tunnel-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = prereq::missing(&["iperf3", "ping"]) {
        eprintln!("ringway-tunnel-bench: cannot run: {why}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = interrupt::catch() {
        eprintln!("ringway-tunnel-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&args, &setup) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringway-tunnel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(args: &Args) -> Result<Setup> {
    let mut builds = Vec::new();
    for b in &args.builds {
        if !b.contains('=') {
            bail!("--build takes LABEL=DIR, got {b:?}");
        }
        builds.push(Build::parse(b, "")?);
    }
    for (i, b) in args.bin_dirs.iter().enumerate() {
        builds.push(Build::parse(b, &format!("build{}", i + 1))?);
    }
    if builds.is_empty() {
        builds.push(Build::new("local", &binaries::bin_dir())?);
    }
    for (i, b) in builds.iter().enumerate() {
        if builds[..i].iter().any(|a| a.label == b.label) {
            bail!("two builds are labelled {:?}", b.label);
        }
    }
    for (flag, specs, server) in [
        ("--server-args", &args.server_args, true),
        ("--client-args", &args.client_args, false),
    ] {
        for spec in specs {
            let Some((label, extra)) = spec.split_once('=') else {
                bail!("{flag} takes LABEL=ARGS, got {spec:?}");
            };
            let Some(build) = builds.iter_mut().find(|b| b.label == label) else {
                bail!("{flag} {spec:?}: no build is labelled {label:?}");
            };
            let list = if server {
                &mut build.server_args
            } else {
                &mut build.client_args
            };
            list.extend(extra.split_whitespace().map(str::to_owned));
        }
    }
    let tools = ToolCache::new(
        args.tools_dir
            .clone()
            .unwrap_or_else(ToolCache::default_dir),
    );
    let systems = system::expand(&args.systems, &builds, &tools)?;
    if systems.is_empty() {
        bail!("no systems to measure");
    }
    let mut names: Vec<&str> = Vec::new();
    let asked: Vec<&str> = if args.tests.is_empty() {
        DEFAULT_TESTS.to_vec()
    } else {
        args.tests.iter().map(|t| t.trim()).collect()
    };
    for name in asked {
        let add = if name == "all" {
            ALL_TESTS.to_vec()
        } else {
            vec![name]
        };
        for n in add {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let tests = names
        .iter()
        .map(|n| n.parse::<Test>())
        .collect::<Result<Vec<_>>>()?;
    let (reps, seconds) = if args.quick {
        (QUICK_REPS, QUICK_SECONDS)
    } else {
        (DEFAULT_REPS, DEFAULT_SECONDS)
    };
    let out = match &args.out {
        Some(p) => p.clone(),
        None => default_out()?,
    };
    Ok(Setup {
        builds,
        systems,
        tests,
        reps: args.reps.unwrap_or(reps),
        seconds: args.seconds.unwrap_or(seconds),
        out,
    })
}

/// `<target dir>/bench/tunnel-<UTC time>`.
fn default_out() -> Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    };
    let stamp: String = report::utc_now()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    Ok(target.join("bench").join(format!("tunnel-{stamp}")))
}

fn run(args: &Args, setup: &Setup) -> Result<ExitCode> {
    let machine = Machine::probe();
    let slots = plan::order(setup.reps, setup.tests.len(), setup.systems.len());
    let system_names: Vec<String> = setup.systems.iter().map(|s| s.name()).collect();
    let test_names: Vec<String> = setup.tests.iter().map(Test::to_string).collect();
    println!(
        "ringway-tunnel-bench: {} on {} ({} CPUs), kernel {}, load {}",
        machine.date, machine.cpu_model, machine.cpus, machine.kernel, machine.loadavg
    );
    for b in &setup.builds {
        println!(
            "  build {}: {} (commit {})",
            b.label,
            b.dir.display(),
            b.commit.as_deref().unwrap_or("unknown")
        );
    }
    let estimate: f64 = slots
        .iter()
        .map(|s| {
            setup.tests[s.test].estimate_secs(setup.seconds) + setup.systems[s.system].setup_secs()
        })
        .sum();
    println!(
        "  {} runs: {} reps x tests [{}] x systems [{}], {} s each; about {} min",
        slots.len(),
        setup.reps,
        test_names.join(", "),
        system_names.join(", "),
        setup.seconds,
        (estimate / 60.0).ceil()
    );
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let wall = Instant::now();

    // Installs and checks happen once, up front: a system that cannot be prepared fails
    // every one of its runs with the reason, and the others carry on.
    let prepared: Vec<Option<String>> = setup
        .systems
        .iter()
        .map(|s| match s.prepare() {
            Ok(()) => {
                println!("  {}: {}", s.name(), s.describe());
                None
            }
            Err(e) => {
                let why = format!("{e:#}");
                println!("  {}: cannot run: {why}", s.name());
                Some(why)
            }
        })
        .collect();

    let logs = TempDir::new("ringway-bench")?;
    let runner = Runner {
        secs: setup.seconds,
        logs: logs.path(),
    };
    let mut runs = Vec::with_capacity(slots.len());
    let mut interrupted = false;
    for (i, slot) in slots.iter().enumerate() {
        if interrupt::interrupted() {
            interrupted = true;
            break;
        }
        let system = &setup.systems[slot.system];
        let test = &setup.tests[slot.test];
        let unprepared = prepared[slot.system].as_deref();
        let record = runner.run_one(system.as_ref(), unprepared, test, slot.rep);
        if interrupt::interrupted() {
            interrupted = true;
            break;
        }
        println!(
            "[{}/{}] rep {} {} {}: {} ({:.1} s)",
            i + 1,
            slots.len(),
            slot.rep,
            record.test,
            record.system,
            brief(&record),
            record.elapsed_s
        );
        runs.push(record);
    }

    let tables = report::tables(&setup.tests, &system_names, &runs);
    let overview = report::overview(&system_names, &runs);
    println!();
    println!(
        "Medians (min–max) over {} repetition(s) of {} s; CPU is utime+stime per GB moved; \
         pkt/call from the server's counters (n/a: not counted by this build).",
        setup.reps, setup.seconds
    );
    for t in overview.iter().chain(&tables) {
        println!();
        print!("{}", t.text());
    }
    let systems: Vec<(String, String)> = setup
        .systems
        .iter()
        .map(|s| (s.name(), s.describe()))
        .collect();
    let plan = format!(
        "{} repetition(s); {} s of traffic per TCP and ping run; systems alternate run by run. \
         Cells: median (min–max) of the successful runs.",
        setup.reps, setup.seconds
    );
    let subtitle = format!(
        "{} · kernel {} · {} ({} CPUs) · median of {} run(s), line: min–max",
        machine.date, machine.kernel, machine.cpu_model, machine.cpus, setup.reps
    );
    let chart = chart::svg(&chart::bars(&system_names, &runs), &subtitle)?;
    let markdown = report::markdown_document(
        &machine,
        &plan,
        &systems,
        chart.as_ref().map(|_| CHART_FILE),
        overview.as_ref(),
        &tables,
    );

    let options = json!({
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
        "reps": setup.reps,
        "seconds": setup.seconds,
        "systems": system_names,
        "tests": test_names,
        "quick": args.quick,
        "interrupted": interrupted,
        "estimate_s": estimate.round(),
        "elapsed_s": wall.elapsed().as_secs_f64().round(),
    });
    let doc = report::json_document(&machine, options, &setup.builds, &systems, &runs, &tables);
    let dir = &setup.out;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let json_path = write(JSON_FILE, &(serde_json::to_string_pretty(&doc)? + "\n"))?;
    let md_path = write(MARKDOWN_FILE, &markdown)?;
    let chart_path = chart
        .as_ref()
        .map(|svg| write(CHART_FILE, svg))
        .transpose()?;
    // Printed after writing, so that a closed stdout (`| head`) cannot lose the files.
    println!("\nMarkdown:\n\n{markdown}");
    println!(
        "took {:.1} min (estimate {:.1})",
        wall.elapsed().as_secs_f64() / 60.0,
        estimate / 60.0
    );
    println!("every run: {}", json_path.display());
    println!("tables:    {}", md_path.display());
    if let Some(path) = chart_path {
        println!("chart:     {}", path.display());
    } else {
        println!("chart:     none (it draws iperf-tcp-1 and iperf-tcp-1-reverse)");
    }

    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    if interrupted {
        eprintln!("ringway-tunnel-bench: interrupted; namespaces torn down");
        return Ok(ExitCode::from(130));
    }
    if failed > 0 {
        eprintln!(
            "ringway-tunnel-bench: {failed} of {} runs failed (see the JSON)",
            runs.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What every run shares: its seconds of traffic and where iperf3 logs go.
struct Runner<'a> {
    secs: u32,
    logs: &'a Path,
}

impl Runner<'_> {
    /// Starts `system`, runs `test` through it, reads its processes' peak memory, stops it;
    /// a failure is recorded, not returned. `unprepared` is why the system cannot run at all.
    fn run_one(
        &self,
        system: &dyn System,
        unprepared: Option<&str>,
        test: &Test,
        rep: u32,
    ) -> RunRecord {
        let started = report::utc_now();
        let clock = Instant::now();
        let running = match unprepared {
            Some(why) => Err(anyhow!("{why}")),
            None => system.start(),
        };
        let failed_to_start = running.is_err();
        let measured = match running {
            Ok(running) => self.measure(running, test),
            Err(e) => Measured {
                metrics: Err(e),
                counters: BTreeMap::new(),
            },
        };
        let (metrics, error) = match measured.metrics {
            Ok(m) => (m, None),
            Err(e) => (Metrics::new(), Some(format!("{e:#}"))),
        };
        RunRecord {
            rep,
            test: test.to_string(),
            system: system.name(),
            build: system.build().map(|b| b.label.clone()),
            started,
            elapsed_s: clock.elapsed().as_secs_f64(),
            metrics,
            counters: measured.counters,
            error,
            failed_to_start,
        }
    }

    /// Runs `test` through a started system, reads its processes' peak memory and its
    /// client's counters, and stops it (also when the test failed: the server's counters
    /// help explain why).
    fn measure(&self, mut running: Box<dyn Running>, test: &Test) -> Measured {
        let measured = test.run(running.as_ref(), self.secs, self.logs);
        let client = running.client_counters();
        let peaks = peak_memory(&running.processes());
        let finished = running.finish();
        let server = finished.as_ref().ok().cloned().flatten();
        let metrics = measured.and_then(|mut metrics| {
            finished?;
            metrics.extend(peaks);
            for (path, ratio) in server.iter().flat_map(ratios::packets_per_call) {
                metrics.insert(ratios::metric_name(&path), ratio);
            }
            Ok(metrics)
        });
        let counters = server
            .iter()
            .flat_map(|c| c.iter().map(|(k, v)| (k.to_owned(), v)))
            .chain(client)
            .collect();
        Measured { metrics, counters }
    }
}

/// What a started run yields.
struct Measured {
    /// Its metrics, or why measuring (or stopping) failed.
    metrics: Result<Metrics>,
    /// The server's final counters and the client's (`client_*`).
    counters: BTreeMap<String, u64>,
}

/// `rss_peak_<role>_mib` of every tunnel process that can still be read.
fn peak_memory(processes: &[TunnelProcess]) -> Metrics {
    processes
        .iter()
        .filter_map(|p| {
            let kib = rss::peak_kib(p.pid).ok()?;
            Some((format!("rss_peak_{}_mib", p.role), kib as f64 / 1024.0))
        })
        .collect()
}

/// One line for the progress log: the metrics, or the first line of the error.
fn brief(record: &RunRecord) -> String {
    if let Some(e) = &record.error {
        let first = e.lines().next().unwrap_or_default();
        let cut: String = first.chars().take(300).collect();
        return format!("FAILED: {cut}");
    }
    record
        .metrics
        .iter()
        .map(|(k, v)| {
            let decimals = METRICS
                .iter()
                .find(|m| m.key == k)
                .map_or(2, |m| m.decimals);
            format!("{k}={v:.decimals$}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}
