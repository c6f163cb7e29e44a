//! The process and the machine, read from `/proc`: CPU time (the process's, per thread by who it
//! works for, all CPUs'), minor page faults, memory (VmRSS, VmHWM) and transparent huge pages.
//!
//! Contract: every reader returns `None` where `/proc` is absent or unreadable (not Linux), never
//! fails; CPU times are in clock ticks of 10 ms. [`Marks`] and [`Ends`] take the readings a
//! measured window is a difference of, at its opening and at its close.

use std::time::{Duration, Instant};

/// The number a `/proc/self/status` line starts with, after its `key` (e.g. `VmRSS:`).
fn status_number(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Resident set size now (`VmRSS`), bytes.
pub(super) fn rss() -> Option<u64> {
    status_number("VmRSS:").map(|kb| kb * 1024)
}

/// Whether this process may get transparent huge pages (`THP_enabled`; `main` turns them off).
pub(super) fn huge_pages_enabled() -> Option<bool> {
    status_number("THP_enabled:").map(|v| v != 0)
}

/// Peak resident set size (`VmHWM`), bytes.
pub(super) fn peak_rss() -> Option<u64> {
    status_number("VmHWM:").map(|kb| kb * 1024)
}

/// Process CPU time (user + system) so far, from `/proc/self/stat` (clock ticks of 10 ms).
pub(super) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, fields) = parse_stat(&stat)?;
    stat_cpu(&fields)
}

/// What the measured window's figures are differences from: taken when it opens.
pub(super) struct Marks {
    pub(super) at: Instant,
    pub(super) cpu: Option<Duration>,
    pub(super) parts: Option<[Duration; 3]>,
    pub(super) machine: Option<MachineTicks>,
    pub(super) faults: Option<u64>,
}

impl Marks {
    pub(super) fn now() -> Marks {
        Marks {
            at: Instant::now(),
            cpu: cpu_time(),
            parts: cpu_by_part(),
            machine: machine_ticks(),
            faults: minor_faults(),
        }
    }
}

/// The readings at the close of the measured window, in the order they are taken.
pub(super) struct Ends {
    pub(super) machine: Option<MachineTicks>,
    pub(super) cpu: Option<Duration>,
    pub(super) parts: Option<[Duration; 3]>,
    pub(super) faults: Option<u64>,
    /// Peak RSS (`VmHWM`), bytes.
    pub(super) rss: Option<u64>,
}

impl Ends {
    pub(super) fn now() -> Ends {
        Ends {
            machine: machine_ticks(),
            cpu: cpu_time(),
            parts: cpu_by_part(),
            faults: minor_faults(),
            rss: peak_rss(),
        }
    }
}

/// The process's minor page faults so far (`minflt`, field 10 of `/proc/self/stat`).
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, fields) = parse_stat(&stat)?;
    fields.get(7)?.parse().ok()
}

/// A `/proc/.../stat` line: the command name (in parentheses, may hold spaces) and the fields
/// after it, from the state on (field 3 of the line is index 0).
fn parse_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields = stat.get(close + 2..)?.split(' ').collect();
    Some((&stat[open + 1..close], fields))
}

/// utime + stime (fields 14 and 15 of the line, clock ticks of 10 ms).
fn stat_cpu(fields: &[&str]) -> Option<Duration> {
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    const TICKS_PER_SECOND: u64 = 100;
    Some(Duration::from_millis(
        (ticks(11)? + ticks(12)?) * 1000 / TICKS_PER_SECOND,
    ))
}

/// Who a thread of this process works for, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The pipeline: tokio workers, the main thread, librdkafka's client threads.
    Forcebridge,
    /// The simulated org's runtime ([`SIM_THREAD`]).
    Org,
    /// librdkafka's mock cluster (`rdk:mock`).
    MockKafka,
}

/// Name of the simulated org's runtime threads in `bench source`; every thread whose name
/// starts with it counts as the org's.
pub(super) const SIM_THREAD: &str = "sim-org";
/// The thread that commits changes in the org at `--rate` (the org's work, apart from serving).
pub(super) const GENERATOR_THREAD: &str = "sim-org-generator";

/// CPU time (user + system, 10 ms ticks) of this process's live threads, summed per [`Part`]:
/// `[forcebridge, org, mock Kafka]`, from `/proc/self/task/*/stat`.
fn cpu_by_part() -> Option<[Duration; 3]> {
    let mut parts = [Duration::ZERO; 3];
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended
        };
        let Some((comm, fields)) = parse_stat(&stat) else {
            continue;
        };
        let Some(cpu) = stat_cpu(&fields) else {
            continue;
        };
        let part = if comm.starts_with(SIM_THREAD) {
            Part::Org
        } else if comm == "rdk:mock" {
            Part::MockKafka
        } else {
            Part::Forcebridge
        };
        parts[part as usize] += cpu;
    }
    Some(parts)
}

/// The machine's CPU time, all CPUs, in clock ticks, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MachineTicks {
    /// user, nice, system, irq, softirq.
    pub(super) busy: u64,
    /// idle and iowait.
    pub(super) idle: u64,
    /// Time a virtual CPU wanted to run and the hypervisor ran something else.
    pub(super) steal: u64,
}

impl MachineTicks {
    /// Parses the first (`cpu`, all CPUs) line of `/proc/stat`.
    fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().next()?;
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
            return None;
        };
        Some(MachineTicks {
            busy: user + nice + system + irq + softirq,
            idle: idle + iowait,
            steal,
        })
    }

    pub(super) fn since(&self, earlier: &MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    fn total(&self) -> u64 {
        self.busy + self.idle + self.steal
    }

    pub(super) fn percent(&self, part: u64) -> f64 {
        100.0 * part as f64 / self.total().max(1) as f64
    }
}

pub(super) fn machine_ticks() -> Option<MachineTicks> {
    MachineTicks::parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_cpu_line_parses_and_differences() {
        let before = MachineTicks::parse(
            "cpu  100 5 50 1000 20 3 2 40 0 0\ncpu0 50 2 25 500 10 1 1 20 0 0\n",
        )
        .expect("parses");
        assert_eq!(
            before,
            MachineTicks {
                busy: 160,
                idle: 1020,
                steal: 40
            }
        );
        let after = MachineTicks::parse("cpu  200 5 90 1100 20 3 2 100 0 0\n").expect("parses");
        let d = after.since(&before);
        assert_eq!((d.busy, d.idle, d.steal), (140, 100, 60));
        assert_eq!(d.total(), 300);
        assert!((d.percent(d.steal) - 20.0).abs() < 1e-9);
        assert_eq!(MachineTicks::parse("intr 1 2 3\n"), None);
        assert_eq!(MachineTicks::parse("cpu 1 2 x 4 5 6 7 8\n"), None);
    }
}
