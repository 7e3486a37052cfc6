//! When OTLP says to send again, and how long to wait first.
//!
//! The specification (OTLP 1.x, "Failures"): gRPC `CANCELLED`,
//! `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE` and
//! `DATA_LOSS` are retryable; `RESOURCE_EXHAUSTED` only when the server says
//! recovery is possible by sending `RetryInfo`. HTTP 429, 502, 503 and 504 are
//! retryable. A server's `RetryInfo.retry_delay` (gRPC) or `Retry-After`
//! (HTTP, seconds or a date) sets the least wait before the next attempt.

use std::time::{Duration, Instant, SystemTime};

use tonic::Code;

/// Whether a gRPC status may succeed if sent again.
pub fn grpc_retryable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Cancelled | Code::DeadlineExceeded | Code::Aborted | Code::OutOfRange | Code::Unavailable | Code::DataLoss => true,
        Code::ResourceExhausted => grpc_retry_delay(status).is_some(),
        _ => false,
    }
}

/// The wait a gRPC status asks for in its `RetryInfo` detail.
pub fn grpc_retry_delay(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// Whether an HTTP status may succeed if sent again.
pub fn http_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The wait a `Retry-After` header value asks for: delay-seconds, or an
/// HTTP-date (a date in the past asks for none).
pub fn http_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Exponential back-off: the first wait, doubled after each attempt up to
/// `max`, never shorter than what the server asked, and no attempt that
/// would start after the deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    wait: Duration,
    max: Duration,
    until: Option<Instant>,
    /// The longest wait honoured, however long the server asks for: a load
    /// generator keeps probing rather than sleep for a minute.
    cap: Duration,
    pub attempts: u32,
}

impl Backoff {
    /// Back-off from `initial` to `max`, giving up `within` from now (never
    /// when `None`).
    pub fn new(initial: Duration, max: Duration, within: Option<Duration>) -> Self {
        Backoff { wait: initial, max, until: within.map(|w| Instant::now() + w), cap: Duration::MAX, attempts: 0 }
    }

    /// Waits of at most `cap`, whatever the server asks.
    pub fn capped(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The wait before the next attempt, or `None` when the time is up.
    pub fn next(&mut self, asked: Option<Duration>) -> Option<Duration> {
        self.attempts += 1;
        let wait = asked.unwrap_or(self.wait).max(self.wait).min(self.cap);
        if self.until.is_some_and(|until| Instant::now() + wait > until) {
            return None;
        }
        self.wait = (self.wait * 2).min(self.max);
        Some(wait)
    }

    /// Sleeps before the next attempt; false when the time is up.
    pub async fn again(&mut self, asked: Option<Duration>) -> bool {
        match self.next(asked) {
            Some(wait) => {
                tokio::time::sleep(wait).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_decides_what_is_retried() {
        for code in [Code::Cancelled, Code::DeadlineExceeded, Code::Aborted, Code::OutOfRange, Code::Unavailable, Code::DataLoss]
        {
            assert!(grpc_retryable(&tonic::Status::new(code, "")), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::Unauthenticated, Code::PermissionDenied, Code::Internal, Code::Unimplemented] {
            assert!(!grpc_retryable(&tonic::Status::new(code, "")), "{code:?}");
        }
        // Resource exhausted: only with RetryInfo.
        assert!(!grpc_retryable(&tonic::Status::resource_exhausted("full")));
        for status in [429, 502, 503, 504] {
            assert!(http_retryable(status));
        }
        for status in [400, 401, 404, 413, 500] {
            assert!(!http_retryable(status));
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(http_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(http_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let wait = http_retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        assert_eq!(http_retry_after("soon"), None);
    }

    #[test]
    fn back_off_doubles_honours_the_server_and_stops_at_the_deadline() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40), None);
        let waits: Vec<_> = (0..4).map(|_| b.next(None).unwrap().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 40]);
        assert_eq!(b.next(Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        let mut capped =
            Backoff::new(Duration::from_millis(10), Duration::from_millis(40), None).capped(Duration::from_millis(250));
        assert_eq!(capped.next(Some(Duration::from_secs(2))), Some(Duration::from_millis(250)));
        let mut short = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), Some(Duration::from_millis(10)));
        assert_eq!(short.next(None), None);
        assert_eq!(short.attempts, 1);
    }
}
