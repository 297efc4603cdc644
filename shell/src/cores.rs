//! Which cores the frame thread and the two player threads are pinned to.
//!
//! Pinning a thread to a core pays only where the core is not also everyone else's. A pod that
//! Kubernetes gave cores of its own (Guaranteed QoS with whole CPUs under the static CPU
//! manager, or `docker run --cpuset-cpus`) sees an affinity mask narrower than the machine: its
//! threads go on those cores. A pod in the node's shared pool sees every core of the machine,
//! and so does every other pod there: if each pinned its frame thread to "the last core", all of
//! them would queue on that one core while the others idled. So `playpod pod` pins there only
//! when told (`--pin-core`), and `playpod demo`, whose machine is its user's, pins as before.

use std::fmt;

use crate::cli::StreamArgs;

/// Whose the machine's cores are when the process may run on all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// The user's own machine (`playpod demo`): pin to its last core.
    Ours,
    /// A node shared with other pods (`playpod pod`): pin only to cores of our own.
    Shared,
}

/// The cores this process may run on (its affinity mask) and how many the machine has online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuView {
    pub allowed: Vec<usize>,
    pub online: usize,
}

impl CpuView {
    /// This process's view: its affinity mask, and `/sys/devices/system/cpu/online` (not
    /// namespaced: in a container it counts the node's cores).
    pub fn current() -> Self {
        let mut allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        allowed.sort_unstable();
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|list| count_cpu_list(&list))
            .unwrap_or(allowed.len());
        Self { allowed, online }
    }
}

/// Counts the CPUs in a kernel CPU list such as `0-3,8-11` or `0`; `None` if it is not one.
pub fn count_cpu_list(list: &str) -> Option<usize> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    list.split(',').try_fold(0usize, |count, part| {
        let n = match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
                last.checked_sub(first)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
        count.checked_add(n)
    })
}

/// Writes cores as a kernel CPU list: `0-3,6`.
struct CpuList<'a>(&'a [usize]);

impl fmt::Display for CpuList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cores = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = cores.next() {
            let mut end = start;
            while cores.next_if(|&c| c == end + 1).is_some() {
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// Where the threads go, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub frame: Option<usize>,
    pub players: [Option<usize>; 2],
    pub reason: String,
}

/// `--pin-core` names a core this process may not run on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--pin-core {core}: this process may only run on cores {allowed} (its CPU affinity); \
     pick one of them, or leave the flag out"
)]
pub struct NoSuchCore {
    core: usize,
    allowed: String,
}

impl Placement {
    /// No thread pinned.
    fn none(reason: impl Into<String>) -> Self {
        Self {
            frame: None,
            players: [None, None],
            reason: reason.into(),
        }
    }

    /// The frame thread on `frame`, the players on the other allowed cores when there are some.
    fn on(allowed: &[usize], frame: usize, reason: String) -> Self {
        let others: Vec<usize> = allowed.iter().copied().filter(|&c| c != frame).collect();
        let pool = if others.is_empty() {
            vec![frame]
        } else {
            others
        };
        Self {
            frame: Some(frame),
            players: [Some(pool[0]), Some(pool[1 % pool.len()])],
            reason,
        }
    }

    /// [`Placement::decide`] for this process, as it is now. Called first thing, so that a core
    /// it may not run on is refused before anything starts.
    pub fn decide_here(args: &StreamArgs, machine: Machine) -> Result<Self, NoSuchCore> {
        Self::decide(args, &CpuView::current(), machine)
    }

