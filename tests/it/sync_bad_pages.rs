//! Malformed pages from a server: a typed error, and the store exactly as before.
//!
//! A scripted HTTP server on loopback answers login and clientcreate normally and then serves
//! the query answers given by the test, so that any page shape can be tried — including those
//! the reference server never produces (wrong version, wrong types, huge values).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tidesync_core::{Error, Query, SourceDef, SyncClient, SyncConfig, SyncOptions};

/// Serves scripted answers to query requests; everything else answers like RhoConnect.
struct Scripted {
    addr: std::net::SocketAddr,
    pages: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pages: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pages.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve(conn, &p);
                }
            }
        });
        Scripted {
            addr,
            pages,
            stop,
            thread: Some(thread),
        }
    }

    fn script(&self, pages: &[&str]) {
        *self.pages.lock() = pages.iter().rev().map(|p| (*p).to_owned()).collect();
    }

    fn url(&self) -> String {
        format!("http://{}/application/", self.addr)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, pages: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (ctype, answer) = if path.starts_with("/application/clientlogin") {
            ("text/html", String::new())
        } else if path.starts_with("/application/clientcreate") {
            (
                "application/json",
                r#"{"client":{"client_id":"0123456789abcdef0123456789abcdef"}}"#.to_owned(),
            )
        } else {
            let next = pages.lock().pop();
            (
                "application/json",
                next.unwrap_or_else(|| {
                    r#"[{"version":3},{"token":""},{"count":0},{"progress_count":0},{"total_count":0},{}]"#.into()
                }),
            )
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nSet-Cookie: rhoconnect_session=s; path=/\r\n\r\n",
            answer.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(answer.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// What a sync can change, as text: objects, the change queue, client identity and tokens.
fn dump(path: &std::path::Path) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut out = String::new();
    for sql in [
        "SELECT source_id, id, attrs FROM objects ORDER BY source_id, id",
        "SELECT seq, source_id, object, op, attrs, state FROM changes ORDER BY seq",
        "SELECT client_id, session, user_name FROM client_info",
        "SELECT id, name, token, search_token, server_total FROM sources ORDER BY id",
        "SELECT source_id, kind, object, message FROM sync_errors ORDER BY id",
    ] {
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut cols = Vec::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    cols.push(format!("{v:?}"));
                }
                Ok(cols.join("|"))
            })
            .unwrap();
        for row in rows {
            out.push_str(&row.unwrap());
            out.push('\n');
        }
    }
    out
}

const GOOD: &str = r#"[{"version":3},{"token":"T1"},{"count":2},{"progress_count":0},{"total_count":2},{"insert":{"1":{"name":"a"},"2":{"name":"b"}}}]"#;
const END: &str = r#"[{"version":3},{"token":""},{"count":0},{"progress_count":0},{"total_count":2},{}]"#;

fn synced_client(server: &Scripted, dir: &tempfile::TempDir) -> SyncClient {
    let client = SyncClient::open(&dir.path().join("c.db"), SyncConfig::new(&server.url())).unwrap();
    client.define_source(&SourceDef::new("Product")).unwrap();
    client.login("alice", "password").unwrap();
    server.script(&[GOOD, END]);
    client.sync_source("Product", &SyncOptions::default(), None).unwrap();
    // A local change waiting to be pushed, which no bad page may disturb.
    let mut attrs = tidesync_core::Attrs::new();
    attrs.insert("name".into(), "local".into());
    client.store().update("Product", "1", attrs).unwrap();
    client
}

fn assert_rejected_without_change(bad: &str) {
    let server = Scripted::start();
    let dir = tempfile::tempdir().unwrap();
    let client = synced_client(&server, &dir);
    let before = dump(&dir.path().join("c.db"));
    // The push (200, empty body) goes first, then the scripted bad page.
    server.script(&["", bad]);
    let r = client.sync_source("Product", &SyncOptions::default(), None);
    assert!(
        matches!(r, Err(Error::Protocol { .. })),
        "{bad:.80}: expected a protocol error, got {r:?}"
    );
    let after = dump(&dir.path().join("c.db"));
    // The push itself moved the local update to `sent`; everything else is unchanged.
    assert_eq!(
        before.replace("|Text(\"pending\")", "|Text(\"sent\")"),
        after,
        "{bad:.80}: the store changed"
    );
    assert_eq!(client.find_all("Product", &Query::all()).unwrap().len(), 2);
}

#[test]
fn sync_bad_page_version_2_is_rejected_and_changes_nothing() {
    assert_rejected_without_change(
        r#"[{"version":2},{"token":"T2"},{"count":1},{"progress_count":0},{"total_count":3},{"insert":{"3":{"name":"c"}}}]"#,
    );
}

#[test]
fn sync_bad_page_without_version_is_rejected_and_changes_nothing() {
    assert_rejected_without_change(r#"[{"token":"T2"},{"count":1},{"insert":{"3":{"name":"c"}}}]"#);
}

#[test]
fn sync_bad_page_wrong_types_are_rejected_and_change_nothing() {
    for bad in [
        r#"[{"version":3},{"token":"T2"},{"count":{"n":1}},{"progress_count":0},{"total_count":3},{}]"#,
        r#"[{"version":3},{"token":"T2"},{"count":1},{"progress_count":0},{"total_count":3},{"insert":{"3":{"name":["c"]}}}]"#,
        r#"[{"version":3},{"token":"T2"},{"count":1},{"progress_count":0},{"total_count":3},{"insert":{"3":"c"}}]"#,
        r#"[{"version":3},{"token":["T2"]},{"count":1},{"progress_count":0},{"total_count":3},{}]"#,
        r#"{"version":3}"#,
        r#"[{"version":3},{"token":"T2"},{"count":1},{"progress_count":0},{"total_count":3},{"insert":{"3":{"name":"c"}}}"#,
        "<html>oops</html>",
        "",
    ] {
        assert_rejected_without_change(bad);
    }
}

#[test]
fn sync_bad_page_with_a_huge_value_is_rejected_and_changes_nothing() {
    let huge = "x".repeat(17 * 1024 * 1024);
    let page = format!(
        r#"[{{"version":3}},{{"token":"T2"}},{{"count":1}},{{"progress_count":0}},{{"total_count":3}},{{"insert":{{"3":{{"name":"{huge}"}}}}}}]"#
    );
    assert_rejected_without_change(&page);
}

#[test]
fn sync_unknown_commands_are_ignored() {
    let server = Scripted::start();
    let dir = tempfile::tempdir().unwrap();
    let client = synced_client(&server, &dir);
    server.script(&[
        "",
        r#"[{"version":3},{"token":"T2"},{"count":1},{"progress_count":0},{"total_count":3},{"future-command":{"x":1},"insert":{"3":{"name":"c"}}}]"#,
        END,
    ]);
    client.sync_source("Product", &SyncOptions::default(), None).unwrap();
    assert_eq!(client.find("Product", "3").unwrap().unwrap().attrs["name"], "c");
}
