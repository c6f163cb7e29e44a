//! `forcebridge run` as a child process: started with a config file, its log kept, killed with
//! SIGKILL (as a crash ends it) or stopped with SIGTERM (drain and final checkpoints).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `forcebridge run` child process, its stderr in a log file.
pub struct Run {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Run {
    pub fn start(config: &Path, dir: &Path, index: usize) -> Run {
        let log = dir.join(format!("run-{index}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_forcebridge"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn,forcebridge=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the run log"))
            .spawn()
            .expect("spawn forcebridge run");
        Run {
            child,
            log,
            started: Instant::now(),
        }
    }

    /// Panics with the log's tail if the process exited by itself.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "forcebridge exited by itself with {status}; log tail:\n{}",
                self.log_tail()
            );
        }
    }

    pub fn sigkill(mut self) -> Duration {
        self.assert_alive();
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait for the killed process");
        self.started.elapsed()
    }

    /// SIGTERM, then waits for a clean exit (drain and final checkpoint).
    pub fn terminate(mut self) {
        self.assert_alive();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "graceful stop failed: {status}; log tail:\n{}",
                    self.log_tail()
                );
                return;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
