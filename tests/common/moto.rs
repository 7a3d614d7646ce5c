//! A real moto server (`moto[server]`, installed by `.ci/install.sh`) on a
//! free loopback port, with fresh state; killed when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_VENV: &str = "/var/cache/secret-santa-venv";

/// The region the services are warmed up in (moto builds a service's
/// backend on its first call, ~2 s for SSM): tests should use it.
pub const REGION: &str = "eu-west-1";

pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// `$SECRET_SANTA_VENV/bin/moto_server`, else the default venv's.
pub fn moto_server_path() -> PathBuf {
    let venv = std::env::var_os("SECRET_SANTA_VENV")
        .map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from);
    venv.join("bin").join("moto_server")
}

/// A loopback port nothing listens on (right now).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts moto, waits until it answers and resets its state. Panics with
    /// an install hint when moto is missing: these tests never skip.
    pub fn start() -> Moto {
        let bin = moto_server_path();
        assert!(
            bin.exists(),
            "moto is not installed: {} is missing. Run `bash .ci/install.sh` (creates the venv with `moto[server]`), \
             or point SECRET_SANTA_VENV at a venv that has it",
            bin.display()
        );
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut moto = Moto {
                child,
                port,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(status)) = moto.child.try_wait() {
                    last_error = format!("moto_server exited with {status} (port {port} taken?)");
                    break;
                }
                match moto.post("/moto-api/reset") {
                    Ok(200) => {
                        moto.warm_up();
                        return moto;
                    }
                    Ok(status) => last_error = format!("POST /moto-api/reset answered {status}"),
                    Err(e) => last_error = e,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(moto);
        }
        panic!("moto_server did not come up: {last_error}");
    }

    /// Forgets everything stored.
    pub fn reset(&self) {
        assert_eq!(self.post("/moto-api/reset").unwrap(), 200, "moto reset");
    }

    /// One call to each service the tests use, so that no test's first call
    /// pays for moto building the backend; then a reset.
    fn warm_up(&self) {
        for (service, target) in [
            ("ssm", "AmazonSSM.DescribeParameters"),
            ("secretsmanager", "secretsmanager.ListSecrets"),
        ] {
            let headers = format!(
                "X-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/{REGION}/{service}/aws4_request, \
                 SignedHeaders=host, Signature=0\r\n"
            );
            let status = self
                .request("/", &headers, "{}")
                .unwrap_or_else(|e| panic!("moto warm-up {target}: {e}"));
            assert_eq!(status, 200, "moto warm-up {target}");
        }
        self.reset();
    }

    /// A bodyless POST; the HTTP status.
    fn post(&self, path: &str) -> Result<u16, String> {
        self.request(path, "", "")
    }

    /// A POST with extra header lines (each ending in CRLF) and a body.
    fn request(&self, path: &str, headers: &str, body: &str) -> Result<u16, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", answer.lines().next()))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback HTTP proxy in front of moto that answers chosen AWS
/// operations with an injected error (as AWS would send it), and forwards
/// everything else. One request per connection.
pub struct FaultProxy {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Rule {
    operation: String,
    /// 0: not an error but a delay, then the request goes through;
    /// 1: held until the proxy stops, never forwarded.
    status: u16,
    error_type: String,
    delay: Duration,
    remaining: usize,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules: std::sync::Arc<std::sync::Mutex<Vec<Rule>>> = Default::default();
        let stop: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
        let held: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let (r, s, h) = (rules.clone(), stop.clone(), held.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, s, h) = (r.clone(), s.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, upstream, &r, &s, &h);
                });
            }
        });
        FaultProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            rules,
            stop,
            held,
        }
    }

    /// The next `times` calls of `operation` are held and never forwarded
    /// (a request lost with the process that sent it).
    pub fn hang(&self, operation: &str, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            operation: operation.to_owned(),
            status: 1,
            error_type: String::new(),
            delay: Duration::ZERO,
            remaining: times,
        });
    }

    /// Requests held by [`hang`](Self::hang) so far.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next `times` calls of `operation` (e.g. `PutParameter`) get
    /// `status` with the AWS error `error_type` (e.g. `ThrottlingException`).
    pub fn fail(&self, operation: &str, status: u16, error_type: &str, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            operation: operation.to_owned(),
            status,
            error_type: error_type.to_owned(),
            delay: Duration::ZERO,
            remaining: times,
        });
    }

    /// The next `times` calls of `operation` are held for `delay`, then
    /// forwarded to moto all the same (as a slow AWS endpoint would still
    /// carry out a request its client gave up on).
    pub fn delay(&self, operation: &str, delay: Duration, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            operation: operation.to_owned(),
            status: 0,
            error_type: String::new(),
            delay,
            remaining: times,
        });
    }

    /// Injected errors not yet served.
    pub fn pending(&self) -> usize {
        self.rules.lock().unwrap().iter().map(|r| r.remaining).sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Reads one HTTP message head and its Content-Length body.
fn read_message(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((head, body))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with any Connection header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn proxy_one(
    mut client: TcpStream,
    upstream: u16,
    rules: &std::sync::Mutex<Vec<Rule>>,
    stop: &std::sync::atomic::AtomicBool,
    held: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    let (head, body) = read_message(&mut client)?;
    let target = header(&head, "x-amz-target").unwrap_or("").to_owned();
    let injected = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.remaining > 0 && target.rsplit('.').next() == Some(r.operation.as_str()))
            .map(|r| {
                r.remaining -= 1;
                (r.status, r.error_type.clone(), r.delay)
            })
    };
    if let Some((1, _, _)) = injected {
        held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
    }
    if let Some((0, _, delay)) = injected {
        std::thread::sleep(delay);
    } else if let Some((status, error_type, _)) = injected {
        let body = format!(r#"{{"__type":"{error_type}","message":"injected by the test proxy"}}"#);
        write!(
            client,
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {error_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.flush();
    }
    let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream))?;
    up.write_all(closing(&head).as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |i| i + 4);
    let answer_head = String::from_utf8_lossy(&answer[..split]).into_owned();
    client.write_all(closing(&answer_head).as_bytes())?;
    client.write_all(&answer[split..])?;
    client.flush()
}
