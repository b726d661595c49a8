//! A minimal blocking HTTP/1.1 client for readiness checks and for holding
//! keep-alive connections open; load itself comes from wrk and h2load.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One keep-alive connection to 127.0.0.1.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

/// Status and body size of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body_len: usize,
}

impl Connection {
    pub fn open(port: u16) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("failed to connect to 127.0.0.1:{port}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Connection { reader: BufReader::new(stream) })
    }

    /// Sends a GET for `path` and reads the whole response, which must
    /// carry a Content-Length.
    pub fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench.local\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;

        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("invalid HTTP status line {status_line:?}"))?;

        let mut content_length = None;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                anyhow::bail!("connection closed inside the response headers");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = Some(value.trim().parse::<usize>()?);
                }
            }
        }
        let body_len = content_length.context("response has no Content-Length")?;
        let mut body = vec![0; body_len];
        self.reader.read_exact(&mut body)?;
        Ok(Reply { status, body_len })
    }
}

/// Connects, reads until the server closes, and returns the body of a
/// `Connection: close` response.
pub fn read_once(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("failed to connect to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (_, body) = text.split_once("\r\n\r\n").context("response without a header end")?;
    Ok(body.to_string())
}
