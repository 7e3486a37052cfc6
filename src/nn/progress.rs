//! Training progress for a long run: a bar on an interactive terminal, about
//! ten structured log lines per run otherwise, so a run under a service
//! manager still shows that it moves without flooding the log.

/// Progress through `total` steps (or epochs) of training `what`.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    total: usize,
}

impl Progress {
    /// `unit` names a step in the bar (`epochs`, `steps`).
    pub fn new(what: &'static str, unit: &str, total: usize) -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            let template = format!("{what} {{bar:30}} {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, ~{{eta}} left {{msg}}");
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        });
        Progress { bar, what, total }
    }

    /// Step `done` (counted from 1) has finished; `summary` (losses, speed)
    /// is only formatted when it is shown.
    pub fn step(&self, done: usize, summary: impl FnOnce() -> String) {
        let what = self.what;
        match &self.bar {
            Some(bar) => {
                bar.set_message(summary());
                bar.inc(1);
            }
            None if done.is_multiple_of((self.total / 10).max(1)) || done == self.total => {
                tracing::info!(step = done, of = self.total, "{what} training: {}", summary());
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
