//! CPU time the hypervisor took from this machine while a run was measured.
//!
//! On a shared virtual machine the host may stop the guest's CPUs — on the project's
//! machine both at once, for 50–100 ms, several times a minute under load — and every
//! system under test stalls with them: the stop shows as the longest silence and the
//! maximum latency of whatever ran then, and an `fdatasync` that spans it looks 100 ms
//! slow. The guest's kernel counts that time as *steal* (`/proc/stat`). A thread reads the
//! counter every tick, so that a report can say how much of its measured phase, and of
//! its longest silence, the host took.
//!
//! The clock tick that `/proc` counts in is found here too, once, for the per-process
//! CPU times of [`crate::node`] as well.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the counter is read: the kernel counts steal in ticks of 10 ms.
const EVERY: Duration = Duration::from_millis(10);

/// Samples kept: the last 20 minutes.
const KEPT: usize = 120_000;

/// What the kernel had counted at an instant, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counted {
    /// Time the host took.
    stolen: Duration,
    /// Time with nothing to run (idle and waiting for I/O).
    idle: Duration,
}

/// One reading of the counters, and when it was taken.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    counted: Counted,
}

/// Between two instants, per CPU on average: what the host took, and how long the CPU
/// had nothing to run.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Between {
    /// Taken by the host (steal).
    stolen: Duration,
    /// With nothing to run (idle and waiting for I/O).
    idle: Duration,
}

/// The readings of the last [`KEPT`] ticks, oldest first, and how many CPUs they sum.
struct Samples {
    ring: VecDeque<Sample>,
    cpus: u32,
}

static SAMPLES: OnceLock<Option<Mutex<Samples>>> = OnceLock::new();

/// Starts sampling, once per process; where `/proc/stat` cannot be read, nothing is
/// reported.
pub fn watch() {
    SAMPLES.get_or_init(|| {
        let tick = clock_tick()?;
        let (cpus, counted) = read(tick)?;
        let ring = VecDeque::from([Sample {
            at: Instant::now(),
            counted,
        }]);
        std::thread::Builder::new()
            .name("steal-watch".into())
            .spawn(move || sample_forever(tick))
            .ok()?;
        Some(Mutex::new(Samples { ring, cpus }))
    });
}

/// The sampling thread: a reading every [`EVERY`], for the life of the process.
fn sample_forever(tick: Duration) {
    loop {
        std::thread::sleep(EVERY);
        let Some((_, counted)) = read(tick) else {
            continue;
        };
        let Some(Some(samples)) = SAMPLES.get() else {
            continue;
        };
        let mut samples = samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.ring.len() == KEPT {
            samples.ring.pop_front();
        }
        samples.ring.push_back(Sample {
            at: Instant::now(),
            counted,
        });
    }
}

/// What each CPU, on average, lost to the host and spent idle between `from` and `to`
/// (to the sampling's resolution: from the last sample before `from` to the first after
/// `to`). `None` if nothing was sampled then.
fn per_cpu(from: Instant, to: Instant) -> Option<Between> {
    let samples = SAMPLES.get()?.as_ref()?;
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
    between(&samples.ring, samples.cpus, from, to)
}

/// The CPU figures of a report measured from `from` to `to` whose longest silence was
/// `silence`: its JSON and its words for the summary. `None` if nothing was sampled.
pub(crate) fn report(
    from: Instant,
    to: Instant,
    silence: Option<(Instant, Instant)>,
) -> Option<(Value, String)> {
    let phase = per_cpu(from, to)?;
    let length = to.duration_since(from).as_secs_f64().max(1e-9);
    let percent = |d: Duration| 100.0 * d.as_secs_f64() / length;
    let (stolen, idle) = (percent(phase.stolen), percent(phase.idle));
    let in_silence = silence
        .and_then(|(from, to)| per_cpu(from, to))
        .map_or(0.0, |d| d.stolen.as_secs_f64() * 1000.0);
    let json = json!({
        "idle_percent": idle, "stolen_percent": stolen,
        "stolen_in_longest_silence_ms": in_silence,
    });
    let said = format!(
        "; CPUs idle {idle:.0} %, taken by the host {stolen:.1} % ({in_silence:.0} ms in that silence)"
    );
    Some((json, said))
}

