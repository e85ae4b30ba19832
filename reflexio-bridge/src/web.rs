//! The web configuration in force, and its upkeep: a background thread watches the file and the
//! certificate, key and CA files it names (size, modification time, inode, every
//! [`WATCH_EVERY`]) and puts a changed configuration in force without a restart: new
//! certificates for the next handshakes, new users, headers and rate limit for the next
//! requests. A changed file that is not valid, or that turns TLS on or off, is logged and the
//! configuration in force is kept.

use crate::auth::Auth;
use crate::tls::Acceptor;
use crate::web_config::{RateLimit, WebConfig};
use crate::worker::Worker;
use actix_web::http::header::{HeaderName, HeaderValue};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the files are looked at.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A token bucket: `burst` requests at once, then one per `interval`.
#[derive(Debug)]
pub(crate) struct Bucket {
    limit: RateLimit,
    /// Tokens left, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), now)),
        }
    }

    /// Takes a token at `now`; `Err` with the time until the next one if there is none.
    pub(crate) fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = *state;
        let per_second = 1.0 / self.limit.interval.as_secs_f64();
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * per_second)
            .min(f64::from(self.limit.burst));
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            Ok(())
        } else {
            *state = (refilled, now);
            Err(Duration::from_secs_f64((1.0 - refilled) / per_second))
        }
    }
}

/// What the web configuration makes every answer carry, and how many requests pass.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) rate_limit: Option<Bucket>,
}

impl Policy {
    fn of(config: &WebConfig, now: Instant) -> Self {
        Self {
            headers: config.headers.clone(),
            rate_limit: config.rate_limit.map(|l| Bucket::new(l, now)),
        }
    }
}

/// The web configuration in force.
#[derive(Debug)]
pub(crate) struct Web {
    pub(crate) policy: ArcSwap<Policy>,
    pub(crate) acceptor: Option<Acceptor>,
}

impl Web {
    /// The configuration in force at start (`None`: no web configuration file).
    pub(crate) fn new(config: Option<&WebConfig>, acceptor: Option<Acceptor>) -> Self {
        let policy = config.map_or_else(Policy::default, |c| Policy::of(c, Instant::now()));
        Self {
            policy: ArcSwap::from_pointee(policy),
            acceptor,
        }
    }
}

/// What identifies a file's content without reading it.
type Stamp = Option<(u64, std::time::SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?, meta.ino()))
}

/// The stamps of the configuration file and the files it names.
fn stamps(path: &Path, config: &WebConfig) -> Vec<(PathBuf, Stamp)> {
    std::iter::once(path.to_path_buf())
        .chain(config.files())
        .map(|p| {
            let s = stamp(&p);
            (p, s)
        })
        .collect()
}

/// Loads the file again and puts it in force, if it is valid and keeps TLS as it was.
fn reload(path: &Path, web: &Web, auth: &Auth) -> Result<WebConfig, String> {
    let config = WebConfig::load(path)?;
    match (&config.tls, &web.acceptor) {
        (Some(tls), Some(acceptor)) => acceptor.replace(crate::tls::server_config(tls)?),
        (None, None) => {}
        (Some(_), None) => {
            return Err("it turns TLS on: restart the bridge to serve HTTPS".into());
        }
        (None, Some(_)) => {
            return Err("it turns TLS off: restart the bridge to serve plain HTTP".into());
        }
    }
    auth.replace_users(config.users.clone());
    web.policy
        .store(Arc::new(Policy::of(&config, Instant::now())));
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// Starts the thread that puts changes of the web configuration (at `path`, as `config` was
/// read at start) in force, until the returned worker is dropped.
pub(crate) fn watch(
    path: PathBuf,
    config: WebConfig,
    web: Arc<Web>,
    auth: Arc<Auth>,
) -> std::io::Result<Worker> {
    Worker::spawn("web-config", move |stop| {
        let mut seen = stamps(&path, &config);
        let mut config = config;
        loop {
            stop.pause(WATCH_EVERY);
            if stop.requested() {
                return;
            }
            let now = stamps(&path, &config);
            if now == seen {
                continue;
            }
            match reload(&path, &web, &auth) {
                Ok(fresh) => {
                    tracing::info!(path = %path.display(), "web configuration reloaded: certificates, users, headers and rate limit in force");
                    seen = stamps(&path, &fresh);
                    config = fresh;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "the changed web configuration is not used; the one in force is kept");
                    // Not again until the files change once more.
                    seen = now;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_passes_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let bucket = Bucket::new(
            RateLimit {
                interval: Duration::from_millis(100),
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).expect_err("empty");
        assert!(wait > Duration::from_millis(99) && wait <= Duration::from_millis(100));
        assert!(bucket.take(t0 + Duration::from_millis(50)).is_err());
        assert_eq!(bucket.take(t0 + Duration::from_millis(101)), Ok(()));
        assert!(bucket.take(t0 + Duration::from_millis(102)).is_err());
        // A long pause refills the burst, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }
}
