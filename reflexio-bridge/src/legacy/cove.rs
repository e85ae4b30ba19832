//! The application's CoVe settings, `ENABLE_COVE` and `COVE_CONFIDENCE_THRESHOLD`: given to the
//! bridge (flag, environment, configuration file), read from the app's `.env` file (again
//! whenever it changes), or else, when following a deployment, the app's defaults. A value
//! given to the bridge wins over the file. They are recorded as a CoVe configuration at start
//! and whenever they change.

use super::dotenv;
use reflexio_otel::{CoveConfig, Fraction, Recorder};
use std::fmt;
use std::path::{Path, PathBuf};

/// The application's setting turning CoVe on, as its `.env` file names it.
pub(crate) const ENABLED_KEY: &str = "ENABLE_COVE";
/// The application's CoVe confidence threshold, as its `.env` file names it.
pub(crate) const THRESHOLD_KEY: &str = "COVE_CONFIDENCE_THRESHOLD";
/// The application's defaults: CoVe off, threshold 0.70.
pub(crate) const APP_DEFAULTS: (bool, f64) = (false, 0.7);

/// Where a CoVe value came from, as the log says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A setting of the bridge's: its flag, environment variable or configuration key.
    Setting(String),
    /// A key of the app's `.env` file.
    EnvFile(PathBuf, &'static str),
    /// The app's default.
    AppDefault,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Setting(s) => f.write_str(s),
            Origin::EnvFile(path, key) => write!(f, "{key} in {}", path.display()),
            Origin::AppDefault => f.write_str("the application's default"),
        }
    }
}

/// The CoVe settings as configured: values given to the bridge, the app's `.env` file, and
/// whether the app's defaults apply (when following a deployment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoveSettings {
    /// `--cove-enabled`, and where it was given.
    pub enabled: Option<(bool, String)>,
    /// `--cove-threshold`, and where it was given.
    pub threshold: Option<(Fraction, String)>,
    /// `--legacy-env-file`.
    pub env_file: Option<PathBuf>,
    /// Values given nowhere are the app's defaults (the bridge follows a deployment);
    /// otherwise nothing is recorded unless something is given.
    pub app_defaults: bool,
}

/// What the app's `.env` file sets of CoVe: each key, if it is set there.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FileCove {
    /// `ENABLE_COVE`.
    pub enabled: Option<bool>,
    /// `COVE_CONFIDENCE_THRESHOLD`.
    pub threshold: Option<Fraction>,
}

/// Why the app's `.env` file gives no usable CoVe values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        message: String,
    },
    /// A key holds a value the application (or, for a threshold outside `[0, 1]`, the
    /// bridge) cannot use.
    #[error("{key}={value:?} in {}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Its value, as read.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The configuration in force, and where each of its values came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Cove {
    /// The configuration.
    pub config: CoveConfig,
    /// Where `enabled` came from.
    pub enabled_from: Origin,
    /// Where `threshold` came from.
    pub threshold_from: Origin,
}

impl CoveSettings {
    /// The keys of the `.env` file in use: those given nowhere else.
    fn file_keys(&self) -> (bool, bool) {
        match &self.env_file {
            Some(_) => (self.enabled.is_none(), self.threshold.is_none()),
            None => (false, false),
        }
    }

    /// Reads the keys of the app's `.env` file that are in use (`None` without a file, or when
    /// both values are given elsewhere).
    pub fn read_env_file(&self) -> Result<Option<FileCove>, EnvFileError> {
        let (enabled, threshold) = self.file_keys();
        match &self.env_file {
            Some(path) if enabled || threshold => read_env_file(path, enabled, threshold).map(Some),
            _ => Ok(None),
        }
    }

    /// The configuration in force given what the file says: each value from the bridge's
    /// settings, else the file, else the app's default; `None` if nothing is given and the app's
    /// defaults do not apply.
    pub fn resolve(&self, file: Option<&FileCove>) -> Option<Cove> {
        let path = self.env_file.clone().unwrap_or_default();
        let enabled = match (&self.enabled, file.and_then(|f| f.enabled)) {
            (Some((v, from)), _) => Some((*v, Origin::Setting(from.clone()))),
            (None, Some(v)) => Some((v, Origin::EnvFile(path.clone(), ENABLED_KEY))),
            (None, None) => None,
        };
        let threshold = match (&self.threshold, file.and_then(|f| f.threshold)) {
            (Some((v, from)), _) => Some((*v, Origin::Setting(from.clone()))),
            (None, Some(v)) => Some((v, Origin::EnvFile(path, THRESHOLD_KEY))),
            (None, None) => None,
        };
        if enabled.is_none() && threshold.is_none() && !self.app_defaults {
            return None;
        }
        let (enabled, enabled_from) = enabled.unwrap_or((APP_DEFAULTS.0, Origin::AppDefault));
        let (threshold, threshold_from) =
            threshold.unwrap_or((app_threshold(), Origin::AppDefault));
        Some(Cove {
            config: CoveConfig { enabled, threshold },
            enabled_from,
            threshold_from,
        })
    }
}

