//! TLS to PostgreSQL: a server of its own started with `ssl=on` and a certificate for
//! `pk-db.test` signed by a CA generated here; every connection path (pool, dedicated
//! connection, migrations) is driven through it with the URL's `sslmode` and `sslrootcert`.

use std::path::PathBuf;
use std::sync::OnceLock;

use diesel::sql_types::Bool;
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use poolkeeper::db::migrate;
use poolkeeper::db::pool::{self, redacted_url, PoolConfig, SessionSettings};
use poolkeeper::db::{LocalServer, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The name in the server's certificate; resolved by `hostaddr`, never by DNS.
const SERVER_NAME: &str = "pk-db.test";
/// Appears in every URL here; must never show up in a log line or an error.
const PASSWORD: &str = "hunter2-never-logged";

struct TlsServer {
    server: LocalServer,
    /// The CA that signed the server's certificate, and one that did not.
    right_ca: PathBuf,
    wrong_ca: PathBuf,
    /// The server's private key, to prove it is never logged.
    key_pem: String,
}

impl TlsServer {
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?hostaddr=127.0.0.1&{query}",
            self.server.port()
        )
    }

    fn full(&self, ca: &std::path::Path) -> String {
        self.url(SERVER_NAME, &format!("sslmode=verify-full&sslrootcert={}", ca.display()))
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, key)
}

/// One TLS server per test process (separate from the shared test server, which stays plain).
fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (right_params, right_key) = ca("poolkeeper test CA");
        let right_cert = right_params.self_signed(&right_key).expect("sign CA");
        let (wrong_params, wrong_key) = ca("some other CA");
        let wrong_cert = wrong_params.self_signed(&wrong_key).expect("sign other CA");
        let issuer = Issuer::new(right_params, right_key);
        let server_key = KeyPair::generate().expect("server key");
        let server_params =
            CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("server params");
        let server_cert = server_params.signed_by(&server_key, &issuer).expect("sign server");
        let tls = ServerTls { cert_pem: server_cert.pem(), key_pem: server_key.serialize_pem() };
        let server = LocalServer::start_with_tls(&tls).expect("start a local PostgreSQL with TLS");
        // Client files inside the server's directory: removed with it.
        let write = |name: &str, pem: String| {
            let path = server.dir().join(name);
            std::fs::write(&path, pem).expect("write a CA file");
            path
        };
        let right_ca = write("right-ca.pem", right_cert.pem());
        let wrong_ca = write("wrong-ca.pem", wrong_cert.pem());
        TlsServer { server, right_ca, wrong_ca, key_pem: tls.key_pem }
    })
}

async fn server() -> &'static TlsServer {
    tokio::task::spawn_blocking(tls_server).await.expect("TLS server setup")
}

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Whether the server sees this connection as encrypted.
async fn encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(conn)
        .await
        .expect("pg_stat_ssl")
        .ssl
}

async fn establish(url: &str) -> Result<AsyncPgConnection, diesel::ConnectionError> {
    pool::establish(url, &SessionSettings::for_role("test")).await
}

#[tokio::test]
async fn sslmode_decides_whether_the_connection_is_encrypted() {
    let tls = server().await;
    for (query, expect_tls) in [
        ("sslmode=disable", false),
        ("application_name=x", true), // libpq's default, prefer
        ("sslmode=prefer", true),
        // require without sslrootcert encrypts and trusts any certificate (libpq).
        ("sslmode=require", true),
    ] {
        let mut conn = establish(&tls.url("127.0.0.1", query)).await.expect(query);
        assert_eq!(encrypted(&mut conn).await, expect_tls, "{query}");
    }
}

#[tokio::test]
async fn verify_full_with_the_right_ca_serves_the_pool_and_the_migrations() {
    let tls = server().await;
    let url = tls.full(&tls.right_ca);
    let pool = pool::connect(&url, &PoolConfig::default()).await.expect("pool over verify-full");
    let mut conn = pool.get().await.expect("checkout");
    assert!(encrypted(&mut conn).await);
    diesel::sql_query("CREATE DATABASE tls_migrated").execute(&mut conn).await.expect("create");
    drop(conn);

    let migrate_url = url.replace("/postgres?", "/tls_migrated?");
    let applied = tokio::task::spawn_blocking(move || migrate::run_pending(&migrate_url))
        .await
        .expect("migration task")
        .expect("migrations over verify-full");
    assert_eq!(applied, migrate::known_versions().expect("versions"));

    // verify-ca checks the chain only: the right CA is enough whatever the host name.
    let ca_only =
        tls.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", tls.right_ca.display()));
    let mut conn = establish(&ca_only).await.expect("verify-ca by address");
    assert!(encrypted(&mut conn).await);
}

#[tokio::test]
async fn a_wrong_ca_or_host_name_is_refused_with_a_clear_error() {
    let tls = server().await;
    let err = establish(&tls.full(&tls.wrong_ca)).await.err().expect("wrong CA must fail");
    let text = err.to_string();
    assert!(text.contains("not signed by the CA in sslrootcert"), "{text}");
    assert!(text.contains("sslmode=verify-full"), "{text}");

    // The certificate names pk-db.test, not the address.
    let by_address = tls
        .url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", tls.right_ca.display()));
    let text = establish(&by_address).await.err().expect("wrong host must fail").to_string();
    assert!(text.contains("not valid for the host name \"127.0.0.1\""), "{text}");

    // A chain check also applies to require once a root certificate is given (libpq).
    let require =
        tls.url(SERVER_NAME, &format!("sslmode=require&sslrootcert={}", tls.wrong_ca.display()));
    let text = establish(&require).await.err().expect("require + wrong CA").to_string();
    assert!(text.contains("not signed by the CA"), "{text}");

    // The migrations report the same.
    let wrong = tls.full(&tls.wrong_ca);
    let err = tokio::task::spawn_blocking(move || migrate::run_pending(&wrong))
        .await
        .expect("migration task")
        .expect_err("migrations with a wrong CA must fail");
    assert!(err.to_string().contains("not signed by the CA in sslrootcert"), "{err}");
}

/// Collects everything logged while it is the default subscriber.
#[tokio::test(flavor = "current_thread")]
async fn no_password_or_key_reaches_a_log_line_or_an_error() {
    let tls = server().await;
    let captured = poolkeeper_tests::CapturedLog::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut seen = Vec::new();
    let with_query_password = format!("{}&password={PASSWORD}", tls.full(&tls.right_ca));
    for url in [tls.full(&tls.right_ca), with_query_password.clone()] {
        let pool = pool::connect(&url, &PoolConfig::default()).await.expect("connect");
        drop(pool);
    }
    for url in [
        tls.full(&tls.wrong_ca),
        format!("{}&password={PASSWORD}", tls.full(&tls.wrong_ca)),
        tls.url("127.0.0.1", "sslmode=verify-full"),
        tls.url("127.0.0.1", "sslmode=nonsense"),
    ] {
        let err = pool::connect(&url, &PoolConfig::default()).await.err().expect("must fail");
        tracing::warn!(error = %err, database = %redacted_url(&url), "connect failed");
        seen.push(err.to_string());
    }
    seen.push(redacted_url(&with_query_password));

    let logged = captured.text();
    assert!(logged.contains("sslmode=verify-full"), "the capture works: {logged}");
    let key_body: String =
        tls.key_pem.lines().filter(|line| !line.starts_with("-----")).collect::<Vec<_>>().join("");
    for text in seen.iter().chain([&logged]) {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(!text.contains("PRIVATE KEY"), "key leaked: {text}");
        assert!(!text.contains(&key_body[..40]), "key leaked: {text}");
    }
}