fn between(ring: &VecDeque<Sample>, cpus: u32, from: Instant, to: Instant) -> Option<Between> {
    let before = ring.iter().rev().find(|s| s.at <= from)?.counted;
    let after = ring.iter().find(|s| s.at >= to).or(ring.back())?.counted;
    let cpus = cpus.max(1);
    Some(Between {
        stolen: after.stolen.saturating_sub(before.stolen) / cpus,
        idle: after.idle.saturating_sub(before.idle) / cpus,
    })
}

/// The number of CPUs and what they counted so far, from `/proc/stat`'s first lines.
fn read(tick: Duration) -> Option<(u32, Counted)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse(&stat, tick)
}

fn parse(stat: &str, tick: Duration) -> Option<(u32, Counted)> {
    let mut lines = stat.lines();
    // "cpu  user nice system idle iowait irq softirq steal …", in ticks.
    let ticks: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let (idle, iowait, steal) = (*ticks.get(3)?, *ticks.get(4)?, *ticks.get(7)?);
    let cpus = lines
        .take_while(|l| l.starts_with("cpu"))
        .count()
        .try_into()
        .ok()?;
    let tick = u64::try_from(tick.as_nanos()).ok()?;
    let time = |ticks: u64| tick.checked_mul(ticks).map(Duration::from_nanos);
    let counted = Counted {
        stolen: time(steal)?,
        idle: time(idle.checked_add(iowait)?)?,
    };
    Some((cpus, counted))
}

/// The length of the kernel's clock tick, the unit of `/proc`'s CPU times (`getconf
/// CLK_TCK`), asked once per process.
pub(crate) fn clock_tick() -> Option<Duration> {
    static TICK: OnceLock<Option<Duration>> = OnceLock::new();
    *TICK.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()?;
        let per_sec: u32 = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
        (per_sec > 0).then(|| Duration::from_secs(1) / per_sec)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_number_idle_the_fourth_and_fifth_and_every_cpu_line_counts() {
        let stat = "cpu  10 0 5 100 1 0 2 37 0 0\ncpu0 5 0 3 50 1 0 1 18 0 0\n\
                    cpu1 5 0 2 50 0 0 1 19 0 0\nintr 1 2 3\n";
        let ms = Duration::from_millis;
        let (cpus, counted) = parse(stat, ms(10)).unwrap();
        assert_eq!(cpus, 2);
        assert_eq!(
            counted,
            Counted {
                stolen: ms(370),
                idle: ms(1010)
            }
        );
        assert!(parse("intr 1 2 3\n", ms(10)).is_none());
    }

    #[test]
    fn what_happened_between_two_instants_is_taken_from_the_samples_around_them() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        // Two CPUs; the host takes both for 100 ms between 20 and 130 ms, then they idle.
        let counts = [
            (0, 0, 0),
            (10, 0, 0),
            (20, 0, 0),
            (130, 200, 0),
            (150, 202, 30),
        ];
        let ring: VecDeque<_> = counts
            .into_iter()
            .map(|(at, stolen, idle)| Sample {
                at: start + ms(at),
                counted: Counted {
                    stolen: ms(stolen),
                    idle: ms(idle),
                },
            })
            .collect();
        let silence = between(&ring, 2, start + ms(25), start + ms(125)).unwrap();
        assert_eq!((silence.stolen, silence.idle), (ms(100), ms(0)));
        let before = between(&ring, 2, start, start + ms(20)).unwrap();
        assert_eq!(before.stolen, ms(0));
        // To the last sample when `to` is past it.
        let all = between(&ring, 2, start, start + ms(900)).unwrap();
        assert_eq!((all.stolen, all.idle), (ms(101), ms(15)));
        assert!(between(&ring, 2, start - ms(1), start + ms(20)).is_none());
    }
}