fn app_threshold() -> Fraction {
    Fraction::new(APP_DEFAULTS.1).unwrap_or_else(|_| unreachable!("a valid fraction"))
}

/// Reads `ENABLE_COVE` (if `enabled`) and `COVE_CONFIDENCE_THRESHOLD` (if `threshold`) from the
/// `.env` file at `path`, as the application's pydantic-settings would.
pub(crate) fn read_env_file(
    path: &Path,
    enabled: bool,
    threshold: bool,
) -> Result<FileCove, EnvFileError> {
    let bytes = std::fs::read(path).map_err(|e| EnvFileError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| EnvFileError::Read {
        path: path.to_owned(),
        message: "it is not UTF-8 text".into(),
    })?;
    let values = dotenv::parse(&text);
    let value = |key: &'static str| values.get(&key.to_lowercase()).map(|v| (key, v));
    let invalid = |(key, value): (&'static str, &String), problem| EnvFileError::Invalid {
        path: path.to_owned(),
        key,
        value: value.clone(),
        problem,
    };
    let mut cove = FileCove::default();
    if enabled && let Some(v) = value(ENABLED_KEY) {
        cove.enabled = Some(
            dotenv::pydantic_bool(v.1)
                .ok_or_else(|| invalid(v, "not a boolean (true/false, 1/0, yes/no, on/off)"))?,
        );
    }
    if threshold && let Some(v) = value(THRESHOLD_KEY) {
        let number = dotenv::pydantic_float(v.1).ok_or_else(|| invalid(v, "not a number"))?;
        cove.threshold = Some(
            Fraction::new(number)
                .map_err(|_| invalid(v, "outside [0, 1], which the bridge cannot export"))?,
        );
    }
    Ok(cove)
}

/// Keeps the recorded CoVe configuration in step with the settings and the app's `.env` file.
#[derive(Debug)]
pub struct CoveWatch {
    settings: CoveSettings,
    /// The configuration recorded last.
    last: Option<Cove>,
    /// The file's last good values.
    file: Option<FileCove>,
    /// The file's problem logged last, so that a persisting one is logged once.
    failing: Option<EnvFileError>,
}

impl CoveWatch {
    /// Records the configuration `settings` and the file's values (read at start) make, and
    /// logs where each value came from.
    pub fn start(settings: CoveSettings, file: Option<FileCove>, recorder: &Recorder) -> Self {
        let mut watch = Self {
            settings,
            last: None,
            file,
            failing: None,
        };
        watch.apply(recorder, "CoVe configuration");
        if watch.last.is_none() {
            tracing::info!(
                "CoVe configuration: none given (--cove-enabled, --cove-threshold, \
                 --legacy-env-file); the one applications send is exported"
            );
        }
        watch
    }

    /// Whether there is a file to read again.
    pub fn follows_a_file(&self) -> bool {
        self.settings.file_keys() != (false, false)
    }

    /// Reads the `.env` file again; records the configuration if it changed. A file that cannot
    /// be read or holds an invalid value is logged (once) and its last good values kept.
    pub fn poll(&mut self, recorder: &Recorder) {
        if !self.follows_a_file() {
            return;
        }
        match self.settings.read_env_file() {
            Ok(file) => {
                if self.failing.take().is_some() {
                    tracing::info!(
                        file = %self.settings.env_file.as_deref().unwrap_or(Path::new("")).display(),
                        "the application's .env file is usable again"
                    );
                }
                self.file = file;
                self.apply(recorder, "CoVe configuration changed");
            }
            Err(e) => {
                if self.failing.as_ref() != Some(&e) {
                    tracing::warn!(
                        error = %e,
                        "the application's .env file gives no usable CoVe settings; keeping \
                         the last good ones"
                    );
                    self.failing = Some(e);
                }
            }
        }
    }

