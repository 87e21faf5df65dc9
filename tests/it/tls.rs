//! HTTPS: the reference server on loopback with a certificate generated for the test (rcgen), a
//! client with certificate verification on by default.
//!
//! * an untrusted certificate (a private CA the client does not know) fails with
//!   `Error::Tls` and changes nothing;
//! * the same server with its CA configured (`trusted_certificates_pem`) syncs;
//! * a trusted CA but a certificate for another host still fails with `Error::Tls`;
//! * `ssl_verify_peer = false` syncs (the warning it logs is checked in `tests/logs.rs`).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tidesync_core::protocol::rhoconnect::HttpConfig;
use tidesync_core::{Error as CoreError, Query, SourceDef, SyncClient, SyncConfig, SyncOptions};
use tidesync_server::{App, Server, ServerConfig, TlsIdentity};
use tidesync_tests::store_of;

/// A test CA and a server certificate it signed for `names` (DNS names or IP addresses).
struct Pki {
    ca_pem: String,
    identity: TlsIdentity,
}

fn pki(names: &[&str]) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "TideSync test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    for n in names {
        leaf.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().expect("a DNS name")),
        });
    }
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf certificate");
    Pki {
        ca_pem: ca_cert.pem(),
        identity: TlsIdentity {
            cert_chain_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        },
    }
}

fn https_server(identity: TlsIdentity) -> Server {
    let mut cfg = ServerConfig::new(App::transcripts());
    cfg.tls = Some(identity);
    let server = Server::start(cfg).expect("the TLS server binds a loopback port");
    assert!(
        server.sync_url().starts_with("https://127.0.0.1:"),
        "{}",
        server.sync_url()
    );
    server
}

fn client(server: &Server, dir: &std::path::Path, http: HttpConfig) -> SyncClient {
    let mut config = SyncConfig::new(&server.sync_url());
    config.http = http;
    let c = SyncClient::open(&dir.join("client.db"), config).expect("the client opens");
    c.define_source(&SourceDef::new("Product")).expect("define");
    c
}

fn assert_product_synced(server: &Server, c: &SyncClient) {
    let report = c.sync_all(&SyncOptions::default(), None).expect("sync");
    assert!(report.ok(), "{report:?}");
    let local: tidesync_tests::Store = c
        .find_all("Product", &Query::all())
        .expect("find_all")
        .into_iter()
        .map(|o| (o.id, o.attrs))
        .collect();
    let remote = store_of(server.backend().objects("Product", None).expect("backend"));
    assert_eq!(local.len(), 300);
    assert!(local == remote, "local Product equals the backend over HTTPS");
}

#[test]
fn tls_untrusted_certificate_is_a_typed_error_and_changes_nothing() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let server = https_server(pki.identity);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(&server, dir.path(), HttpConfig::default());
    let err = c.login("alice", "password").expect_err("an unknown CA is refused");
    assert!(matches!(err, CoreError::Tls { .. }), "a typed TLS error: {err:?}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    assert!(!c.is_logged_in().expect("read"), "nothing stored");
    assert_eq!(c.count("Product", None).expect("count"), 0);
}

#[test]
fn tls_configured_ca_is_trusted_and_syncs() {
    let pki = pki(&["127.0.0.1", "localhost"]);
    let ca = pki.ca_pem.clone();
    let server = https_server(pki.identity);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(
        &server,
        dir.path(),
        HttpConfig {
            trusted_certificates_pem: Some(ca),
            ..HttpConfig::default()
        },
    );
    c.login("alice", "password")
        .expect("login over HTTPS with the CA trusted");
    assert_product_synced(&server, &c);
}

#[test]
fn tls_certificate_for_another_host_is_refused_even_with_its_ca_trusted() {
    let pki = pki(&["sync.example.org"]);
    let ca = pki.ca_pem.clone();
    let server = https_server(pki.identity);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(
        &server,
        dir.path(),
        HttpConfig {
            trusted_certificates_pem: Some(ca),
            ..HttpConfig::default()
        },
    );
    let err = c.login("alice", "password").expect_err("the name does not match");
    assert!(matches!(err, CoreError::Tls { .. }), "{err:?}");
}

#[test]
fn tls_verification_off_syncs_with_an_untrusted_certificate() {
    let pki = pki(&["127.0.0.1"]);
    let server = https_server(pki.identity);
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client(
        &server,
        dir.path(),
        HttpConfig {
            ssl_verify_peer: false,
            ..HttpConfig::default()
        },
    );
    c.login("alice", "password").expect("login with verification off");
    assert_product_synced(&server, &c);
}

#[test]
fn tls_bad_trusted_certificates_are_invalid_input() {
    let server = https_server(pki(&["127.0.0.1"]).identity);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = SyncConfig::new(&server.sync_url());
    config.http.trusted_certificates_pem = Some("not a certificate".into());
    let err = SyncClient::open(&dir.path().join("client.db"), config).expect_err("no certificate in the PEM");
    assert!(matches!(err, CoreError::InvalidInput { .. }), "{err:?}");
}

/// The CLI end to end: `tidesync serve --tls-cert --tls-key` and `tidesync sync --ca-cert`.
#[test]
fn tls_cli_serve_and_sync_with_a_private_ca() {
    use std::io::{BufRead as _, BufReader};
    let pki = pki(&["127.0.0.1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    let (cert, key, ca) = (
        write("server.pem", &pki.identity.cert_chain_pem),
        write("server.key", &pki.identity.key_pem),
        write("ca.pem", &pki.ca_pem),
    );
    let bin = crate::sync_e2e::cli_binary();
    let mut serve = std::process::Command::new(&bin)
        .args(["serve", "--addr", "127.0.0.1:0", "--app", "transcripts", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tidesync serve starts");
    let mut line = String::new();
    BufReader::new(serve.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server prints its address");
    let result = (|| {
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        if !base.starts_with("https://") {
            return Err(format!("not HTTPS: {base}"));
        }
        let sync = |extra: &[&std::ffi::OsStr]| {
            std::process::Command::new(&bin)
                .args(["sync", "--url", &format!("{base}application"), "--user", "alice"])
                .args(["--password", "password", "--json", "--db"])
                .arg(dir.path().join(format!("cli-{}.db", extra.len())))
                .args(extra)
                .output()
                .expect("tidesync sync runs")
        };
        let untrusted = sync(&[]);
        let trusted = sync(&["--ca-cert".as_ref(), ca.as_os_str()]);
        Ok((untrusted, trusted))
    })();
    let _ = serve.kill();
    let _ = serve.wait();
    let (untrusted, trusted) = result.expect("the HTTPS server answered");
    assert!(!untrusted.status.success(), "an unknown CA fails");
    let out = String::from_utf8_lossy(&untrusted.stdout);
    assert!(out.contains("TLS"), "the failure says TLS: {out}");
    assert!(
        trusted.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&trusted.stdout),
        String::from_utf8_lossy(&trusted.stderr)
    );
    let out = String::from_utf8_lossy(&trusted.stdout);
    assert!(out.contains("\"ok\":true"), "{out}");
}
