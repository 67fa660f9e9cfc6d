//! A real SMTP server for the tests: `tests/smtp/sink.py` (Python's aiosmtpd)
//! run as its own process on a loopback port, storing what it accepts in a
//! folder, with faults switched on and off while it runs (`set_mode`).
//!
//! The interpreter is `RELAIS_TEST_SMTP_PYTHON` when set, else
//! `/usr/bin/python3` when it can import aiosmtpd, else `python3` from PATH.
//! When the sink cannot start, the test fails (it never skips): `.ci/run`
//! installs Debian's `python3-aiosmtpd`.

// Not every test binary build uses every helper.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp/sink.py");
/// How long the sink may take to print `ready`.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// The modes `set_mode` takes (see tests/smtp/sink.py).
pub const MODES: [&str; 5] = ["accept", "tempfail", "reject", "hang", "drop"];
/// The control file, inside the maildir: its content is the current mode.
const CONTROL: &str = ".mode";

/// A running `tests/smtp/sink.py` on `127.0.0.1:port`.
pub struct SmtpSink {
    pub port: u16,
    /// Where accepted messages land as `<n>.eml` + `<n>.json`.
    pub maildir: PathBuf,
    control: PathBuf,
    auth: Option<String>,
    child: Option<Child>,
    /// Held, never written: when the test process dies the pipe closes and
    /// the sink exits (`--exit-on-stdin-eof`).
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
}

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The sink's number for it (1, 2, ... in order of acceptance).
    pub n: u64,
    /// The DATA content exactly as sent (CRLF line ends), lossily UTF-8.
    pub raw: String,
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub rcpt_tos: Vec<String>,
    /// When the sink stored it, in Unix milliseconds.
    pub received_at_ms: u64,
    /// The user name the client authenticated as, when `--auth` was on.
    pub auth_user: Option<String>,
}

impl SmtpSink {
    /// A sink on a free loopback port with a fresh, empty maildir, in mode
    /// `accept`. The maildir is removed when the last sink using it is
    /// dropped (and kept, with its path printed, when the test panicked).
    pub async fn start() -> SmtpSink {
        Self::spawn(0, fresh_maildir(), true, None).await
    }

    /// Like `start`, with AUTH PLAIN and AUTH LOGIN offered (no TLS) and
    /// required: MAIL before authenticating gets 530, bad credentials 535.
    pub async fn start_with_auth(user: &str, password: &str) -> SmtpSink {
        Self::spawn(0, fresh_maildir(), true, Some(format!("{user}:{password}"))).await
    }

    /// A sink on a given port and folder, e.g. to bring one back after
    /// `kill`: messages already there are kept and numbering continues after
    /// them. The mode starts as `accept` again. No AUTH (see `restart`).
    pub async fn start_on(port: u16, maildir: PathBuf) -> SmtpSink {
        Self::spawn(port, maildir, false, None).await
    }

    /// Kills this sink if it runs, and starts it again in place: same port,
    /// folder and AUTH setting; the mode is `accept` again.
    pub async fn restart(&mut self) {
        self.kill().await;
        let fresh = Self::spawn(self.port, self.maildir.clone(), false, self.auth.clone()).await;
        // `fresh` registered the folder too; dropping the old one below only
        // lowers the count.
        let old = std::mem::replace(self, fresh);
        drop(old);
    }

    /// `created`: the folder is this sink's own, removed when the last sink
    /// using it is dropped.
    async fn spawn(port: u16, maildir: PathBuf, created: bool, auth: Option<String>) -> SmtpSink {
        std::fs::create_dir_all(&maildir)
            .unwrap_or_else(|e| panic!("create the SMTP maildir {}: {e}", maildir.display()));
        let control = maildir.join(CONTROL);
        write_atomically(&control, "accept");
        let python = python();
        let mut cmd = Command::new(python);
        cmd.arg(SCRIPT)
            .arg("--port")
            .arg(port.to_string())
            .arg("--maildir")
            .arg(&maildir)
            .arg("--control")
            .arg(&control)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(auth) = &auth {
            cmd.arg("--auth").arg(auth);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            if created {
                let _ = std::fs::remove_dir_all(&maildir);
            }
            panic!(
                "cannot run `{python}` for the SMTP sink ({SCRIPT}): {e}; the tests need \
                 Python 3 with aiosmtpd (Debian: apt-get install python3-aiosmtpd), or \
                 RELAIS_TEST_SMTP_PYTHON naming an interpreter that has it"
            )
        });

