//! Test harness: a moto server per test (stopped by a guard, even on panic),
//! a loopback TCP proxy that records requests and can drop connections, and
//! small helpers. Network traffic stays on 127.0.0.1.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use snap_offsite::TargetConfig;

pub const BUCKET: &str = "snap-offsite-test";
pub const VAULT: &str = "snap-offsite-vault";
pub const PREFIX: &str = "backups";
pub const MIB: usize = 1024 * 1024;

/// The Python that runs moto: `SNAP_TEST_PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("SNAP_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server on 127.0.0.1, killed when dropped. It also dies with the
/// thread that started it (PR_SET_PDEATHSIG), should the test process die.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// moto's version for `python()`; panics with a clear message below 5.2.5.
/// moto 5.2.1 (Debian's python3 here) answers CompleteMultipartUpload with a
/// `CompleteMultipartUploadResponse` root the Rust SDK rejects, and rejects
/// the signatures of `?uploads` requests once IAM auth is on.
pub fn check_moto_version() {
    static CHECKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let version = CHECKED.get_or_init(|| {
        let out = Command::new(python())
            .args(["-c", "import moto; print(moto.__version__)"])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python()));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    assert!(
        parts.len() >= 3 && (parts[0], parts[1], parts[2]) >= (5, 2, 5),
        "these tests need moto[server] >= 5.2.5 for {} (found {version:?}); \
         set SNAP_TEST_PYTHON to a Python that has it",
        python()
    );
}

