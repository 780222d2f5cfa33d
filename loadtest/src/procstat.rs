//! Reads a process's CPU time, run-queue wait and memory from /proc,
//! samples them over a run, and reads the machine's load average.
//!
//! The run-queue wait (time a thread was ready to run but waited for a
//! core, /proc/<pid>/task/*/schedstat) tells whether a run was bound by the
//! machine's cores: on 2 cores shared by the broker, the simulator, the
//! gateway and the load test, a process that waits about as long as it runs
//! is starved, and a faster gateway shows up only as more CPU for the others.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    /// Seconds its threads (those alive now) spent runnable but waiting
    /// for a core; 0 where schedstat is not available.
    pub wait_secs: f64,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// Reads `pid`'s CPU time and RSS; `None` once it is gone.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Sample {
        at: Instant::now(),
        cpu_secs: (utime + stime) / ticks_per_sec(),
        wait_secs: run_queue_wait(pid),
        rss: rss_kb * 1024,
    })
}

/// The run-queue wait of every live thread of `pid`, seconds (the second
/// field of /proc/<pid>/task/<tid>/schedstat, in nanoseconds).
fn run_queue_wait(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// The first process whose command name is `comm` (e.g. the broker's `beam.smp`).
pub fn find_by_name(comm: &str) -> Option<u32> {
    let dir = std::fs::read_dir("/proc").ok()?;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
}

/// The 1-minute load average and the number of cores.
pub fn machine() -> (f64, usize) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (load, cores)
}

