//! S3 listings against a stand-in endpoint that answers what a hostile or
//! broken server may: uploads outside the prefix asked for, a page that
//! says more follow and names nothing to go on from. moto (and every real
//! server here) answers honestly, so these answers need a stand-in: a
//! thread on 127.0.0.1 that reads each request and sends one fixed
//! ListMultipartUploads answer.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use snap_offsite::{ArchiveTarget, ErrorKind, S3Target, TargetConfig, abort_stale};

const UPLOAD: &str = "<Upload><Key>{key}</Key><UploadId>{id}</UploadId>\
                      <Initiated>2024-01-02T03:04:05.000Z</Initiated></Upload>";

fn uploads_page(uploads: &[(&str, &str)], truncated: bool) -> String {
    let list: String = uploads
        .iter()
        .map(|(key, id)| UPLOAD.replace("{key}", key).replace("{id}", id))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>\
         <EncodingType>url</EncodingType><MaxUploads>1000</MaxUploads>\
         <IsTruncated>{truncated}</IsTruncated>{list}</ListMultipartUploadsResult>"
    )
}

/// A stand-in that answers every request with `body` (200, XML) and counts
/// the requests and the aborts (DELETE) it was sent.
struct StandIn {
    port: u16,
    requests: Arc<AtomicUsize>,
    deletes: Arc<std::sync::Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl StandIn {
    fn start(body: String) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let deletes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (r, d) = (requests.clone(), deletes.clone());
        // Ends with the test process: it only ever answers on 127.0.0.1.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, d, body) = (r.clone(), d.clone(), body.clone());
                std::thread::spawn(move || serve(conn, &body, &r, &d));
            }
        });
        StandIn {
            port,
            requests,
            deletes,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn target(&self) -> S3Target {
        let creds = self.dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[fake]\naws_access_key_id = AKIAFAKE\naws_secret_access_key = fake\n",
        )
        .unwrap();
        let config = TargetConfig::s3("b")
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_profile("fake")
            .with_credentials_file(&creds)
            .with_retries(1, 0, Duration::from_millis(10));
        S3Target::new(config).unwrap()
    }
}

fn serve(
    conn: TcpStream,
    body: &str,
    requests: &AtomicUsize,
    deletes: &std::sync::Mutex<Vec<String>>,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request = line.trim().to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut skip = vec![0u8; length];
        if std::io::Read::read_exact(&mut r, &mut skip).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if request.starts_with("DELETE ") {
            deletes.lock().unwrap().push(request);
            let _ = w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = w.write_all(head.as_bytes());
        let _ = w.write_all(body.as_bytes());
    }
}

/// The service filters by the prefix asked for; snap does not rest on its
/// word. A stand-in answers `prefix=p/` with an upload of another
/// application's key too: before, the stale-upload cleanup aborted it
/// (the cold review of the listing change, finding 5).
#[test]
fn uploads_outside_the_prefix_are_never_listed_nor_aborted() {
    let server = StandIn::start(uploads_page(
        &[("other-app/db.dump", "U1"), ("p/old.sqfs.gpg", "U2")],
        false,
    ));
    let t = server.target();
    let listed = t.list_incomplete("p/").unwrap();
    let keys: Vec<&str> = listed.iter().map(|u| u.key.as_str()).collect();
    eprintln!(
        "the server listed other-app/db.dump and p/old.sqfs.gpg under p/; snap kept {keys:?}"
    );
    assert_eq!(keys, ["p/old.sqfs.gpg"]);
    let aborted = abort_stale(&t, "p/", Duration::ZERO).unwrap();
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    let deletes = server.deletes.lock().unwrap().clone();
    eprintln!("aborts sent: {deletes:?}");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].contains("/p/old.sqfs.gpg?"), "{deletes:?}");
    assert!(
        deletes.iter().all(|d| !d.contains("other-app")),
        "{deletes:?}"
    );
}

/// A page that says more follow but holds nothing to go on from: before,
/// the listing ended there as if complete (finding 6); now it is refused.
#[test]
fn a_truncated_page_with_nothing_to_go_on_from_is_refused() {
    let server = StandIn::start(uploads_page(&[], true));
    let t = server.target();
    let e = t.list_incomplete("p/").unwrap_err();
    eprintln!("{} request(s): {e}", server.requests.load(Ordering::SeqCst));
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("names no marker"), "{e}");
}

/// A server that answers every page with the same uploads, truncated: the
/// listing would go round for ever; the marker it goes on from comes back,
/// and the listing is refused.
#[test]
fn the_same_page_again_is_refused_not_followed() {
    let server = StandIn::start(uploads_page(&[("p/a", "U1"), ("p/b", "U2")], true));
    let t = server.target();
    let e = t.list_incomplete("p/").unwrap_err();
    let requests = server.requests.load(Ordering::SeqCst);
    eprintln!("{requests} requests: {e}");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("again (no progress)"), "{e}");
    assert_eq!(requests, 2);
}

/// A marker the SDK cannot send back: it puts a continuation token in the
/// request's URI and panics on one past 64 KiB. A stand-in answering an
/// empty, truncated ListObjectsV2 page with a 256 KiB token crashed the
/// listing on its second request (the second cold review of the listing
/// change); the marker is now refused before it is sent.
#[test]
fn a_marker_too_long_to_send_back_is_refused_not_a_crash() {
    let token = "A".repeat(256 * 1024);
    let server = StandIn::start(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Name>b</Name><Prefix>p/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>\
         <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>\
         <NextContinuationToken>{token}</NextContinuationToken></ListBucketResult>"
    ));
    let t = server.target();
    let e = t.list("p/").unwrap_err();
    let requests = server.requests.load(Ordering::SeqCst);
    eprintln!("{requests} request(s): {e}");
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("a marker of 262144 bytes"), "{e}");
    assert_eq!(requests, 1);
}