impl Moto {
    pub fn start() -> Moto {
        check_moto_version();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let mut cmd = Command::new(python());
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto with {}: {e}", python()));
        let moto = Moto { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /moto-api/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on port {port} within 30 s: {}",
                std::fs::read_to_string(moto.dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// Bucket with Object Lock, a vault, users `admin` and `putonly`, then
    /// IAM enforcement on (see tests/moto_setup.py).
    pub fn setup_iam(&self) {
        self.setup(true)
    }

    /// The same resources; IAM enforcement only if `auth`.
    pub fn setup(&self, auth: bool) {
        let mut cmd = Command::new(python());
        cmd.arg(tests_dir().join("moto_setup.py"))
            .args([&self.endpoint(), BUCKET, VAULT, PREFIX])
            .arg(self.credentials());
        if !auth {
            cmd.arg("noauth");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "moto_setup.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("\"status\": \"ok\""), "reset-auth: {text}");
    }

    /// Target config for `profile` against `endpoint` (moto or a proxy).
    pub fn config(&self, profile: &str, endpoint: &str) -> TargetConfig {
        TargetConfig::s3(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_profile(profile)
            .with_credentials_file(self.credentials())
            .with_part_size(5 * MIB as u64)
            .with_retries(2, 3, Duration::from_millis(50))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// An admin (or any profile) SDK client for checks the crate does not offer.
pub fn raw_client(moto: &Moto, profile: &str) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let files = EnvConfigFiles::builder()
        .with_file(EnvConfigFileKind::Credentials, moto.credentials())
        .build();
    let sdk = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .profile_files(files)
            .profile_name(profile)
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .load(),
    );
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    (rt, aws_sdk_s3::Client::from_conf(conf))
}

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Pass everything.
    None,
    /// Cut the connection once, when the client has sent this many bytes in total.
    DropUploadOnceAt(u64),
    /// Cut the connection when the client has sent this many bytes in total,
    /// then refuse every later connection: the network is gone.
    DeadAfterUpload(u64),
    /// Cut the connection once, when the server has sent this many bytes in total.
    DropDownloadOnceAt(u64),
    /// Once the server has sent this many bytes in total, forward nothing
    /// more from it on any connection, and close none: the client waits
    /// for a body chunk or an answer that never comes.
    StallDownloadAt(u64),
    /// Once the server has sent this many bytes in total, pass the rest on
    /// one byte every 100 ms, on every connection: a server that is never
    /// silent for long but never gets anywhere.
    TrickleDownloadAt(u64),
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, recording what clients send.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
    pub drops: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    recorded: Recorded,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    listener: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let drops = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let dead = Arc::new(AtomicBool::new(false));
        let handle = {
            let (stop, connections, drops, sent, received, recorded, sockets) = (
                stop.clone(),
                connections.clone(),
                drops.clone(),
                sent.clone(),
                received.clone(),
                recorded.clone(),
                sockets.clone(),
            );
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    if dead.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    sockets.lock().unwrap().push(client.try_clone().unwrap());
                    sockets.lock().unwrap().push(server.try_clone().unwrap());
                    let index = {
                        let mut r = recorded.lock().unwrap();
                        r.push(Vec::new());
                        r.len() - 1
                    };
                    let up = Pump {
                        from: client.try_clone().unwrap(),
                        to: server.try_clone().unwrap(),
                        counter: sent.clone(),
                        limit: match fault {
                            Fault::DropUploadOnceAt(n) | Fault::DeadAfterUpload(n) => Some(n),
                            _ => None,
                        },
                        stall: false,
                        trickle: false,
                        kill_forever: matches!(fault, Fault::DeadAfterUpload(_)),
                        dead: dead.clone(),
                        drops: drops.clone(),
                        record: Some((recorded.clone(), index)),
                    };
                    let down = Pump {
                        from: server,
                        to: client,
                        counter: received.clone(),
                        limit: match fault {
                            Fault::DropDownloadOnceAt(n)
                            | Fault::StallDownloadAt(n)
                            | Fault::TrickleDownloadAt(n) => Some(n),
                            _ => None,
                        },
                        stall: matches!(fault, Fault::StallDownloadAt(_)),
                        trickle: matches!(fault, Fault::TrickleDownloadAt(_)),
                        kill_forever: false,
                        dead: dead.clone(),
                        drops: drops.clone(),
                        record: None,
                    };
                    std::thread::spawn(move || up.run());
                    std::thread::spawn(move || down.run());
                }
            })
        };
        Proxy {
            port,
            stop,
            connections,
            drops,
            sent,
            received,
            recorded,
            sockets,
            listener: Some(handle),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests seen so far: (request line, header lines with lower-case names).
    pub fn requests(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for stream in self.recorded.lock().unwrap().iter() {
            let mut pos = 0;
            while let Some(start) = find_request(stream, pos) {
                let Some(end) = find(stream, b"\r\n\r\n", start) else {
                    break;
                };
                let block = String::from_utf8_lossy(&stream[start..end]).to_string();
                let (line, headers) = block.split_once("\r\n").unwrap_or((&block, ""));
                // Header names lower-cased, values as sent.
                let headers: Vec<String> = headers
                    .lines()
                    .map(|l| match l.split_once(':') {
                        Some((k, v)) => format!("{}:{v}", k.to_ascii_lowercase()),
                        None => l.to_string(),
                    })
                    .collect();
                out.push((line.to_string(), headers.join("\n")));
                pos = end + 4;
            }
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Next position where an HTTP request line starts.
fn find_request(hay: &[u8], from: usize) -> Option<usize> {
    let mut best: Option<usize> = None;
    for m in [&b"GET /"[..], b"PUT /", b"POST /", b"HEAD /", b"DELETE /"] {
        let mut p = from;
        while let Some(i) = find(hay, m, p) {
            // Must be at a line start and the line must end in HTTP/1.x.
            let at_line_start = i == 0 || hay[i - 1] == b'\n';
            let line_end = find(hay, b"\r\n", i).unwrap_or(hay.len());
            let ok = at_line_start && hay[i..line_end].ends_with(b" HTTP/1.1");
            if ok {
                best = Some(best.map_or(i, |b| b.min(i)));
                break;
            }
            p = i + 1;
        }
    }
    best
}

/// Bytes each connection's client sent.
type Recorded = Arc<Mutex<Vec<Vec<u8>>>>;

struct Pump {
    from: TcpStream,
    to: TcpStream,
    counter: Arc<AtomicU64>,
    limit: Option<u64>,
    /// Past `limit`, swallow what comes and keep the connection open.
    stall: bool,
    /// Past `limit`, pass bytes on one every 100 ms.
    trickle: bool,
    kill_forever: bool,
    dead: Arc<AtomicBool>,
    drops: Arc<AtomicUsize>,
    record: Option<(Recorded, usize)>,
}

impl Pump {
    fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let before = self.counter.fetch_add(n as u64, Ordering::SeqCst);
            if let (true, Some(limit)) = (self.trickle, self.limit)
                && before + n as u64 > limit
            {
                let keep = limit.saturating_sub(before) as usize;
                if self.to.write_all(&buf[..keep]).is_err() {
                    break;
                }
                for b in &buf[keep..n] {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if self.to.write_all(std::slice::from_ref(b)).is_err() {
                        return;
                    }
                }
                continue;
            }
            if let (true, Some(limit)) = (self.stall, self.limit)
                && before + n as u64 > limit
            {
                let keep = limit.saturating_sub(before) as usize;
                if keep > 0 {
                    let _ = self.to.write_all(&buf[..keep]);
                }
                continue;
            }
            if let Some(limit) = self.limit {
                let first_drop = self.drops.load(Ordering::SeqCst) == 0;
                if before < limit && before + n as u64 >= limit && (first_drop || self.kill_forever)
                {
                    // Forward part of the chunk, then cut both directions.
                    let keep = (limit - before) as usize;
                    let _ = self.to.write_all(&buf[..keep.min(n)]);
                    self.drops.fetch_add(1, Ordering::SeqCst);
                    if self.kill_forever {
                        self.dead.store(true, Ordering::SeqCst);
                    }
                    let _ = self.from.shutdown(Shutdown::Both);
                    let _ = self.to.shutdown(Shutdown::Both);
                    return;
                }
            }
            if self.kill_forever && self.dead.load(Ordering::SeqCst) {
                let _ = self.from.shutdown(Shutdown::Both);
                let _ = self.to.shutdown(Shutdown::Both);
                return;
            }
            if let Some((rec, i)) = &self.record {
                rec.lock().unwrap()[*i].extend_from_slice(&buf[..n]);
            }
            if self.to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if self.stall
            && self
                .limit
                .is_some_and(|l| self.counter.load(Ordering::SeqCst) > l)
        {
            return; // held open until the proxy is dropped
        }
        let _ = self.to.shutdown(Shutdown::Write);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        for s in self.sockets.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Independent tree hash of `data` by tests/tree_hash.py (hashlib).
pub fn python_tree_hash(dir: &Path, data: &[u8]) -> String {
    let path = dir.join(format!("th-{}", data.len()));
    std::fs::write(&path, data).unwrap();
    let out = Command::new(python())
        .arg(tests_dir().join("tree_hash.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