/// The machine's CPU time so far (all cores, clock ticks): the total and
/// the part the hypervisor gave to other guests (`steal` in `/proc/stat`).
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now, or `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<CpuTimes> {
        parse_cpu_line(std::fs::read_to_string("/proc/stat").ok()?.lines().next()?)
    }

    /// The share of the machine's CPU time stolen since `self` (0.0 ..= 1.0).
    pub fn stolen_since(self) -> Option<f64> {
        let now = CpuTimes::now()?;
        let total = now.total.checked_sub(self.total).filter(|&t| t > 0)?;
        Some(now.steal.saturating_sub(self.steal) as f64 / total as f64)
    }
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: guest time is
/// already inside user and nice, so it is left out of the total.
fn parse_cpu_line(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some(CpuTimes {
        total: v.iter().sum(),
        steal: *v.get(7)?,
    })
}

/// Puts this process under SCHED_RR (priority 10); threads and children
/// created afterwards inherit it.
pub fn realtime_self() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads `param` only during the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The CPUs each thread of `pid` may run on, as `taskset` lists them (e.g.
/// `0-1`). Threads may differ: RabbitMQ binds each scheduler thread to a
/// CPU of its own (`+stbt db`).
pub fn thread_cpu_lists(pid: u32) -> Option<Vec<(u32, String)>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let lists: Vec<(u32, String)> = tasks
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
            Some((tid, cpus.trim().to_string()))
        })
        .collect();
    (!lists.is_empty()).then_some(lists)
}

/// The CPUs of `pid`'s main thread, which the threads it starts inherit.
pub fn process_cpu_list(pid: u32) -> Option<String> {
    thread_cpu_lists(pid)?
        .into_iter()
        .find(|(tid, _)| *tid == pid)
        .map(|(_, cpus)| cpus)
}

/// Sets the CPUs of one thread (util-linux `taskset -p`).
pub fn pin_thread(tid: u32, cpus: &str) -> std::io::Result<()> {
    util_linux("taskset", &["-p", "-c", cpus, &tid.to_string()])
}

/// Sets the CPUs of every thread of `pid`; the threads they start later
/// inherit it. A thread that ends meanwhile is passed over: `taskset -a`
/// failed the whole call for it (seen in CI, where the tests beside this
/// one start and end threads in the same process).
pub fn pin_pid(pid: u32, cpus: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let name = entry?.file_name();
        let Some(tid) = name.to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        if let Err(e) = pin_thread(tid, cpus) {
            if std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Sets every thread of `pid` to SCHED_RR 10 (`on`) or back to SCHED_OTHER (util-linux `chrt`).
pub fn realtime_pid(pid: u32, on: bool) -> std::io::Result<()> {
    let pid = pid.to_string();
    if on {
        util_linux("chrt", &["-r", "-a", "-p", "10", &pid])
    } else {
        util_linux("chrt", &["-o", "-a", "-p", "0", &pid])
    }
}

/// Runs a util-linux tool quietly; its failure is an error naming the command.
fn util_linux(tool: &str, args: &[&str]) -> std::io::Result<()> {
    let status = std::process::Command::new(tool)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{tool} {} failed",
            args.join(" ")
        )))
    }
}

/// Samples one process every `every` on its own thread until dropped.
#[derive(Debug)]
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(x) = sample(pid) else { break };
                s.lock().unwrap_or_else(PoisonError::into_inner).push(x);
                std::thread::sleep(every);
            }
        });
        Sampler { samples, stop }
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The latest RSS, bytes.
    pub fn rss_now(&self) -> u64 {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .map_or(0, |s| s.rss)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// CPU and memory of one process over a window of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU used in the window, in cores (1.0 = one core busy).
    pub cores: f64,
    /// Time runnable but waiting for a core in the window, in cores
    /// (summed over threads: 0.5 = half a core's worth of waiting).
    pub waiting: f64,
    pub rss_peak: u64,
    pub rss_last: u64,
}

/// Usage between `from` and `to` from a sampler's samples.
pub fn usage(samples: &[Sample], from: Instant, to: Instant) -> Option<Usage> {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .collect();
    let (first, last) = (inside.first()?, inside.last()?);
    let secs = last.at.duration_since(first.at).as_secs_f64();
    let per_sec = |d: f64| if secs > 0.0 { d / secs } else { 0.0 };
    Some(Usage {
        cores: per_sec(last.cpu_secs - first.cpu_secs),
        // Threads that ended in the window take their wait with them.
        waiting: per_sec((last.wait_secs - first.wait_secs).max(0.0)),
        rss_peak: inside.iter().map(|s| s.rss).max().unwrap_or(0),
        rss_last: last.rss,
    })
}

/// Averages of RSS in the first and the last fifth of the samples (a soak's
/// flatness check), bytes.
pub fn rss_trend(samples: &[Sample]) -> Option<(u64, u64)> {
    let fifth = samples.len() / 5;
    if fifth == 0 {
        return None;
    }
    let avg = |s: &[Sample]| s.iter().map(|x| x.rss).sum::<u64>() / s.len() as u64;
    Some((
        avg(&samples[..fifth]),
        avg(&samples[samples.len() - fifth..]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap_or_else(|| unreachable!());
        assert!(s.rss > 0);
        assert!(s.cpu_secs >= 0.0);
        assert!(sample(u32::MAX).is_none());
    }

    #[test]
    fn usage_over_a_window() {
        let t0 = Instant::now();
        let at = |ms: u64, cpu: f64, rss: u64| Sample {
            at: t0 + Duration::from_millis(ms),
            cpu_secs: cpu,
            wait_secs: cpu / 2.0,
            rss,
        };
        let s = vec![at(0, 1.0, 10), at(1000, 1.5, 30), at(2000, 2.5, 20)];
        let u = usage(&s, t0, t0 + Duration::from_secs(2)).unwrap_or_default();
        assert!((u.cores - 0.75).abs() < 1e-9);
        assert!((u.waiting - 0.375).abs() < 1e-9);
        assert_eq!((u.rss_peak, u.rss_last), (30, 20));
        assert_eq!(rss_trend(&[at(0, 0.0, 5); 10]), Some((5, 5)));
    }

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let t =
            parse_cpu_line("cpu  100 5 20 800 10 1 2 62 40 0").unwrap_or_else(|| unreachable!());
        assert_eq!((t.total, t.steal), (1000, 62));
        assert!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8").is_none());
        assert!(parse_cpu_line("cpu 1 2 3").is_none());
        assert!(CpuTimes::now().is_some());
    }
}
