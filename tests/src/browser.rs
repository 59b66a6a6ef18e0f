//! What the browser tests need: an SMTP server on loopback that keeps what it is sent,
//! and Debian's Chromium driven over WebDriver by `chromedriver`, both started by the test
//! and stopped when dropped.

use base64::Engine as _;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One message an [`SmtpSink`] took.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    /// The raw message as sent (headers and encoded body).
    pub raw: String,
}

impl Mail {
    /// The `Subject:` header, decoded when it is an RFC 2047 encoded word.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.raw.split_once("\r\n\r\n")?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        let value = unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })?;
        Some(
            value
                .split(' ')
                .map(|word| decode_word(word).unwrap_or_else(|| word.to_owned()))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// The text of the body, decoded from base64 when it is encoded so.
    pub fn text(&self) -> String {
        let Some((head, body)) = self.raw.split_once("\r\n\r\n") else {
            return String::new();
        };
        if head
            .to_ascii_lowercase()
            .contains("content-transfer-encoding: base64")
        {
            let joined: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            body.to_owned()
        }
    }

    /// The first address in the text that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let text = self.text();
        let start = text.find(prefix)?;
        Some(
            text[start..]
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

/// `=?utf-8?b?…?=` or `=?utf-8?q?…?=`.
fn decode_word(word: &str) -> Option<String> {
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let (_charset, encoding, text) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        _ => {
            let mut out = Vec::new();
            let mut bytes = text.bytes();
            while let Some(b) = bytes.next() {
                match b {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex: String = [bytes.next()?, bytes.next()?]
                            .iter()
                            .map(|b| *b as char)
                            .collect();
                        out.push(u8::from_str_radix(&hex, 16).ok()?);
                    }
                    other => out.push(other),
                }
            }
            out
        }
    };
    String::from_utf8(bytes).ok()
}

/// A plain SMTP server on loopback (no TLS, no authentication) that keeps every message.
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let _ = session(stream, kept).await;
                });
            }
        });
        SmtpSink { port, mails, task }
    }

    /// The messages taken so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) for a message to `to` whose subject holds `subject`.
    pub async fn wait_for(&self, to: &str, subject: &str) -> Mail {
        for _ in 0..200 {
            if let Some(mail) = self
                .mails()
                .into_iter()
                .find(|m| m.to.iter().any(|t| t == to) && m.subject().contains(subject))
            {
                return mail;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "no message to {to} about {subject:?}; got: {:#?}",
            self.mails()
                .iter()
                .map(|m| (m.to.clone(), m.subject()))
                .collect::<Vec<_>>()
        );
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    kept: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => write.write_all(b"250 sink\r\n").await?,
            "MAIL" | "RSET" | "NOOP" => write.write_all(b"250 ok\r\n").await?,
            "RCPT" => {
                let address = line
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(address, _)| address.to_owned())
                    .unwrap_or_default();
                to.push(address);
                write.write_all(b"250 ok\r\n").await?;
            }
            "DATA" => {
                write.write_all(b"354 go on\r\n").await?;
                let mut raw = String::new();
                while let Some(line) = lines.next_line().await? {
                    if line == "." {
                        break;
                    }
                    raw.push_str(line.strip_prefix('.').unwrap_or(&line));
                    raw.push_str("\r\n");
                }
                kept.lock().unwrap().push(Mail {
                    to: std::mem::take(&mut to),
                    raw,
                });
                write.write_all(b"250 queued\r\n").await?;
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 not here\r\n").await?,
        }
    }
    Ok(())
}

/// `chromedriver` on a loopback port, driving Debian's Chromium headless.
pub struct Browser {
    driver: std::process::Child,
    pub client: fantoccini::Client,
}

impl Browser {
    /// Starts `chromedriver` (the path in `OUBLI_TEST_CHROMEDRIVER`) and a headless
    /// Chromium whose languages are `lang` (e.g. `en-US`, `fr-FR`). `None` when the
    /// variable is unset: the browser tests are skipped then.
    pub async fn start(lang: &str) -> Option<Browser> {
        let driver_path = std::env::var("OUBLI_TEST_CHROMEDRIVER").ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {driver_path}: {e}"));
        let chromium = std::env::var("OUBLI_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        let profile = tempfile::tempdir().unwrap().keep();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=900,1000",
                    format!("--lang={lang}"), format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": { "intl.accept_languages": lang },
            }),
        );
        let mut last = None;
        for _ in 0..100 {
            // chromedriver is on loopback: plain HTTP, no TLS.
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Some(Browser { driver, client }),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a browser: {last:?}");
    }

    /// Saves a screenshot of the page to `docs/<name>.png` when `OUBLI_SCREENSHOTS` is
    /// set (the README's pictures are taken so).
    pub async fn screenshot(&self, name: &str) {
        if std::env::var("OUBLI_SCREENSHOTS").is_err() {
            return;
        }
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(format!("{name}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