    /// Records and logs the configuration in force if it is not the one recorded last.
    fn apply(&mut self, recorder: &Recorder, what: &str) {
        let Some(cove) = self.settings.resolve(self.file.as_ref()) else {
            return;
        };
        if self.last.as_ref().map(|c| c.config) == Some(cove.config) {
            return;
        }
        tracing::info!(
            enabled = cove.config.enabled,
            enabled_from = %cove.enabled_from,
            threshold = cove.config.threshold.get(),
            threshold_from = %cove.threshold_from,
            "{what}"
        );
        recorder.record_cove_config(cove.config);
        self.last = Some(cove);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fraction(v: f64) -> Fraction {
        Fraction::new(v).expect("valid")
    }

    #[test]
    fn a_value_given_to_the_bridge_wins_over_the_file_and_the_file_over_the_defaults() {
        let file = FileCove {
            enabled: Some(true),
            threshold: Some(fraction(0.85)),
        };
        let mut settings = CoveSettings {
            env_file: Some("/srv/app/.env".into()),
            app_defaults: true,
            ..CoveSettings::default()
        };
        let cove = settings.resolve(Some(&file)).expect("configured");
        assert_eq!(
            (cove.config.enabled, cove.config.threshold),
            (true, fraction(0.85))
        );
        assert_eq!(
            cove.enabled_from.to_string(),
            "ENABLE_COVE in /srv/app/.env"
        );
        settings.threshold = Some((fraction(0.5), "--cove-threshold".into()));
        let cove = settings.resolve(Some(&file)).expect("configured");
        assert_eq!(cove.config.threshold, fraction(0.5));
        assert_eq!(cove.threshold_from.to_string(), "--cove-threshold");
        assert_eq!(
            settings.file_keys(),
            (true, false),
            "only ENABLE_COVE is read"
        );
        // The file sets nothing: the app's defaults.
        let cove = settings
            .resolve(Some(&FileCove::default()))
            .expect("configured");
        assert!(!cove.config.enabled);
        assert_eq!(cove.enabled_from, Origin::AppDefault);
        assert_eq!(cove.enabled_from.to_string(), "the application's default");
        // Not following a deployment: nothing unless given, and a value given alone is paired
        // with the app's default of the other.
        let outside = CoveSettings::default();
        assert_eq!(outside.resolve(None), None);
        let only_enabled = CoveSettings {
            enabled: Some((true, "REFLEXIO_BRIDGE_COVE_ENABLED".into())),
            ..CoveSettings::default()
        };
        let cove = only_enabled.resolve(None).expect("configured");
        assert_eq!(
            (cove.config.enabled, cove.config.threshold),
            (true, fraction(0.7))
        );
        assert_eq!(cove.threshold_from, Origin::AppDefault);
    }

    #[test]
    fn the_env_file_is_read_as_the_application_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".env");
        let read = |text: &str| {
            std::fs::write(&path, text).expect("write");
            read_env_file(&path, true, true)
        };
        assert_eq!(
            read(
                "# CoVe\nexport enable_cove=Yes # on since May\nCOVE_CONFIDENCE_THRESHOLD='0.85'\n"
            ),
            Ok(FileCove {
                enabled: Some(true),
                threshold: Some(fraction(0.85)),
            })
        );
        assert_eq!(read("OTHER=1\n"), Ok(FileCove::default()));
        let err = read("ENABLE_COVE=maybe\n").expect_err("invalid");
        assert!(
            err.to_string().starts_with("ENABLE_COVE=\"maybe\" in ")
                && err
                    .to_string()
                    .ends_with(": not a boolean (true/false, 1/0, yes/no, on/off)"),
            "{err}"
        );
        let err = read("COVE_CONFIDENCE_THRESHOLD=1.5\n").expect_err("invalid");
        assert!(err.to_string().contains("outside [0, 1]"), "{err}");
        assert!(
            read("COVE_CONFIDENCE_THRESHOLD=\n").is_err(),
            "empty is invalid"
        );
        // A key not in use is not looked at.
        std::fs::write(&path, "ENABLE_COVE=maybe\nCOVE_CONFIDENCE_THRESHOLD=0.6").expect("write");
        assert_eq!(
            read_env_file(&path, false, true),
            Ok(FileCove {
                enabled: None,
                threshold: Some(fraction(0.6)),
            })
        );
        let missing = read_env_file(&dir.path().join("nope"), true, true).expect_err("missing");
        assert!(matches!(missing, EnvFileError::Read { .. }), "{missing}");
    }

    /// The Python of `target/venv` (`scripts/python-env`), where pydantic-settings is.
    fn venv_python() -> PathBuf {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/python-env (scripts/test does), which installs \
             pydantic-settings there",
            python.display()
        );
        python
    }

    /// The application's reading of each file: its settings class, as pydantic-settings reads
    /// it from the `.env` file alone (an empty environment).
    const APP_SETTINGS: &str = r#"
import sys
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")
    ENABLE_COVE: bool = False
    COVE_CONFIDENCE_THRESHOLD: float = 0.70

