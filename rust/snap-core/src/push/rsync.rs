//! What rsync says: its `--stats` counts, its progress lines, and a failed
//! run turned into an error an operator can act on.

use super::{PushConfig, TransferStats};
use crate::error::{Error, ErrorKind};
use crate::proc::Output;

/// Parse the numbers of rsync's `--stats` output.
pub fn parse_stats(stdout: &str) -> TransferStats {
    let mut s = TransferStats::default();
    for line in stdout.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let num = value
            .split_whitespace()
            .next()
            .map(|n| n.replace(',', ""))
            .and_then(|n| n.parse::<u64>().ok());
        let Some(num) = num else { continue };
        match key.trim() {
            "Number of files" => s.files = num,
            "Number of regular files transferred" => s.files_transferred = num,
            "Total file size" => s.total_size = num,
            "Total transferred file size" => s.transferred_size = num,
            "Total bytes sent" => s.bytes_sent = num,
            "Total bytes received" => s.bytes_received = num,
            _ => {}
        }
    }
    s
}

/// Parse one `--info=progress2` line: (bytes so far, percent).
pub fn parse_progress2(line: &str) -> Option<(u64, u32)> {
    let mut it = line.split_whitespace();
    let bytes = it.next()?.replace(',', "").parse::<u64>().ok()?;
    let pct = it.next()?.strip_suffix('%')?.parse::<u32>().ok()?;
    Some((bytes, pct))
}

/// Turn a failed rsync run into an error of the right kind with a message an
/// operator can act on. `transient` says whether retrying may help.
pub fn classify_failure(cfg: &PushConfig, what: &str, out: &Output) -> (Error, bool) {
    let text = format!("{}\n{}", out.stderr, out.stdout);
    let server = format!("{}:{}", cfg.server_host, cfg.server_port);
    let has = |needle: &str| text.contains(needle);
    let (kind, message, transient) = if has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || has("Host key verification failed")
        || has("No ED25519 host key is known")
        || has("host key for")
    {
        (
            ErrorKind::Refused,
            format!(
                "the backup server {server} did not present the pinned host key in {} \
                 (key changed, or a different machine answers): refusing to send anything",
                cfg.known_hosts.display()
            ),
            false,
        )
    } else if has("snap-receive:") && !has("busy:") {
        (
            ErrorKind::Refused,
            format!("the backup server {server} refused the transfer"),
            false,
        )
    } else if has("Permission denied (publickey") {
        (
            ErrorKind::Refused,
            format!(
                "the backup server {server} refused this server's key for account {} \
                 (has the backup server been highstated since this key was made?)",
                cfg.account
            ),
            false,
        )
    } else if has("busy: another transfer or a rotation") {
        (
            ErrorKind::Busy,
            format!("the backup server is rotating this server's history right now ({server})"),
            true,
        )
    } else if has("No space left on device") || has("Disk quota exceeded") {
        (
            ErrorKind::DiskFull,
            format!("the backup server {server} ran out of space while receiving"),
            false,
        )
    } else if out.timed_out || out.code == 30 {
        (
            ErrorKind::Network,
            format!("{what} to {server} stalled longer than {}s", cfg.io_timeout),
            true,
        )
    } else if matches!(out.code, 255 | 10 | 12 | 35) {
        (
            ErrorKind::Network,
            format!("cannot reach the backup server {server} ({what})"),
            true,
        )
    } else {
        (
            ErrorKind::Io,
            format!("{what} failed (rsync exit {})", out.code),
            false,
        )
    };
    let detail = out.tail(3);
    let message = if detail.is_empty() {
        message
    } else {
        format!("{message}: {detail}")
    };
    (Error::new(kind, message), transient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::config::tests::cfg;

    #[test]
    fn parses_rsync_stats_and_progress() {
        let out = "Number of files: 1,234 (reg: 1,000, dir: 234)\n\
                   Number of regular files transferred: 12\n\
                   Total file size: 9,876,543 bytes\n\
                   Total transferred file size: 12,345 bytes\n\
                   Total bytes sent: 23,456\nTotal bytes received: 789\n";
        let s = parse_stats(out);
        assert_eq!(s.files, 1234);
        assert_eq!(s.files_transferred, 12);
        assert_eq!(s.total_size, 9876543);
        assert_eq!(s.transferred_size, 12345);
        assert_eq!((s.bytes_sent, s.bytes_received), (23456, 789));
        assert_eq!(
            parse_progress2(
                "  1,238,099,968  45%   39.83MB/s    0:00:29 (xfr#5, ir-chk=1011/2000)"
            ),
            Some((1238099968, 45))
        );
        assert_eq!(parse_progress2("sending incremental file list"), None);
    }

    #[test]
    fn failures_are_classified_for_operators() {
        let c = cfg();
        let out = |code: i32, stderr: &str| Output {
            code,
            stdout: String::new(),
            stderr: stderr.into(),
            timed_out: false,
            seconds: 0.1,
        };
        let (e, t) = classify_failure(
            &c,
            "data",
            &out(255, "ssh: connect to host x port 2222: Connection refused"),
        );
        assert_eq!((e.kind(), t), (ErrorKind::Network, true));
        let (e, t) = classify_failure(
            &c,
            "data",
            &out(
                255,
                "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
            ),
        );
        assert_eq!((e.kind(), t), (ErrorKind::Refused, false));
        assert!(e.to_string().contains("pinned host key"), "{e}");
        let (e, t) = classify_failure(
            &c,
            "data",
            &out(
                1,
                "snap-receive: busy: another transfer or a rotation is using this jail",
            ),
        );
        assert_eq!((e.kind(), t), (ErrorKind::Busy, true));
        let (e, _) = classify_failure(
            &c,
            "data",
            &out(
                23,
                "rsync: write failed on \"x\": No space left on device (28)",
            ),
        );
        assert_eq!(e.kind(), ErrorKind::DiskFull);
    }
}
