//! A one-line progress bar on stderr (a line every 5 s when stderr is not a terminal).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    started: Instant,
    last_draw: Instant,
    tty: bool,
    every: Duration,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let now = Instant::now();
        Progress {
            label: label.to_owned(),
            total: total.max(1),
            started: now,
            last_draw: now,
            tty,
            every: if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            },
        }
    }

    /// Redraws when due: `done` of the total, and a free-form suffix.
    pub fn tick(&mut self, done: u64, suffix: &str) {
        if self.last_draw.elapsed() < self.every {
            return;
        }
        self.last_draw = Instant::now();
        let share = (done as f64 / self.total as f64).min(1.0);
        let width = 30;
        let filled = (share * width as f64) as usize;
        let bar = format!("{}{}", "=".repeat(filled), " ".repeat(width - filled));
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "{} [{bar}] {:>5.1}% {done}/{} {rate:>9.0}/s {suffix}",
            self.label,
            share * 100.0,
            self.total
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Ends the line.
    pub fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
    }
}
