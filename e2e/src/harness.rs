//! The harness of the end-to-end test binaries: named scenarios that say "skipped" when this
//! machine cannot run them, instead of passing.
//!
//! libtest (`#[test]`) has no way for a test to skip itself at run time: one that returns early
//! counts as passed. The e2e test files therefore set `harness = false` and call [`main`] with
//! their [`Scenario`]s. It runs them with libtest-mimic, which keeps libtest's command line (a
//! name filter, `--exact`, `--skip`, `--ignored`, `--include-ignored`, `--list`,
//! `--test-threads`, `--format`) and its summary, where a scenario whose prerequisites are
//! missing shows as `ignored, <reason>` and is counted as ignored. Under `CI` it fails instead
//! (see [`prereq::decide`]).
//!
//! Output is never captured (`--nocapture` is accepted and changes nothing): the scenarios'
//! progress lines and the testbed's log tails always show, which is what one wants from tests
//! that run one at a time anyway.

use std::collections::BTreeSet;
use std::fmt;
use std::process::ExitCode;

use anyhow::Result;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::binaries::Binaries;
use crate::prereq::{self, Decision};

/// What a scenario needs from the machine before it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: a plain check that runs anywhere.
    Nothing,
    /// The release binaries (not root): skipped while they are not built.
    Binaries,
    /// Root, [`prereq::BASE_TOOLS`] and these tools: a testbed. Such scenarios also run one
    /// at a time ([`prereq::serial`]), since throughput on two shared cores would measure the
    /// neighbours. Missing binaries are a failure here, not a skip: a machine that can run
    /// testbeds should have built them, and the message says how.
    Testbed(&'static [&'static str]),
}

impl Needs {
    /// Why the machine cannot run a scenario with these needs, or `None` if it can.
    pub fn missing(self) -> Option<String> {
        match self {
            Self::Nothing => None,
            Self::Binaries => Binaries::locate().err().map(|e| format!("{e:#}")),
            Self::Testbed(tools) => prereq::missing(tools),
        }
    }
}

type Body = Box<dyn FnOnce(&str) -> Result<()> + Send>;

/// One named test: its prerequisites and its body, which gets its own name for messages.
pub struct Scenario {
    name: String,
    needs: Needs,
    body: Body,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// A scenario with explicit needs.
    pub fn new(
        name: impl Into<String>,
        needs: Needs,
        body: impl FnOnce(&str) -> Result<()> + Send + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            needs,
            body: Box::new(body),
        }
    }

    /// A scenario that builds a testbed: root, the base tools and `tools`; runs alone.
    pub fn testbed(
        name: impl Into<String>,
        tools: &'static [&'static str],
        body: impl FnOnce(&str) -> Result<()> + Send + 'static,
    ) -> Self {
        Self::new(name, Needs::Testbed(tools), body)
    }

    /// A scenario that needs nothing from the machine.
    pub fn plain(
        name: impl Into<String>,
        body: impl FnOnce(&str) -> Result<()> + Send + 'static,
    ) -> Self {
        Self::new(name, Needs::Nothing, body)
    }

    /// The test's name, as filters match it.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn into_trial(self) -> Trial {
        let Self { name, needs, body } = self;
        Trial::ignorable_test(name.clone(), move || {
            match prereq::decide(needs.missing(), prereq::under_ci()) {
                Decision::Run => {}
                Decision::Skip(why) => return Ok(Completion::ignored_with(why)),
                Decision::Fail(message) => return Err(Failed::from(message)),
            }
            let _serial = matches!(needs, Needs::Testbed(_)).then(prereq::serial);
            match body(&name) {
                Ok(()) => Ok(Completion::Completed),
                // `{:?}` of an anyhow error is the message and its whole chain of causes.
                Err(e) => Err(Failed::from(format!("{e:?}"))),
            }
        })
    }
}

/// Runs `scenarios` under libtest's command line and returns the exit code for `main`.
///
/// # Panics
/// If two scenarios share a name (a filter could not tell them apart).
pub fn main(scenarios: impl IntoIterator<Item = Scenario>) -> ExitCode {
    let args = Arguments::from_args();
    run(&args, scenarios.into_iter().collect())
}

fn run(args: &Arguments, scenarios: Vec<Scenario>) -> ExitCode {
    let mut names = BTreeSet::new();
    for s in &scenarios {
        assert!(
            names.insert(s.name.clone()),
            "two scenarios are named {}",
            s.name
        );
    }
    let trials = scenarios.into_iter().map(Scenario::into_trial).collect();
    libtest_mimic::run(args, trials).exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Arguments for an inner run whose report goes to a file in `dir`, so that its
    /// "test result: FAILED" does not appear in this test binary's own output.
    fn quiet_args(dir: &crate::TempDir) -> Arguments {
        Arguments {
            test_threads: Some(1),
            quiet: true,
            logfile: Some(dir.path().join("inner.log").display().to_string()),
            ..Arguments::default()
        }
    }

    #[test]
    fn runs_passes_and_fails() {
        let ran = Arc::new(AtomicU32::new(0));
        let (a, b) = (Arc::clone(&ran), Arc::clone(&ran));
        let scenarios = vec![
            Scenario::plain("passes", move |name| {
                assert_eq!(name, "passes");
                a.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
            Scenario::plain("fails", move |_| {
                b.fetch_add(1, Ordering::SeqCst);
                anyhow::bail!("on purpose")
            }),
        ];
        let trials: Vec<Trial> = scenarios.into_iter().map(Scenario::into_trial).collect();
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let c = libtest_mimic::run(&quiet_args(&dir), trials);
        assert_eq!((c.num_passed, c.num_failed, c.num_ignored), (1, 1, 0));
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn needs_nothing_is_never_missing() {
        assert_eq!(Needs::Nothing.missing(), None);
        let tools: &'static [&'static str] = &["ringway-e2e-definitely-not-a-tool"];
        let why = Needs::Testbed(tools)
            .missing()
            .expect("a missing tool is missing");
        assert!(
            why.contains("ringway-e2e-definitely-not-a-tool") || why.contains("root"),
            "{why}"
        );
    }

    #[test]
    fn a_scenario_that_cannot_run_is_ignored_not_passed() {
        let tools: &'static [&'static str] = &["ringway-e2e-definitely-not-a-tool"];
        let scenario = Scenario::testbed("cannot run", tools, |_| {
            panic!("the body of a scenario that cannot run was called")
        });
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let c = libtest_mimic::run(&quiet_args(&dir), vec![scenario.into_trial()]);
        assert_eq!(c.num_passed, 0);
        if prereq::under_ci() {
            assert_eq!((c.num_failed, c.num_ignored), (1, 0));
        } else {
            assert_eq!((c.num_failed, c.num_ignored), (0, 1));
        }
    }

    #[test]
    #[should_panic(expected = "two scenarios are named twice")]
    fn duplicate_names_are_refused() {
        let s = || Scenario::plain("twice", |_| Ok(()));
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let _ = run(&quiet_args(&dir), vec![s(), s()]);
    }
}
