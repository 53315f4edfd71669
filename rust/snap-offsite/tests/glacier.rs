//! Glacier vaults: the tree hash against an independent implementation,
//! upload_archive and retrieval against moto's Glacier, and the multipart
//! flow against a stand-in endpoint.
//!
//! STAND-IN: moto's Glacier has no multipart upload, no vault lock and no
//! tree-hash check, and no real Glacier can run here, so the multipart test
//! talks to a minimal fake Glacier HTTP endpoint written below. It checks what
//! AWS checks: every part's `x-amz-sha256-tree-hash` against the body (with a
//! plain level-by-level implementation in this file), part alignment and
//! size, and at completion the archive size and the whole-archive tree hash
//! (with tests/tree_hash.py, hashlib only).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use sha2::{Digest, Sha256};
use snap_offsite::{
    ArchiveTarget, ErrorKind, GlacierTarget, LIST_MAX_PAGES, Progress, PutOptions, RetrievalStatus,
    RetrievalTier, TargetConfig, abort_stale, archive_key, error_from_io, tree_hash,
};

#[test]
fn tree_hash_agrees_with_an_independent_python_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [
        0,
        1,
        1000,
        MIB - 1,
        MIB,
        MIB + 1,
        2 * MIB,
        3 * MIB,
        6 * MIB + MIB / 2, // the guide's example 1
        17 * MIB + 123,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let d = data(size, 100 + i as u64);
        let ours = hex::encode(tree_hash(&d));
        let theirs = python_tree_hash(dir.path(), &d);
        assert_eq!(ours, theirs, "size {size}");
    }
    // A concrete value, computed once with tests/tree_hash.py (and by hand
    // with hashlib as H(H(h1,h2),H(h3,h4))), so that a change in both
    // implementations at once is caught too: 3 MiB + 5 zero bytes.
    let zeros = vec![0u8; 3 * MIB + 5];
    assert_eq!(
        hex::encode(tree_hash(&zeros)),
        "dd54197080fdf8d8d31161691802a4b24b97e15a513f782e5f0ce1553f9845b3"
    );
}

fn glacier_config(moto: &Moto, profile: &str) -> TargetConfig {
    TargetConfig::glacier(VAULT)
        .with_region("us-east-1")
        .with_endpoint(moto.endpoint())
        .with_profile(profile)
        .with_credentials_file(moto.credentials())
        .with_retries(2, 2, Duration::from_millis(50))
}

