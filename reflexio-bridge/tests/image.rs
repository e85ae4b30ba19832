//! The container image's command line, run against the binary without a container engine: the
//! Dockerfile's final stage (its `ENV`, `VOLUME`, `ENTRYPOINT` and `CMD`) is read here, its
//! absolute paths moved under a temporary root, and the binary run with exactly those arguments
//! and variables. So does the Compose file's service, which keeps the image's command.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the image runs: its variables, volumes, entrypoint and command.
#[derive(Debug, Default)]
struct Image {
    env: BTreeMap<String, String>,
    volumes: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

/// The instructions of the Dockerfile's final stage, continuation lines joined.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current += part;
                current += " ";
            }
            None => {
                current += trimmed;
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let instructions: Vec<(String, String)> = joined
        .into_iter()
        .filter_map(|l| {
            let (word, rest) = l.split_once(char::is_whitespace)?;
            Some((word.to_ascii_uppercase(), rest.trim().to_owned()))
        })
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|(w, _)| w == "FROM")
        .expect("a FROM");
    instructions[last_from..].to_vec()
}

fn image() -> Image {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile");
    let text = std::fs::read_to_string(path).expect("Dockerfile");
    let mut image = Image::default();
    let exec_form = |rest: &str| -> Vec<String> {
        serde_json::from_str(rest)
            .unwrap_or_else(|e| panic!("{rest} is not the exec (JSON) form: {e}"))
    };
    for (word, rest) in final_stage(&text) {
        match word.as_str() {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV key=value");
                    image
                        .env
                        .insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
            }
            "VOLUME" => image
                .volumes
                .extend(rest.split_whitespace().map(str::to_owned)),
            "ENTRYPOINT" => image.entrypoint = exec_form(&rest),
            "CMD" => image.cmd = exec_form(&rest),
            _ => {}
        }
    }
    image
}

/// `value` with an absolute path moved under `root`.
fn rooted(root: &Path, value: &str) -> String {
    match value.strip_prefix('/') {
        Some(rest) => root.join(rest).display().to_string(),
        None => value.to_owned(),
    }
}

/// The image's command line under `root`, with `env` added or replacing the image's variables,
/// as `Command` (without the `reflexio-bridge` of the entrypoint: the binary built here).
fn command(image: &Image, root: &Path, env: &[(&str, &str)]) -> Command {
    assert_eq!(
        image.entrypoint.first().map(String::as_str),
        Some("reflexio-bridge"),
        "{image:?}"
    );
    let mut cmd = Command::new(common::BIN);
    cmd.args(image.entrypoint[1..].iter().map(|a| rooted(root, a)))
        .args(image.cmd.iter().map(|a| rooted(root, a)));
    for (k, _) in std::env::vars()
        .filter(|(k, _)| k.starts_with("REFLEXIO_BRIDGE_") || k.starts_with("OTEL_"))
    {
        cmd.env_remove(k);
    }
    for (k, v) in &image.env {
        cmd.env(k, rooted(root, v));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Makes the image's volumes under `root`.
fn volumes(image: &Image, root: &Path) {
    for v in &image.volumes {
        std::fs::create_dir_all(rooted(root, v)).expect("volume");
    }
}

/// Runs `cmd` as a server until it listens; returns the bridge handle.
fn serve(mut cmd: Command) -> common::Bridge {
    common::Bridge::adopt(&mut cmd)
}

#[test]
fn the_image_starts_as_built_with_a_token_it_creates_once() {
    let image = image();
    let root = tempfile::tempdir().expect("tempdir");
    volumes(&image, root.path());
    assert_eq!(
        image.env.get("REFLEXIO_BRIDGE_LISTEN").map(String::as_str),
        Some("0.0.0.0:8000"),
        "the image serves on every interface: {image:?}"
    );

    // Its settings, exactly as built (on 0.0.0.0, which the check does not bind), are valid.
    let out = command(&image, root.path(), &[])
        .arg("--check-config")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "the image's command line is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_path = PathBuf::from(rooted(
        root.path(),
        &image.env["REFLEXIO_BRIDGE_AUTH_TOKEN_FILE"],
    ));
    assert!(!token_path.exists(), "--check-config creates nothing");

    // Without the token file setting, the same command line is refused: the old image.
    let out = command(&image, root.path(), &[])
        .env_remove("REFLEXIO_BRIDGE_AUTH_TOKEN_FILE")
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));

    // Started as built (only moved to a free loopback port): it creates its token and needs it.
    let bridge = serve(command(
        &image,
        root.path(),
        &[("REFLEXIO_BRIDGE_LISTEN", "127.0.0.1:0")],
    ));
    let token = std::fs::read_to_string(&token_path).expect("the token was created");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 64, "256 bits in hex");
    let mode = std::fs::metadata(&token_path).expect("meta").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_eq!(bridge.get("/metrics", None).0, 401);
    assert_eq!(bridge.get("/metrics", Some(&token)).0, 200);
    let (status, _) = bridge.post(r#"[{"type":"digest"}]"#, "application/json", Some(&token));
    assert_eq!(status, 202);
    assert!(
        PathBuf::from(rooted(root.path(), &image.env["REFLEXIO_BRIDGE_STORE"])).exists(),
        "the store is in the volume"
    );
    assert_eq!(bridge.terminate().code(), Some(0));

    // Restarted: the same token, the same store.
    let bridge = serve(command(
        &image,
        root.path(),
        &[("REFLEXIO_BRIDGE_LISTEN", "127.0.0.1:0")],
    ));
    assert_eq!(
        std::fs::read_to_string(&token_path).expect("token").trim(),
        token
    );
    let metrics = bridge.scrape_with(Some(&token));
    assert_eq!(metrics["reflexio_digests_total"], 1.0);
}

#[test]
fn the_compose_service_keeps_the_image_command_with_its_secret() {
    let image = image();
    let compose_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/monitoring/docker-compose.monitoring.yml");
    let compose = yaml_rust2::YamlLoader::load_from_str(
        &std::fs::read_to_string(compose_path).expect("compose file"),
    )
    .expect("YAML");
    let service = &compose[0]["services"]["reflexio-bridge"];
    assert!(
        service["command"].is_badvalue(),
        "the service overrides the image's command"
    );
    let root = tempfile::tempdir().expect("tempdir");
    volumes(&image, root.path());
    let secret = root.path().join("run/secrets/reflexio_token");
    std::fs::create_dir_all(secret.parent().expect("dir")).expect("mkdir");
    std::fs::write(&secret, "a-secret-token-from-compose-0123456789\n").expect("write");
    let mut env: Vec<(String, String)> = service["environment"]
        .as_hash()
        .expect("environment")
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
        .filter(|(k, _)| !k.starts_with("OTEL_EXPORTER_OTLP"))
        .map(|(k, v)| {
            let v = rooted(root.path(), &v);
            (k, v)
        })
        .collect();
    env.push(("REFLEXIO_BRIDGE_LISTEN".into(), "127.0.0.1:0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bridge = serve(command(&image, root.path(), &env));
    assert_eq!(
        bridge
            .get("/metrics", Some("a-secret-token-from-compose-0123456789"))
            .0,
        200
    );
    assert!(
        !root.path().join("var/lib/reflexio/token").exists(),
        "no token created beside the secret"
    );
}
