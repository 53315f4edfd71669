//! Running the external programs snap drives (rsync, ssh, rsnapshot, hooks):
//! bounded output capture, a timeout that kills the whole process group, and
//! an optional callback per output line (rsync's progress).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How much of each stream is kept (the tail).
pub const KEEP: usize = 64 * 1024;

/// What a finished process left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, or `128 + signal` when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub seconds: f64,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0 && !self.timed_out
    }

    /// The last non-empty lines of stderr (or stdout), for an error message.
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let kept: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        kept[kept.len().saturating_sub(lines)..].join(" | ")
    }
}

fn push_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > KEEP * 2 {
        let cut = buf.len() - KEEP;
        buf.drain(..cut);
    }
}

fn finish_tail(mut buf: Vec<u8>) -> String {
    if buf.len() > KEEP {
        let cut = buf.len() - KEEP;
        buf.drain(..cut);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A callback for each line of output.
pub type OnLine<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Read a stream to its end, keeping the tail; call `on_line` for every line
/// (split on `\n` and `\r`, as rsync rewrites its progress line with `\r`).
fn pump(stream: impl Read, mut on_line: Option<OnLine<'_>>) -> Vec<u8> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut kept = Vec::new();
    let mut line = Vec::new();
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk.to_vec(),
        };
        reader.consume(chunk.len());
        push_tail(&mut kept, &chunk);
        if let Some(cb) = on_line.as_mut() {
            for &b in &chunk {
                if b == b'\n' || b == b'\r' {
                    if !line.is_empty() {
                        cb(&String::from_utf8_lossy(&line));
                        line.clear();
                    }
                } else if line.len() < 4096 {
                    line.push(b);
                }
            }
        }
    }
    if let (Some(cb), false) = (on_line.as_mut(), line.is_empty()) {
        cb(&String::from_utf8_lossy(&line));
    }
    kept
}

fn kill_group(child: &Child) {
    // The child leads its own process group: take its children down with it.
    let _ = rustix::process::kill_process_group(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::KILL,
    );
}

/// Run `cmd` to completion (stdin closed), in its own process group, killing
/// the group after `timeout`. `on_stdout_line` sees stdout line by line.
pub fn run(
    mut cmd: Command,
    timeout: Option<Duration>,
    on_stdout_line: Option<OnLine<'_>>,
) -> Result<Output> {
    let program = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format_args!("starting {program}"), e))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    thread::scope(|scope| {
        let out = scope.spawn(move || pump(stdout, on_stdout_line));
        let err = scope.spawn(move || pump(stderr, None));
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    kill_group(&child);
                    return Err(Error::io(format_args!("waiting for {program}"), e));
                }
            }
            if let Some(limit) = timeout
                && start.elapsed() >= limit
                && !timed_out
            {
                timed_out = true;
                kill_group(&child);
            }
            thread::sleep(Duration::from_millis(20));
        };
        if timed_out {
            // Stray grandchildren may hold the pipes open: the group is dead now.
            kill_group(&child);
        }
        let stdout = finish_tail(out.join().unwrap_or_default());
        let stderr = finish_tail(err.join().unwrap_or_default());
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(Output {
            code,
            stdout,
            stderr,
            timed_out,
            seconds: start.elapsed().as_secs_f64(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn captures_code_and_output() {
        let o = run(sh("echo out; echo err >&2; exit 3"), None, None).unwrap();
        assert_eq!(o.code, 3);
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.tail(1), "err");
        assert!(!o.success());
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let t = Instant::now();
        // The background sleep keeps stdout open: only a group kill ends this.
        let o = run(
            sh("sleep 30 & sleep 30"),
            Some(Duration::from_millis(300)),
            None,
        )
        .unwrap();
        assert!(o.timed_out);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn lines_split_on_carriage_returns() {
        let mut seen = Vec::new();
        let mut collect = |l: &str| seen.push(l.to_string());
        run(sh("printf 'a\\rb\\nc'"), None, Some(&mut collect)).unwrap();
        assert_eq!(seen, vec!["a", "b", "c"]);
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let e = run(Command::new("/nonexistent/prog"), None, None).unwrap_err();
        assert!(
            e.to_string().contains("starting \"/nonexistent/prog\""),
            "{e}"
        );
    }
}