#[test]
fn upload_archive_and_retrieval_against_moto() {
    let moto = Moto::start();
    // Without IAM enforcement: moto rejects the signatures of Glacier GETs
    // (ListJobs, GetJobOutput) once it is on (see tests/moto_setup.py).
    moto.setup(false);
    let t = GlacierTarget::new(glacier_config(&moto, "admin")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // put_small: one UploadArchive request.
    let manifest = data(2 * MIB + 77, 7);
    let description = archive_key(PREFIX, SystemTime::now(), ".json").unwrap();
    let r = t
        .put_small(&description, &manifest, &PutOptions::manifest())
        .unwrap();
    assert_eq!(
        r.tree_hash.as_deref(),
        Some(python_tree_hash(dir.path(), &manifest).as_str())
    );
    assert_eq!(r.sha256, sha256_hex(&manifest));
    let archive_id = r.key.clone();
    assert!(!archive_id.is_empty());

    // A small archive through the writer: below the part size it is one
    // UploadArchive as well.
    let small = data(300_000, 8);
    let progress = Progress::silent("upload");
    let mut w = t
        .create_writer(
            &archive_key(PREFIX, SystemTime::now(), ".gpg").unwrap(),
            &PutOptions::archive(),
            &progress,
        )
        .unwrap();
    w.write_all(&small).map_err(error_from_io).unwrap();
    let r2 = w.finish().unwrap();
    assert_eq!(r2.parts, 0);
    assert_eq!(progress.done(), small.len() as u64);
    assert_ne!(r2.key, archive_id);

    // Vaults have no per-archive HEAD or listing.
    assert_eq!(
        t.head(&archive_id).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    // Retrieval: a job, then its output.
    assert_eq!(
        t.retrieval_status(&archive_id).unwrap(),
        RetrievalStatus::NotRequested
    );
    let e = t
        .get(&archive_id, 0, &mut Vec::new(), &Progress::silent("get"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotReady, "{e}");
    let st = t
        .request_retrieval(&archive_id, 1, RetrievalTier::Expedited)
        .unwrap();
    assert_eq!(st, RetrievalStatus::InProgress);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.retrieval_status(&archive_id).unwrap().is_readable() {
        assert!(
            Instant::now() < deadline,
            "moto's expedited job did not finish"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut got = Vec::new();
    let n = t
        .get(&archive_id, 0, &mut got, &Progress::silent("get"))
        .unwrap();
    assert_eq!(n, manifest.len() as u64);
    assert_eq!(sha256_hex(&got), sha256_hex(&manifest));
}

// ---------------------------------------------------------------------------
// The stand-in Glacier endpoint (see the module comment).

/// Level-by-level tree hash, written here independently of the crate.
fn reference_tree_hash(data: &[u8]) -> String {
    let mut level: Vec<[u8; 32]> = data.chunks(MIB).map(|c| Sha256::digest(c).into()).collect();
    if level.is_empty() {
        level.push(Sha256::digest([]).into());
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    let mut h = Sha256::new();
                    h.update(p[0]);
                    h.update(p[1]);
                    h.finalize().into()
                } else {
                    p[0]
                }
            })
            .collect();
    }
    hex::encode(level[0])
}

#[derive(Default)]
struct Upload {
    description: String,
    part_size: u64,
    parts: BTreeMap<u64, Vec<u8>>,
}

#[derive(Default)]
struct FakeState {
    uploads: HashMap<String, Upload>,
    archives: HashMap<String, Vec<u8>>,
    parts_verified: usize,
    completes_verified: usize,
    aborted: Vec<String>,
    failures: Vec<String>,
    next_id: u64,
    /// Incomplete uploads listed one a page, the marker their index.
    one_a_page: bool,
    /// Every listing page empty, with a new marker: pages without end.
    endless: bool,
    /// With `one_a_page`, the second page names the marker of the first
    /// again: a listing that would go round (or end early, silently).
    repeat: bool,
    /// Listing requests are read and never answered.
    silent: bool,
    list_requests: usize,
}

struct FakeGlacier {
    port: u16,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    _tmp: tempfile::TempDir,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut it = line.split_whitespace();
    let method = it.next()?.to_string();
    let path = it.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    if headers
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn respond(w: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    let _ = w.write_all(out.as_bytes());
}

fn error(w: &mut TcpStream, state: &Mutex<FakeState>, message: String) {
    state.lock().unwrap().failures.push(message.clone());
    let body = format!(
        r#"{{"code":"InvalidParameterValueException","message":{message:?},"type":"Client"}}"#
    );
    respond(
        w,
        "400 Bad Request",
        &[
            ("Content-Type", "application/json".into()),
            ("x-amzn-ErrorType", "InvalidParameterValueException".into()),
        ],
        &body,
    );
}

fn not_found(w: &mut TcpStream, id: &str) {
    let body = format!(
        r#"{{"code":"ResourceNotFoundException","message":"no upload {id}","type":"Client"}}"#
    );
    respond(
        w,
        "404 Not Found",
        &[
            ("Content-Type", "application/json".into()),
            ("x-amzn-ErrorType", "ResourceNotFoundException".into()),
        ],
        &body,
    );
}

impl FakeGlacier {
    fn start() -> FakeGlacier {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let tmp = tempfile::tempdir().unwrap();
        let tmp_path = tmp.path().to_path_buf();
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let tmp_path = tmp_path.clone();
                    std::thread::spawn(move || {
                        let mut w = conn.try_clone().unwrap();
                        let mut r = BufReader::new(conn);
                        while let Some(req) = read_request(&mut r, &mut w) {
                            handle(&req, &mut w, &state, &tmp_path);
                        }
                    });
                }
            })
        };
        FakeGlacier {
            port,
            state,
            stop,
            _tmp: tmp,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeGlacier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(req: &Request, w: &mut TcpStream, state: &Mutex<FakeState>, tmp: &std::path::Path) {
    let path = req.path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /-/vaults/{vault}/multipart-uploads[/{id}]
    if segs.len() < 4 || segs[0] != "-" || segs[1] != "vaults" || segs[3] != "multipart-uploads" {
        return error(
            w,
            state,
            format!("unexpected request {} {}", req.method, req.path),
        );
    }
    let vault = segs[2];
    let id = segs.get(4).copied();
    let h = |k: &str| req.headers.get(k).cloned().unwrap_or_default();
    match (req.method.as_str(), id) {
        ("POST", None) => {
            let part_size: u64 = h("x-amz-part-size").parse().unwrap_or(0);
            if part_size < MIB as u64
                || !part_size.is_power_of_two()
                || part_size > 4096 * MIB as u64
            {
                return error(w, state, format!("bad part size {part_size}"));
            }
            let mut s = state.lock().unwrap();
            s.next_id += 1;
            let id = format!("upload-{}", s.next_id);
            s.uploads.insert(
                id.clone(),
                Upload {
                    description: h("x-amz-archive-description"),
                    part_size,
                    parts: BTreeMap::new(),
                },
            );
            respond(
                w,
                "201 Created",
                &[
                    ("x-amz-multipart-upload-id", id.clone()),
                    (
                        "Location",
                        format!("/-/vaults/{vault}/multipart-uploads/{id}"),
                    ),
                ],
                "",
            );
        }
        ("PUT", Some(id)) => {
            let range = h("content-range");
            let Some((a, b)) = range
                .strip_prefix("bytes ")
                .and_then(|r| r.strip_suffix("/*"))
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                return error(w, state, format!("bad Content-Range {range:?}"));
            };
            let ours = reference_tree_hash(&req.body);
            if h("x-amz-sha256-tree-hash") != ours {
                return error(
                    w,
                    state,
                    format!("part tree hash {} != {ours}", h("x-amz-sha256-tree-hash")),
                );
            }
            if h("x-amz-content-sha256") != hex::encode(Sha256::digest(&req.body)) {
                return error(
                    w,
                    state,
                    "x-amz-content-sha256 does not match the body".into(),
                );
            }
            let mut s = state.lock().unwrap();
            let Some(up) = s.uploads.get_mut(id) else {
                // A part still in flight when its upload was aborted.
                drop(s);
                return not_found(w, id);
            };
            if b + 1 - a != req.body.len() as u64
                || a % up.part_size != 0
                || req.body.len() as u64 > up.part_size
            {
                let msg = format!("part {a}-{b} does not fit part size {}", up.part_size);
                drop(s);
                return error(w, state, msg);
            }
            up.parts.insert(a, req.body.clone());
            s.parts_verified += 1;
            respond(w, "204 No Content", &[("x-amz-sha256-tree-hash", ours)], "");
        }
        ("POST", Some(id)) => {
            let mut s = state.lock().unwrap();
            let Some(up) = s.uploads.remove(id) else {
                drop(s);
                return not_found(w, id);
            };
            drop(s);
            let mut whole = Vec::new();
            for (start, body) in &up.parts {
                if *start != whole.len() as u64 {
                    return error(w, state, format!("gap before byte {start}"));
                }
                let last = *start + body.len() as u64
                    == up.parts.values().map(|p| p.len() as u64).sum::<u64>();
                if !last && body.len() as u64 != up.part_size {
                    return error(w, state, format!("part at {start} is short"));
                }
                whole.extend_from_slice(body);
            }
            if h("x-amz-archive-size") != whole.len().to_string() {
                return error(
                    w,
                    state,
                    format!(
                        "archive size {} != {}",
                        h("x-amz-archive-size"),
                        whole.len()
                    ),
                );
            }
            let theirs = python_tree_hash(tmp, &whole);
            if h("x-amz-sha256-tree-hash") != theirs {
                return error(
                    w,
                    state,
                    format!(
                        "archive tree hash {} != {theirs}",
                        h("x-amz-sha256-tree-hash")
                    ),
                );
            }
            let mut s = state.lock().unwrap();
            s.completes_verified += 1;
            let archive_id = format!("archive-{}-{}", s.next_id, up.description.len());
            s.archives.insert(archive_id.clone(), whole);
            respond(
                w,
                "201 Created",
                &[
                    ("x-amz-archive-id", archive_id.clone()),
                    ("x-amz-sha256-tree-hash", theirs),
                    (
                        "Location",
                        format!("/-/vaults/{vault}/archives/{archive_id}"),
                    ),
                ],
                "",
            );
        }
        ("GET", None) => {
            let mut s = state.lock().unwrap();
            s.list_requests += 1;
            if s.silent {
                drop(s);
                std::thread::sleep(Duration::from_secs(5));
                return;
            }
            let marker: usize = req
                .path
                .split_once("marker=")
                .and_then(|(_, m)| m.split('&').next()?.parse().ok())
                .unwrap_or(0);
            let mut ids: Vec<&String> = s.uploads.keys().collect();
            ids.sort();
            let (from, to, next) = if s.endless {
                (0, 0, Some(marker + 1))
            } else if s.one_a_page {
                let to = (marker + 1).min(ids.len());
                let next = if s.repeat && marker > 0 { marker } else { to };
                (marker.min(to), to, (to < ids.len()).then_some(next))
            } else {
                (0, ids.len(), None)
            };
            let list: Vec<String> = ids[from..to]
                .iter()
                .map(|id| {
                    let u = &s.uploads[*id];
                    format!(
                        r#"{{"MultipartUploadId":{id:?},"ArchiveDescription":{:?},"CreationDate":"2024-01-02T03:04:05.000Z","PartSizeInBytes":{},"VaultARN":"arn:aws:glacier:us-east-1:123456789012:vaults/{vault}"}}"#,
                        u.description, u.part_size
                    )
                })
                .collect();
            let next = next.map_or("null".to_string(), |n| format!("\"{n}\""));
            let body = format!(r#"{{"UploadsList":[{}],"Marker":{next}}}"#, list.join(","));
            drop(s);
            respond(
                w,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                &body,
            );
        }
        ("DELETE", Some(id)) => {
            let mut s = state.lock().unwrap();
            s.uploads.remove(id);
            s.aborted.push(id.to_string());
            respond(w, "204 No Content", &[], "");
        }
        _ => error(
            w,
            state,
            format!("unexpected request {} {}", req.method, req.path),
        ),
    }
}

#[test]
fn vault_multipart_upload_against_a_stand_in_endpoint() {
    let fake = FakeGlacier::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[fake]\naws_access_key_id = AKIAFAKE\naws_secret_access_key = fake\n",
    )
    .unwrap();
    let config = TargetConfig::glacier("vault1")
        .with_region("us-east-1")
        .with_endpoint(fake.endpoint())
        .with_profile("fake")
        .with_credentials_file(&creds)
        .with_part_size(1) // rounded up to 1 MiB: many parts from little data
        .with_max_in_flight(3)
        .with_retries(1, 0, Duration::from_millis(10));
    let t = GlacierTarget::new(config).unwrap();

    // 6.5 MiB in 1 MiB parts: 7 parts, the last one short.
    let src = data(6 * MIB + MIB / 2, 9);
    let description = archive_key(PREFIX, SystemTime::now(), ".sqfs.gpg").unwrap();
    let progress = Progress::silent("upload");
    let mut w = t
        .create_writer(&description, &PutOptions::archive(), &progress)
        .unwrap();
    for piece in src.chunks(333_333) {
        w.write_all(piece).map_err(error_from_io).unwrap();
    }
    let r = w.finish().unwrap();
    let failures = fake.state.lock().unwrap().failures.clone();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(r.parts, 7);
    assert_eq!(r.part_size, MIB as u64);
    assert_eq!(progress.done(), src.len() as u64);
    assert_eq!(
        r.tree_hash.as_deref(),
        Some(python_tree_hash(dir.path(), &src).as_str())
    );
    {
        let s = fake.state.lock().unwrap();
        assert_eq!(s.parts_verified, 7);
        assert_eq!(s.completes_verified, 1);
        assert_eq!(
            s.archives.get(&r.key).map(|a| sha256_hex(a)),
            Some(sha256_hex(&src))
        );
    }

    // Dropping an unfinished writer aborts its upload.
    let mut w = t
        .create_writer(&description, &PutOptions::archive(), &progress)
        .unwrap();
    w.write_all(&src[..3 * MIB]).unwrap();
    drop(w);
    {
        let s = fake.state.lock().unwrap();
        assert_eq!(s.aborted.len(), 1);
        assert!(s.uploads.is_empty());
    }

    // A killed run's upload (left in the vault) is listed and aborted by the next.
    {
        let mut s = fake.state.lock().unwrap();
        s.uploads.insert(
            "killed-run".into(),
            Upload {
                description: format!("{PREFIX}/2024/old.sqfs.gpg"),
                part_size: MIB as u64,
                parts: BTreeMap::new(),
            },
        );
        s.uploads.insert(
            "other-prefix".into(),
            Upload {
                description: "elsewhere/x".into(),
                part_size: MIB as u64,
                parts: BTreeMap::new(),
            },
        );
    }
    // One upload a page: the SDK's paginator follows the markers.
    fake.state.lock().unwrap().one_a_page = true;
    let stale = t.list_incomplete(PREFIX).unwrap();
    assert_eq!(fake.state.lock().unwrap().list_requests, 2);
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0].upload_id, "killed-run");
    assert!(stale[0].initiated.is_some());
    let aborted = abort_stale(&t, PREFIX, Duration::ZERO).unwrap();
    assert_eq!(aborted, stale);
    assert!(t.list_incomplete(PREFIX).unwrap().is_empty());
    assert_eq!(
        fake.state.lock().unwrap().uploads.len(),
        1,
        "the other prefix is left alone"
    );

    let failures = fake.state.lock().unwrap().failures.clone();
    assert!(failures.is_empty(), "{failures:?}");

    // An endpoint that hands out empty pages without end, each with a new
    // marker, is followed only so far.
    let before = {
        let mut s = fake.state.lock().unwrap();
        s.endless = true;
        s.list_requests
    };
    let err = t.list_incomplete(PREFIX).unwrap_err();
    let pages = fake.state.lock().unwrap().list_requests - before;
    eprintln!("endless empty pages: refused after {pages} requests: {err}");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("pages without end"), "{err}");
    assert_eq!(pages, LIST_MAX_PAGES + 1);

    // A marker given again: the SDK's paginator would end the listing
    // there, silently (the uploads after it never aborted); it is refused.
    {
        let mut s = fake.state.lock().unwrap();
        s.endless = false;
        s.repeat = true;
        for n in 0..3 {
            s.uploads.insert(
                format!("later-{n}"),
                Upload {
                    description: format!("{PREFIX}/2024/later-{n}.sqfs.gpg"),
                    part_size: MIB as u64,
                    parts: BTreeMap::new(),
                },
            );
        }
    }
    let err = t.list_incomplete(PREFIX).unwrap_err();
    eprintln!("a marker given again: {err}");
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("again (no progress)"), "{err}");

    // An endpoint that takes the request and never answers: given up after
    // stall_timeout per page (1 s here), not waited on for ever.
    let mut config = TargetConfig::glacier("vault1")
        .with_region("us-east-1")
        .with_endpoint(fake.endpoint())
        .with_profile("fake")
        .with_credentials_file(&creds)
        .with_retries(1, 1, Duration::from_millis(10));
    config.stall_timeout = Duration::from_secs(1);
    let silent = GlacierTarget::new(config).unwrap();
    fake.state.lock().unwrap().silent = true;
    let started = Instant::now();
    let err = silent.list_incomplete(PREFIX).unwrap_err();
    let took = started.elapsed();
    eprintln!(
        "a vault that never answers: gave up after {:.2} s: {err}",
        took.as_secs_f64()
    );
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.to_string().contains("no page within 1s"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}
