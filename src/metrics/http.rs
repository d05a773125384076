//! The HTTP of a scrape: what a request head asks for (parsed with
//! `httparse`) and the responses, each ending the connection.
//!
//! Only `GET /metrics` (and `HEAD /metrics`, the same without the body)
//! is answered with the counters; a query string is ignored. `GET
//! /healthz` (or `HEAD`) answers `200 ok` while the server serves and
//! `503 stopping` from the moment a stop is asked, for a load
//! balancer's health check. Any other
//! path is 404, another method on `/metrics` 405, a head that
//! `httparse` rejects 400, and a head over [`HEAD_MAX`] bytes or with
//! more than [`HEADERS_MAX`] fields 431.

use std::fmt::Write as _;

/// The longest request head a scrape may send.
pub(crate) const HEAD_MAX: usize = 8 * 1024;
/// Header fields a request head may have.
pub(crate) const HEADERS_MAX: usize = 32;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request head asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// The head is not complete yet, and what came so far fits.
    Partial,
    /// The counters; `body` is false for `HEAD`.
    Metrics { body: bool },
    /// Whether the server is serving; `body` is false for `HEAD`.
    Health { body: bool },
    /// Nothing but this status.
    Refused(Status),
}

/// The statuses other than 200 a scrape can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// 503: the server is stopping (`/healthz`).
    Stopping,
    /// 400: not an HTTP/1.x request head.
    BadRequest,
    /// 404: a path other than `/metrics`.
    NotFound,
    /// 405: a method other than GET or HEAD.
    MethodNotAllowed,
    /// 431: a head over [`HEAD_MAX`] bytes or [`HEADERS_MAX`] fields.
    HeadTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Stopping => "503 Service Unavailable",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// Reads what the bytes received so far (`head`, at most [`HEAD_MAX`])
/// ask for.
pub(crate) fn parse(head: &[u8]) -> Request {
    let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            route(request.method.unwrap_or(""), request.path.unwrap_or(""))
        }
        Ok(httparse::Status::Partial) if head.len() >= HEAD_MAX => {
            Request::Refused(Status::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Request::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            Request::Refused(Status::HeadTooLarge)
        }
        Err(_) => Request::Refused(Status::BadRequest),
    }
}

fn route(method: &str, target: &str) -> Request {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    match (path, method) {
        ("/metrics", "GET") => Request::Metrics { body: true },
        ("/metrics", "HEAD") => Request::Metrics { body: false },
        ("/metrics", _) => Request::Refused(Status::MethodNotAllowed),
        ("/healthz", "GET") => Request::Health { body: true },
        ("/healthz", "HEAD") => Request::Health { body: false },
        ("/healthz", _) => Request::Refused(Status::MethodNotAllowed),
        _ => Request::Refused(Status::NotFound),
    }
}

/// The whole response to a refused request: the status, a one-line
/// body naming it, and `Allow` on a 405.
pub(crate) fn refusal(status: Status) -> Vec<u8> {
    let body = format!("{}\n", status.line());
    let allow = match status {
        Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    response(status.line(), "text/plain; charset=utf-8", allow, &body, true)
}

/// The whole answer of `/healthz`: `200 ok` while `serving`, else
/// `503 stopping` (without the body for `HEAD`).
pub(crate) fn health(serving: bool, body: bool) -> Vec<u8> {
    let plain = "text/plain; charset=utf-8";
    match serving {
        true => response("200 OK", plain, "", "ok\n", body),
        false => {
            let status = Status::Stopping.line();
            response(status, plain, "", "stopping\n", body)
        }
    }
}

/// The whole 200 response carrying `text` (without it for `HEAD`).
pub(crate) fn metrics(text: &str, body: bool) -> Vec<u8> {
    response("200 OK", TEXT_FORMAT, "", text, body)
}

fn response(
    status: &str,
    content_type: &str,
    extra: &str,
    body: &str,
    with_body: bool,
) -> Vec<u8> {
    let mut out = String::with_capacity(160 + body.len());
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        out.push_str(body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_path_then_method() {
        let get = parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(get, Request::Metrics { body: true });
        let old = parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!(old, Request::Metrics { body: true });
        let head = parse(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(head, Request::Metrics { body: false });
        let post = parse(b"POST /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(post, Request::Refused(Status::MethodNotAllowed));
        let other = parse(b"POST /other HTTP/1.1\r\n\r\n");
        assert_eq!(other, Request::Refused(Status::NotFound));
        let health = parse(b"GET /healthz HTTP/1.0\r\n\r\n");
        assert_eq!(health, Request::Health { body: true });
        let probe = parse(b"HEAD /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(probe, Request::Health { body: false });
        let put = parse(b"PUT /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(put, Request::Refused(Status::MethodNotAllowed));
    }

    #[test]
    fn incomplete_malformed_and_oversized_heads_are_told_apart() {
        assert_eq!(parse(b""), Request::Partial);
        assert_eq!(parse(b"GET /metr"), Request::Partial);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\n"), Request::Partial);
        for bad in [&b"hello\r\n\r\n"[..], b"GET /metrics HTTP/2.0\r\n\r\n"] {
            assert_eq!(parse(bad), Request::Refused(Status::BadRequest));
        }
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(HEAD_MAX, b'a');
        assert_eq!(parse(&long), Request::Refused(Status::HeadTooLarge));
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADERS_MAX {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Request::Refused(Status::HeadTooLarge));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let ok = String::from_utf8(metrics("a 1\n", true)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\na 1\n"), "{ok}");
        let head = String::from_utf8(metrics("a 1\n", false)).unwrap();
        assert!(head.contains("Content-Length: 4\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let ok = String::from_utf8(health(true, true)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        let down = String::from_utf8(health(false, true)).unwrap();
        assert!(down.starts_with("HTTP/1.1 503 "), "{down}");
        assert!(down.ends_with("\r\n\r\nstopping\n"), "{down}");
        let refused = refusal(Status::MethodNotAllowed);
        let refused = String::from_utf8(refused).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 "), "{refused}");
        assert!(refused.contains("Allow: GET, HEAD\r\n"), "{refused}");
    }
}