for path in sys.argv[1:]:
    try:
        s = Settings(_env_file=path)
        print("ok", s.ENABLE_COVE, repr(s.COVE_CONFIDENCE_THRESHOLD))
    except ValidationError as e:
        print("invalid", ",".join(sorted(str(err["loc"][0]) for err in e.errors())))
"#;

    #[test]
    fn the_env_file_reads_as_the_applications_pydantic_settings_reads_it() {
        let files: &[&str] = &[
            "ENABLE_COVE=true\nCOVE_CONFIDENCE_THRESHOLD=0.85\n",
            "enable_cove=Yes\ncove_confidence_threshold=.5",
            "export ENABLE_COVE=on # since May\nexport COVE_CONFIDENCE_THRESHOLD = 7e-1 ",
            "ENABLE_COVE='1'\nCOVE_CONFIDENCE_THRESHOLD=\"0.9\" # strict",
            "ENABLE_COVE=\"true\"\n# COVE_CONFIDENCE_THRESHOLD=0.1\n",
            "ENABLE_COVE=off\nENABLE_COVE=y\n",
            "ENABLE_COVE=0\nenable_cove=t\nENABLE_COVE=no\n",
            "ENABLE_COVE\nCOVE_CONFIDENCE_THRESHOLD\n",
            "ENABLE_COVE=\n",
            "COVE_CONFIDENCE_THRESHOLD=\n",
            "ENABLE_COVE=maybe\n",
            "ENABLE_COVE= true\n",
            "ENABLE_COVE=' true'\n",
            "ENABLE_COVE=1.0\n",
            "ENABLE_COVE=true#x\n",
            "COVE_CONFIDENCE_THRESHOLD=0,5\n",
            "COVE_CONFIDENCE_THRESHOLD=' 0.5 '\n",
            "COVE_CONFIDENCE_THRESHOLD=0.5_0\n",
            "COVE_CONFIDENCE_THRESHOLD=1__0\n",
            "COVE_CONFIDENCE_THRESHOLD=1\n",
            "COVE_CONFIDENCE_THRESHOLD=1.5\n",
            "ON=true\nENABLE_COVE=${ON}\nCOVE_CONFIDENCE_THRESHOLD=${LOW:-0.6}\n",
            "ENABLE_COVE=\"yes\nCOVE_CONFIDENCE_THRESHOLD=0.2\n",
            "ENABLE_COVE=\"tr\\\"ue\"\n",
            "'ENABLE_COVE'='false'\n",
            "\u{feff}ENABLE_COVE=true\n",
            "ENABLE_COVE=true\r\nCOVE_CONFIDENCE_THRESHOLD=0.3\r\n",
            "  \n\n# comment only\n",
            "this line is not a binding\nENABLE_COVE=on\n",
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let path = dir.path().join(format!("{i}.env"));
                std::fs::write(&path, text).expect("write");
                path
            })
            .collect();
        let out = std::process::Command::new(venv_python())
            .env_clear()
            .arg("-c")
            .arg(APP_SETTINGS)
            .args(&paths)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let app = String::from_utf8(out.stdout).expect("utf-8");
        let app: Vec<&str> = app.lines().collect();
        assert_eq!(app.len(), files.len());
        for ((text, path), app) in files.iter().zip(&paths).zip(app) {
            let bridge = read_env_file(path, true, true);
            let fields: Vec<&str> = app.split(' ').collect();
            match (fields.as_slice(), &bridge) {
                (["ok", enabled, threshold], Ok(cove)) => {
                    let threshold: f64 = threshold.parse().expect("a float");
                    assert_eq!(
                        cove.enabled.unwrap_or(APP_DEFAULTS.0).to_string(),
                        enabled.to_lowercase(),
                        "{text:?}"
                    );
                    let ours = cove.threshold.map_or(APP_DEFAULTS.1, Fraction::get);
                    assert!(
                        (ours - threshold).abs() < 1e-9,
                        "{text:?}: {ours} vs {threshold}"
                    );
                }
                // Valid for the app, but not a fraction the bridge can export.
                (["ok", _, threshold], Err(EnvFileError::Invalid { key, .. }))
                    if *key == THRESHOLD_KEY
                        && !(0.0..=1.0).contains(&threshold.parse::<f64>().expect("a float")) => {}
                (["invalid", keys], Err(EnvFileError::Invalid { key, .. })) => {
                    assert!(
                        keys.split(',').any(|k| k == *key),
                        "{text:?}: {keys} vs {key}"
                    );
                }
                _ => panic!("{text:?}: the application reads {app:?}, the bridge {bridge:?}"),
            }
        }
    }
}
