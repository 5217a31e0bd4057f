//! A stand-in for the presigned S3 URL a CloudFormation custom resource answers to: an HTTP
//! server on 127.0.0.1 and a free port that takes one request, records it and answers 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Caught {
    pub method: String,
    /// The path and query.
    pub target: String,
    /// Header names lowercased, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Caught {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// The server; [`ResponseUrl::url`] is what goes into the request's `ResponseURL`.
pub struct ResponseUrl {
    pub url: String,
    rx: mpsc::Receiver<Caught>,
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Caught> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Caught {
        method,
        target,
        headers,
        body,
    })
}

impl ResponseUrl {
    /// Listens for one request (on a thread that ends after answering it).
    pub fn start() -> ResponseUrl {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept()
                && let Ok(caught) = read_request(&mut stream)
            {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                let _ = tx.send(caught);
            }
        });
        ResponseUrl {
            url: format!(
                "http://127.0.0.1:{port}/cloudformation-custom-resource-response?X-Amz-Signature=test"
            ),
            rx,
        }
    }

    /// The request, once it arrived (at most `timeout`).
    pub fn caught(&self, timeout: Duration) -> Option<Caught> {
        self.rx.recv_timeout(timeout).ok()
    }
}
