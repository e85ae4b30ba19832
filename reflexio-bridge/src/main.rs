//! The `reflexio-bridge` command; the library holds everything (`lib.rs` is the map).

fn main() -> std::process::ExitCode {
    reflexio_bridge::run()
}