        // Keep reading both pipes for the sink's whole life, so it never
        // blocks on a full pipe.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let err_buf = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut buf = err_buf.lock().unwrap();
                if buf.len() < 64 * 1024 {
                    buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<u16>();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line
                    .strip_prefix("ready ")
                    .and_then(|p| p.trim().parse().ok());
                if let (Some(port), Some(tx)) = (port, ready_tx.take()) {
                    let _ = tx.send(port);
                }
            }
        });

        let outcome = tokio::time::timeout(READY_WITHIN, ready_rx).await;
        let bound = match outcome {
            Ok(Ok(bound)) => bound,
            Ok(Err(_)) | Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = err_reader.join();
                if created {
                    let _ = std::fs::remove_dir_all(&maildir);
                }
                let why = match (outcome, status) {
                    (Err(_), _) => format!("did not print `ready` within {READY_WITHIN:?}"),
                    (_, Ok(status)) => format!("exited before it was ready ({status})"),
                    (_, Err(e)) => format!("exited before it was ready ({e})"),
                };
                panic!(
                    "the SMTP sink (`{python} {SCRIPT}` on 127.0.0.1:{port}) {why}; its \
                     stderr:\n{}\nThe tests need Python 3 with aiosmtpd (Debian: apt-get \
                     install python3-aiosmtpd), or RELAIS_TEST_SMTP_PYTHON naming an \
                     interpreter that has it.",
                    stderr.lock().unwrap()
                );
            }
        };
        assert!(
            port == 0 || bound == port,
            "the SMTP sink listens on {bound}, not on the port asked for ({port})"
        );
        register(&maildir, created);
        SmtpSink {
            port: bound,
            maildir,
            control,
            auth,
            stdin: child.stdin.take(),
            child: Some(child),
            stderr,
        }
    }

    /// Sets how the running sink treats the next messages (`accept`,
    /// `tempfail`, `reject`, `hang` or `drop`; see tests/smtp/sink.py). It is
    /// read when a message's DATA content has been received, so it applies
    /// to every message whose content ends after this call returns.
    pub fn set_mode(&self, mode: &str) {
        assert!(
            MODES.contains(&mode),
            "unknown SMTP sink mode {mode:?}; one of {MODES:?}"
        );
        write_atomically(&self.control, mode);
    }

    /// SIGKILL, and wait for the process to be gone (its port is free then).
    pub async fn kill(&mut self) {
        self.stdin.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the sink wrote to stderr so far (errors, unknown modes).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every message stored so far, by number.
    pub fn messages(&self) -> Vec<Received> {
        read_maildir(&self.maildir)
    }

    /// Polls until at least `n` messages are stored and returns them all;
    /// panics after `timeout` with what there is.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if tokio::time::Instant::now() >= deadline {
                let summary: Vec<String> = messages
                    .iter()
                    .map(|m| {
                        format!(
                            "#{} from {:?} to {:?}, subject {:?}",
                            m.n,
                            m.mail_from,
                            m.rcpt_tos,
                            m.header("Subject")
                        )
                    })
                    .collect();
                panic!(
                    "expected at least {n} message(s) at the SMTP sink within {timeout:?}; it \
                     has {}: {summary:#?}\nsink stderr:\n{}",
                    messages.len(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stdin.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unregister(&self.maildir);
    }
}

/// The interpreter, chosen once per test process.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(python) = std::env::var("RELAIS_TEST_SMTP_PYTHON")
            && !python.trim().is_empty()
        {
            return python;
        }
        let system_has_it = Command::new("/usr/bin/python3")
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if system_has_it {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

fn fresh_maildir() -> PathBuf {
    std::env::temp_dir().join(format!("relais-smtp-{}", uuid::Uuid::new_v4().simple()))
}

fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

// Maildirs in use: how many live sinks use each, and whether a sink created
// it (then the last one to go removes it). A sink brought back with
// `start_on` on the same folder keeps it alive whichever is dropped first.
fn live() -> &'static Mutex<HashMap<PathBuf, (usize, bool)>> {
    static LIVE: OnceLock<Mutex<HashMap<PathBuf, (usize, bool)>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn register(dir: &Path, created: bool) {
    let mut live = live().lock().unwrap_or_else(|e| e.into_inner());
    let entry = live.entry(dir.to_path_buf()).or_insert((0, created));
    entry.0 += 1;
}

fn unregister(dir: &Path) {
    let mut live = live().lock().unwrap_or_else(|e| e.into_inner());
    let Some(entry) = live.get_mut(dir) else {
        return;
    };
    entry.0 -= 1;
    if entry.0 > 0 {
        return;
    }
    let created = entry.1;
    live.remove(dir);
    if !created {
        return;
    }
    if std::thread::panicking() {
        eprintln!("SMTP sink maildir kept for inspection: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn read_maildir(dir: &Path) -> Vec<Received> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_suffix(".eml")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
        .into_iter()
        .map(|n| {
            // The sink renames <n>.json into place before <n>.eml.
            let raw = std::fs::read(dir.join(format!("{n}.eml")))
                .unwrap_or_else(|e| panic!("read {n}.eml in {}: {e}", dir.display()));
            let meta_path = dir.join(format!("{n}.json"));
            let meta: serde_json::Value = std::fs::read(&meta_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_else(|| panic!("{} missing or not JSON", meta_path.display()));
            Received {
                n,
                raw: String::from_utf8_lossy(&raw).into_owned(),
                mail_from: meta["mail_from"].as_str().unwrap_or_default().to_owned(),
                rcpt_tos: meta["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                received_at_ms: meta["received_at"].as_u64().unwrap_or_default(),
                auth_user: meta["auth_user"].as_str().map(str::to_owned),
            }
        })
        .collect()
}

impl Received {
    /// The first header `name` (any case), unfolded and trimmed, as sent
    /// (encoded words left as they are: see `header_decoded`).
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// Every header `name` (any case), in order, unfolded and trimmed.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let (headers, _) = split_part(&self.raw);
        headers
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// `header`, with RFC 2047 encoded words (`=?UTF-8?B?...?=`) decoded.
    pub fn header_decoded(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| decode_encoded_words(&v))
    }

    /// The Message-ID header's id, without the angle brackets.
    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID").map(|v| {
            let v = v.trim();
            v.strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(v)
                .to_owned()
        })
    }

    /// The first text/plain part that is not an attachment (the whole body
    /// when the message is not multipart), transfer encoding and charset
    /// decoded, line ends as `\n`; empty when there is none.
    pub fn text_body(&self) -> String {
        find_text(&self.raw, "text/plain").unwrap_or_default()
    }

    /// As `text_body`, for the text/html part.
    pub fn html_body(&self) -> String {
        find_text(&self.raw, "text/html").unwrap_or_default()
    }
}

// ---- a small MIME reader: enough for the messages the hub sends ----

/// Headers (unfolded, trimmed) and body of a message or MIME part.
fn split_part(raw: &str) -> (Vec<(String, String)>, &str) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = after;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // Unfolding removes the line break, not the white space.
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    for (_, value) in &mut headers {
        *value = value.trim().to_owned();
    }
    (headers, rest)
}

fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `type/subtype` (lowercase) and parameters (names lowercase, quotes off).
fn parse_content_type(value: Option<&str>) -> (String, HashMap<String, String>) {
    let value = value.unwrap_or("text/plain; charset=us-ascii");
    let mut pieces = value.split(';');
    let mime = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    (mime, params)
}

fn find_text(raw: &str, wanted: &str) -> Option<String> {
    let (headers, body) = split_part(raw);
    let (mime, params) = parse_content_type(get(&headers, "Content-Type"));
    if mime.starts_with("multipart/") {
        let boundary = params.get("boundary")?;
        return multipart_parts(body, boundary)
            .into_iter()
            .find_map(|part| find_text(part, wanted));
    }
    let attachment = get(&headers, "Content-Disposition")
        .is_some_and(|d| d.trim().to_ascii_lowercase().starts_with("attachment"));
    if mime != wanted || attachment {
        return None;
    }
    let encoding = get(&headers, "Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body.as_bytes(), false),
        "base64" => decode_base64(body).unwrap_or_else(|| body.as_bytes().to_vec()),
        _ => body.as_bytes().to_vec(),
    };
    let charset = params.get("charset").map(|c| c.to_ascii_lowercase());
    Some(decode_charset(&bytes, charset.as_deref()).replace("\r\n", "\n"))
}

/// The bodies of a multipart body's parts (preamble and epilogue left out).
fn multipart_parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == open || bare == close {
            if let Some(s) = start {
                // The line end before a delimiter belongs to the delimiter.
                let part = &body[s..offset];
                let part = part
                    .strip_suffix("\r\n")
                    .or_else(|| part.strip_suffix('\n'))
                    .unwrap_or(part);
                parts.push(part);
            }
            if bare == close {
                return parts;
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    // No closing delimiter: take what follows the last one.
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable (RFC 2045), or its header variant (RFC 2047 "Q", where
/// `_` is a space).
fn decode_quoted_printable(input: &[u8], header: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'=' => {
                if input[i + 1..].starts_with(b"\r\n") {
                    i += 3; // soft line break
                } else if input[i + 1..].starts_with(b"\n") {
                    i += 2;
                } else if let (Some(h), Some(l)) = (
                    input.get(i + 1).copied().and_then(hex),
                    input.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                } else {
                    out.push(b'=');
                    i += 1;
                }
            }
            b'_' if header => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::{
        Engine as _,
        alphabet::STANDARD,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    let lenient = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    lenient.decode(compact).ok()
}

fn decode_charset(bytes: &[u8], charset: Option<&str>) -> String {
    match charset {
        Some("iso-8859-1" | "latin1" | "latin-1" | "iso8859-1") => {
            bytes.iter().map(|&b| b as char).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// RFC 2047: `=?charset?B|Q?text?=` words decoded; the white space between
/// two adjacent encoded words dropped.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut pending_space = String::new();
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((decoded, used)) = decode_one_word(rest) {
            if !last_was_word {
                out.push_str(&pending_space);
            }
            pending_space.clear();
            out.push_str(&decoded);
            rest = &rest[used..];
            last_was_word = true;
            continue;
        }
        let c = rest.chars().next().unwrap();
        if c.is_whitespace() {
            pending_space.push(c);
        } else {
            out.push_str(&pending_space);
            pending_space.clear();
            out.push(c);
            last_was_word = false;
        }
        rest = &rest[c.len_utf8()..];
    }
    out.push_str(&pending_space);
    out
}

/// One encoded word at the start of `s`: its text and its length in `s`.
fn decode_one_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, after) = inner.split_once('?')?;
    let (encoding, after) = after.split_once('?')?;
    let end = after.find("?=")?;
    let text = &after[..end];
    if text.contains(char::is_whitespace) {
        return None;
    }
    let used = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    let bytes = match encoding {
        "B" | "b" => decode_base64(text)?,
        "Q" | "q" => decode_quoted_printable(text.as_bytes(), true),
        _ => return None,
    };
    // `charset*language` (RFC 2231) is allowed here.
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    Some((decode_charset(&bytes, Some(&charset)), used))
}