    /// Decides from the flags (`--pin-core`, `--no-pin`), the process's view of the cores and
    /// whose the machine is.
    pub fn decide(args: &StreamArgs, view: &CpuView, machine: Machine) -> Result<Self, NoSuchCore> {
        let allowed = &view.allowed;
        if args.no_pin {
            return Ok(Self::none("--no-pin"));
        }
        if let Some(core) = args.pin_core {
            // An unreadable affinity (no list) cannot refuse it.
            if !allowed.is_empty() && !allowed.contains(&core) {
                return Err(NoSuchCore {
                    core,
                    allowed: CpuList(allowed).to_string(),
                });
            }
            return Ok(Self::on(allowed, core, "--pin-core".into()));
        }
        let Some(&last) = allowed.last() else {
            return Ok(Self::none("the process's CPU affinity cannot be read"));
        };
        if allowed.len() == 1 {
            return Ok(Self::none(format!("one core to run on ({last})")));
        }
        if allowed.len() < view.online {
            return Ok(Self::on(
                allowed,
                last,
                format!(
                    "cores {} of the machine's {} are this process's",
                    CpuList(allowed),
                    view.online
                ),
            ));
        }
        match machine {
            Machine::Ours => Ok(Self::on(
                allowed,
                last,
                format!("the machine's {} cores", allowed.len()),
            )),
            Machine::Shared => Ok(Self::none(format!(
                "every one of the machine's {} cores is shared with whatever else runs there; \
                 give the pod cores of its own (Guaranteed QoS with whole CPUs under the static \
                 CPU manager) or pass --pin-core",
                allowed.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        stream: StreamArgs,
    }

    fn args(flags: &[&str]) -> StreamArgs {
        let argv = std::iter::once("t").chain(flags.iter().copied());
        Args::try_parse_from(argv).unwrap().stream
    }

    fn view(allowed: &[usize], online: usize) -> CpuView {
        CpuView {
            allowed: allowed.to_vec(),
            online,
        }
    }

    fn cores(p: &Placement) -> (Option<usize>, [Option<usize>; 2]) {
        (p.frame, p.players)
    }

    #[test]
    fn cores_of_its_own_are_used_on_any_machine() {
        // A Kubernetes cpuset: 2 of 64 cores.
        for machine in [Machine::Ours, Machine::Shared] {
            let p = Placement::decide(&args(&[]), &view(&[6, 7], 64), machine).unwrap();
            assert_eq!(cores(&p), (Some(7), [Some(6), Some(6)]), "{machine:?}");
            assert!(
                p.reason.contains("cores 6-7 of the machine's 64"),
                "{}",
                p.reason
            );
        }
        let p = Placement::decide(&args(&[]), &view(&[2, 3, 4, 9], 16), Machine::Shared).unwrap();
        assert_eq!(cores(&p), (Some(9), [Some(2), Some(3)]));
        assert!(p.reason.contains("cores 2-4,9 of"), "{}", p.reason);
    }

    #[test]
    fn a_shared_machine_is_not_pinned_unless_asked() {
        let p = Placement::decide(&args(&[]), &view(&[0, 1, 2, 3], 4), Machine::Shared).unwrap();
        assert_eq!(cores(&p), (None, [None, None]));
        assert!(p.reason.contains("--pin-core"), "{}", p.reason);
        let p = Placement::decide(
            &args(&["--pin-core", "2"]),
            &view(&[0, 1, 2, 3], 4),
            Machine::Shared,
        )
        .unwrap();
        assert_eq!(cores(&p), (Some(2), [Some(0), Some(1)]));
    }

    #[test]
    fn the_users_machine_gets_its_last_core() {
        let p = Placement::decide(&args(&[]), &view(&[0, 1], 2), Machine::Ours).unwrap();
        assert_eq!(cores(&p), (Some(1), [Some(0), Some(0)]));
        let p = Placement::decide(&args(&[]), &view(&[0, 1, 2, 3], 4), Machine::Ours).unwrap();
        assert_eq!(cores(&p), (Some(3), [Some(0), Some(1)]));
    }

    #[test]
    fn one_core_or_no_pin_pins_nothing() {
        let p = Placement::decide(&args(&[]), &view(&[5], 8), Machine::Ours).unwrap();
        assert_eq!(cores(&p), (None, [None, None]));
        let p = Placement::decide(&args(&["--no-pin"]), &view(&[0, 1], 2), Machine::Ours).unwrap();
        assert_eq!(cores(&p), (None, [None, None]));
        let p = Placement::decide(&args(&[]), &view(&[], 8), Machine::Ours).unwrap();
        assert_eq!(cores(&p), (None, [None, None]));
    }

    #[test]
    fn a_core_it_may_not_run_on_is_refused_with_the_ones_it_may() {
        let err = Placement::decide(
            &args(&["--pin-core", "99"]),
            &view(&[0, 1], 2),
            Machine::Ours,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--pin-core 99: this process may only run on cores 0-1 (its CPU affinity); \
             pick one of them, or leave the flag out"
        );
        let err = Placement::decide(
            &args(&["--pin-core", "1"]),
            &view(&[4, 5, 7], 8),
            Machine::Shared,
        )
        .unwrap_err();
        assert!(err.to_string().contains("cores 4-5,7 "), "{err}");
        // The only core: pinned there, the players with it.
        let p =
            Placement::decide(&args(&["--pin-core", "3"]), &view(&[3], 8), Machine::Ours).unwrap();
        assert_eq!(cores(&p), (Some(3), [Some(3), Some(3)]));
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,8-11,16"), Some(9));
        for bad in ["", "x", "3-1", "0-", "-1", "1,,2"] {
            assert_eq!(count_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_machine_is_read() {
        let view = CpuView::current();
        assert!(!view.allowed.is_empty(), "{view:?}");
        assert!(view.online >= view.allowed.len(), "{view:?}");
    }
}
